"""The MLflow pyfunc model: the whole inference chain, raw image + text in, probabilities out.

It takes what people send: integer or float pixels; an image as a nested list (H x W, or
C x H x W) or a flat list, or a numpy array; a DataFrame, a dict of columns or a list of records
in process; and the `dataframe_split`, `dataframe_records` and `inputs` payloads of
`mlflow models serve`. The signature declares the image column as MLflow's `Any`: MLflow's
enforcement of a numeric array type would reject integer pixels ("Can not safely convert int64
to float64"), so this module checks each image itself and names the row that is wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

import mmcore
from mmcore.inference import InferenceChain
from tasks.tracking.runs import using_tracking_uri

# Pinned, so `log_model` skips its slow requirement inference (12 s -> under 0.1 s here).
PIP_REQUIREMENTS = ["torch==2.13.0", "numpy", "pandas", "pyarrow", "scikit-learn"]


class ChainModel(mlflow.pyfunc.PythonModel):
    """Input: rows with `image` (raw pixels on the source's scale) and/or `text` columns.
    Output: DataFrame of class probabilities, one column per class name."""

    def load_context(self, context: Any) -> None:
        self.chain = InferenceChain.load(context.artifacts["chain"])

    def predict(self, context: Any, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        try:
            return predict_frame(self.chain, as_frame(model_input))
        except ValueError as exc:  # bad input: the server answers 400 with this message
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


def as_frame(model_input: Any) -> pd.DataFrame:
    """A DataFrame of rows from a DataFrame, a dict of columns or a list of records."""
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, dict):
        columns = {k: [v] if isinstance(v, str) else list(v) for k, v in model_input.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"input columns have different lengths: "
                             f"{ {k: len(v) for k, v in columns.items()} }")
        return pd.DataFrame(columns)
    if isinstance(model_input, list) and all(isinstance(r, dict) for r in model_input):
        return pd.DataFrame.from_records(model_input)
    raise ValueError(f"input must be a DataFrame, a dict of columns or a list of records with "
                     f"'image' and/or 'text'; got {type(model_input).__name__}")


def image_shapes(shape: tuple[int, int, int]) -> list[tuple[int, ...]]:
    """The array shapes one image may be sent in: C x H x W, H x W when grey, or flat."""
    c, h, w = shape
    return [(c, h, w), *([(h, w)] if c == 1 else []), (c * h * w,)]


def image_pixels(cell: Any, row: int, shape: tuple[int, int, int]) -> np.ndarray:
    """One image's raw pixels as a flat float32 array; a clear error naming the row if not."""
    try:
        pixels = np.asarray(cell, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"image row {row}: pixels must be numbers, as a nested or flat list or "
                         f"an array; got {type(cell).__name__}") from None
    allowed = image_shapes(shape)
    if pixels.shape not in allowed:
        wanted = " or ".join("x".join(map(str, s)) for s in allowed)
        raise ValueError(f"image row {row}: expected {wanted} pixel values, got shape "
                         f"{'x'.join(map(str, pixels.shape)) or 'scalar'}")
    if not np.isfinite(pixels).all():
        raise ValueError(f"image row {row}: pixels must be finite (no NaN or infinity)")
    return pixels.reshape(-1)


def text_value(cell: Any) -> str:
    """A row's text; a missing one (None, NaN) is the empty text."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return ""
    return str(cell)


def predict_frame(chain: InferenceChain, frame: pd.DataFrame) -> pd.DataFrame:
    images = texts = None
    if "image" in frame:
        shape = tuple(chain.spec["image_shape"])
        images = [image_pixels(cell, row, shape) for row, cell in enumerate(frame["image"])]
    if "text" in frame:
        texts = [text_value(t) for t in frame["text"]]
    probs = chain.predict_proba(images, texts)
    return pd.DataFrame(probs, columns=chain.spec["class_names"])


def example_input(chain: InferenceChain, images: np.ndarray | None, texts: list[str] | None,
                  ) -> pd.DataFrame:
    """Rows as people send them: an 8x8 digit as an 8x8 array of its raw pixel values."""
    cols: dict[str, Any] = {}
    if "image" in chain.spec["plan"]["test"]:
        c, h, w = chain.spec["image_shape"]
        shape = (h, w) if c == 1 else (c, h, w)
        cols["image"] = [_plain_numbers(np.asarray(row).reshape(shape)) for row in images]
    if "text" in chain.spec["plan"]["test"]:
        cols["text"] = texts
    return pd.DataFrame(cols)


def _plain_numbers(pixels: np.ndarray) -> list:
    """Integer-valued pixels as ints (as a user would type them), others as floats."""
    if np.all(pixels == np.round(pixels)):
        return pixels.astype(np.int64).tolist()
    return pixels.astype(np.float64).tolist()


def signature(chain: InferenceChain, output: pd.DataFrame) -> ModelSignature:
    """Inputs: `image` as Any (checked by `image_pixels`), `text` as string; one double output
    column per class."""
    kinds = {"image": AnyType(), "text": DataType.string}
    inputs = Schema([ColSpec(kinds[m], m) for m in sorted(set(chain.spec["plan"]["test"]))])
    outputs = Schema([ColSpec(DataType.double, str(c)) for c in output.columns])
    return ModelSignature(inputs=inputs, outputs=outputs)


def chain_digest(chain: InferenceChain) -> str:
    """Content digest of the chain: its spec and every weight. The same training on the same
    inputs gives the same digest, so the registry can tell that nothing changed."""
    h = hashlib.sha256(json.dumps(chain.spec, sort_keys=True, default=str).encode())
    for name, tensor in sorted(chain.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def log_chain(chain: InferenceChain, run_id: str, example: pd.DataFrame, tracking_uri: str,
              ) -> str:
    """Log the chain as the run's pyfunc model (not registered: `tasks.tracking.model_registry`
    decides
    that); returns the model's URI."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = chain.save(Path(tmp) / "chain")
        output = predict_frame(chain, example)
        with using_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=ChainModel(),
                artifacts={"chain": str(folder)},
                code_paths=[str(Path(mmcore.__file__).parent)],
                signature=signature(chain, output),
                input_example=example,
                pip_requirements=PIP_REQUIREMENTS,
                tags={"content.digest": chain_digest(chain)},
            )
    return info.model_uri


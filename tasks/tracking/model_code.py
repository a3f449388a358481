"""The registered model's code, logged as an MLflow "model from code": MLflow copies this file into
the model and runs it wherever the model is loaded; `mlflow.models.set_model` below names the
model. The whole inference chain, raw image + text in, probabilities out.

It runs where this project is not installed, so it imports only mlflow, numpy, pandas and the
`mmcore` modules logged beside it (`code/mmcore`: the ones this file reaches), never `tasks` or
`flows` (an import-linter contract). Preprocessing's transforms are not repeated here: the chain
runs the same `mmcore` code (`Modality.from_raw`: pixel scale, standardisation, text encoding)
that the stages ran. Its weights and spec are read from `chain.safetensors` and `chain.json`.

It takes what people send: integer or float pixels; an image as a nested list (H x W, or
C x H x W) or a flat list, or a numpy array; a DataFrame, a dict of columns or a list of records
in process; and the `dataframe_split`, `dataframe_records` and `inputs` payloads of
`mlflow models serve`. The signature declares the image column as MLflow's `Any`: MLflow's
enforcement of a numeric array type would reject integer pixels ("Can not safely convert int64
to float64"), so this module checks each image itself and names the row that is wrong.
"""

from __future__ import annotations

import math
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mmcore.inference import InferenceChain


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
    """Class probabilities for the frame's rows, one column per class name."""
    images = texts = None
    if "image" in frame:
        shape = tuple(chain.spec["image_shape"])
        images = [image_pixels(cell, row, shape) for row, cell in enumerate(frame["image"])]
    if "text" in frame:
        texts = [text_value(t) for t in frame["text"]]
    probs = chain.predict_proba(images, texts)
    return pd.DataFrame(probs, columns=chain.spec["class_names"])


mlflow.models.set_model(ChainModel())

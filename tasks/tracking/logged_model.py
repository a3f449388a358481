"""Logging the inference chain as the run's MLflow model, a "model from code" that unpickles
nothing where it is loaded (docs/decisions.md, "The logged model").

The model is: `model_code.py` (`tasks/tracking/model_code.py`: the code MLflow runs on load, input
handling included), `code/mmcore/` (the library modules that file reaches, and no others), the
chain's `chain.json` + `chain.safetensors` as artifacts, a JSON input example, and a
requirements.txt pinned to the versions installed here, which trained it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import tempfile
from collections.abc import Iterable, Iterator
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

import mmcore
from mmcore.inference import InferenceChain
from tasks.tracking.runs import using_tracking_uri

# What the model's code imports when it loads and predicts, itself or through the mmcore modules
# logged with it (mmcore.config: pydantic, yaml; mmcore.io: pyarrow). tests/test_model_from_code.py
# loads the model in a fresh environment with only these installed.
REQUIREMENTS = ("mlflow", "torch", "safetensors", "numpy", "pandas", "pyarrow", "pydantic",
                "pyyaml")


def pinned_requirements() -> list[str]:
    """`REQUIREMENTS` at the versions installed here, the ones that trained the model. Given, so
    `log_model` skips its slow requirement inference. A local build label (torch's `+cpu`) is
    left out: `torch==2.13.0` accepts the CPU and the CUDA builds of that release alike."""
    return [f"{name}=={version(name).split('+')[0]}" for name in REQUIREMENTS]


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


def signature(chain: InferenceChain) -> ModelSignature:
    """Inputs: `image` as Any (checked by `model_code.image_pixels`), `text` as string; one double
    output column per class."""
    kinds = {"image": AnyType(), "text": DataType.string}
    inputs = Schema([ColSpec(kinds[m], m) for m in sorted(set(chain.spec["plan"]["test"]))])
    outputs = Schema([ColSpec(DataType.double, str(c)) for c in chain.spec["class_names"]])
    return ModelSignature(inputs=inputs, outputs=outputs)


def content_digest(chain: InferenceChain, code: dict[str, str]) -> str:
    """Digest of what the model is: the chain's spec and every weight, and its code (`code`: the
    digest of each module the model's code reaches). The same training of the same code on the
    same inputs gives the same digest, so the registry can tell that nothing changed; an edit to
    the serving code gives another, hence a new version."""
    h = hashlib.sha256(json.dumps(chain.spec, sort_keys=True, default=str).encode())
    for name, tensor in sorted(chain.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(code, sort_keys=True).encode())
    return h.hexdigest()[:16]


def copy_library(modules: Iterable[str], folder: Path) -> Path:
    """The `mmcore` modules among `modules` copied to `folder/mmcore` as source files (no
    bytecode caches), in their packages' layout; returns that folder."""
    root = Path(mmcore.__file__).parent
    for name in modules:
        parts = name.split(".")
        if parts[0] != "mmcore":
            continue
        base = root.joinpath(*parts[1:])
        source = base.with_suffix(".py") if base.with_suffix(".py").is_file() else \
            base / "__init__.py"
        target = folder / "mmcore" / source.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    return folder / "mmcore"


@contextlib.contextmanager
def import_path_kept() -> Iterator[None]:
    """`sys.path` as it was before the block. Loading a model from code (which logging one does
    too, to check its input example) puts the model's `code/` folder, with its partial copy of
    `mmcore`, first on `sys.path` for good; later imports, and Dask workers spawned later, would
    find that copy instead of the project's."""
    path = sys.path[:]
    try:
        yield
    finally:
        sys.path[:] = path


def log_chain(chain: InferenceChain, run_id: str, example: pd.DataFrame, tracking_uri: str,
              model_code: str, code: dict[str, str]) -> str:
    """Log the chain as the run's model (not registered: `tasks.tracking.model_registry` decides
    that); returns the model's URI. `model_code`: the module MLflow runs to load it;
    `code`: that module and the mmcore modules it reaches, with their digests
    (`tasks.engine.fingerprint.module_digests`)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = chain.save(Path(tmp) / "chain")
        library = copy_library(code, Path(tmp) / "code")
        with using_tracking_uri(tracking_uri), import_path_kept(), \
                mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=find_spec(model_code).origin,
                artifacts={"chain": str(folder)},
                code_paths=[str(library)],
                signature=signature(chain),
                input_example=example,
                pip_requirements=pinned_requirements(),
                tags={"content.digest": content_digest(chain, code)},
            )
    return info.model_uri

"""The data sources by name: `data.source` = digits|mnist|imdb|manifest|paired.

Each entry is "module:Class", imported on first use (as the fusion operators' table does), so
this table imports no source, and a source that opens others (pairing) may import it without an
import circle. Adding a source is its file under mmcore/data/ and one line here.
"""

from __future__ import annotations

import importlib

from mmcore.config import DataConfig
from mmcore.data.source import DataError, Source

SOURCES: dict[str, str] = {
    "digits": "mmcore.data.digits:DigitsSource",
    "mnist": "mmcore.data.mnist:MnistSource",
    "imdb": "mmcore.data.imdb:ImdbSource",
    "manifest": "mmcore.data.manifest:ManifestSource",
    "paired": "mmcore.data.pairing:PairedSource",
}
# Sources that need no data.path: the built-in digits, and pairs (each side names its own).
_NO_PATH = {"digits", "paired"}
_GENERATED_TEXT = "mmcore.data.generated_text:GeneratedTextSource"


def _load(entry: str) -> type:
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


def open_source(cfg: DataConfig, seed: int) -> Source:
    """The source `cfg` names, with generated digit texts added when `data.text=generated`
    (the built-in digits and pairs handle `data.text` themselves). Batched data
    (`data.batched`): the first batch, as a sample of the raw rows; preprocessing opens each
    batch itself (`mmcore.stages.batched_preprocessing`)."""
    if cfg.batched:
        from mmcore.data.batches import batch_data_config, list_batches

        cfg = batch_data_config(cfg, list_batches(cfg.path)[0])
    if cfg.source == "paired" and cfg.pair is None:
        raise DataError("data.source=paired needs a data.pair section", field="data.pair")
    if cfg.source not in _NO_PATH and cfg.path is None:
        raise DataError(f"data.source={cfg.source} needs data.path", field="data.path")
    source: Source = _load(SOURCES[cfg.source])(cfg, seed)
    if cfg.text == "generated" and cfg.source not in _NO_PATH:
        source = _load(_GENERATED_TEXT)(source, cfg, seed)
    return source

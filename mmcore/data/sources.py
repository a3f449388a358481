"""Choose a data source from config alone: `data.source` = digits|mnist|imdb|manifest|paired."""

from __future__ import annotations

from mmcore.config import DataConfig
from mmcore.data.source import DataError, Source


def open_source(cfg: DataConfig, seed: int) -> Source:
    """The source `cfg` names, with generated digit texts added when `data.text=generated`."""
    if cfg.source == "digits":
        from mmcore.data.digits import DigitsSource

        return DigitsSource(cfg, seed)
    if cfg.source == "paired":
        from mmcore.data.pairing import PairedSource

        if cfg.pair is None:
            raise DataError("data.source=paired needs a data.pair section", field="data.pair")
        return PairedSource(cfg, seed)
    if cfg.path is None:
        raise DataError(f"data.source={cfg.source} needs data.path", field="data.path")
    if cfg.source == "mnist":
        from mmcore.data.mnist import MnistSource

        source: Source = MnistSource(cfg, seed)
    elif cfg.source == "imdb":
        from mmcore.data.imdb import ImdbSource

        source = ImdbSource(cfg, seed)
    else:
        from mmcore.data.manifest import ManifestSource

        source = ManifestSource(cfg, seed)
    if cfg.text == "generated":
        from mmcore.data.generated_text import GeneratedTextSource

        source = GeneratedTextSource(source, cfg, seed)
    return source

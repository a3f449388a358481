"""Checks that run before any work: stage names and the data (and benchmark) paths a config needs.

They read the config and stat a few paths, nothing more (no Prefect, torch or data import), so
a typo costs a fraction of a second and one line, not a server start and a traceback. What can
only be known by reading the data (a truncated file, a bad row) stays with the stage.
"""

from __future__ import annotations

from pathlib import Path

from flows.errors import UsageError
from mmcore.config import RENAMED, STAGES, PipelineConfig


def check_stages(option: str, names: list[str] | None) -> None:
    """Every name is a pipeline stage; otherwise name the option, the bad name and the stages."""
    unknown = [name for name in names or [] if name not in STAGES]
    if unknown:
        renamed = "".join(f" ('{name}' is now '{RENAMED[name]}')" for name in unknown
                          if name in RENAMED)
        raise UsageError(f"{option}: unknown stage {', '.join(map(repr, unknown))}{renamed}; "
                         f"stages are {', '.join(STAGES)}")


# What `data.path` must be for each source that reads files.
PATH_KIND = {"mnist": "folder", "imdb": "folder", "manifest": "file"}
PATH_WHAT = {
    "mnist": "the folder with the four MNIST IDX files",
    "imdb": "the aclImdb folder or its parent",
    "manifest": "the CSV or Parquet manifest file",
}


def _check_path(field: str, source: str, path: str | None) -> None:
    if source not in PATH_KIND:
        return
    if path is None:
        raise UsageError(f"{field}: data.source={source} needs a path ({PATH_WHAT[source]})")
    target = Path(path)
    kind = PATH_KIND[source]
    if not target.exists():
        raise UsageError(f"{field}: {target.resolve()} does not exist "
                         f"(expected {PATH_WHAT[source]})")
    if kind == "folder" and not target.is_dir():
        raise UsageError(f"{field}: {target.resolve()} is not a folder "
                         f"(expected {PATH_WHAT[source]})")
    if kind == "file" and not target.is_file():
        raise UsageError(f"{field}: {target.resolve()} is not a file "
                         f"(expected {PATH_WHAT[source]})")


def check_data(cfg: PipelineConfig) -> None:
    """The data section names paths that exist, of the kind its source reads."""
    data = cfg.data
    if data.batched:  # each batch folder is checked when it is read
        if data.path is None or not Path(data.path).is_dir():
            raise UsageError(f"data.path: data.batched needs a folder of batch folders, not "
                             f"{data.path}")
        return
    if data.source != "paired":
        _check_path("data.path", data.source, data.path)
        return
    if data.pair is None:
        raise UsageError("data.pair: data.source=paired needs a data.pair section "
                         "({images: {source, path}, texts: {source, path}})")
    for side in ("images", "texts"):
        spec = getattr(data.pair, side)
        _check_path(f"data.pair.{side}.path", spec.source, spec.path)


def check_gate(cfg: PipelineConfig) -> None:
    """`gate.benchmark`, when set, is a file (a samples table such as a run's test.parquet)."""
    if cfg.gate.benchmark is not None and not Path(cfg.gate.benchmark).is_file():
        raise UsageError(f"gate.benchmark: {Path(cfg.gate.benchmark).resolve()} is not a file "
                         "(expected a samples table, e.g. a run's test.parquet)")


def check_run(cfg: PipelineConfig, stages: list[str] | None = None,
              refresh: list[str] | None = None) -> None:
    """Everything `mmpipe run` can check before it starts Prefect."""
    check_stages("--stages", stages)
    check_stages("--refresh", refresh)
    check_data(cfg)
    check_gate(cfg)

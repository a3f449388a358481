"""Data that arrives in batches: `<data.path>/<batch>/`, each in a layout a source reads.

Batches are ordered by name and immutable once ingested: a ledger in the run folder keeps each
ingested batch's content digest, and a batch whose files changed since is an error naming it.
Rows are split by a stable hash of their id, so a row's split never depends on which other
batches exist. The interface other work builds on is in docs/batches.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from mmcore.config import DataConfig
from mmcore.data.id_hash import id_draws
from mmcore.data.source import DataError, Source
from mmcore.io.integrity import file_stats
from mmcore.io.parquet import write_json

MANIFEST_NAMES = ("manifest.csv", "manifest.parquet")
# Split codes as preprocessing numbers them (mmcore.data.validation.SPLITS order).
TRAIN, VAL, TEST = 0, 1, 2


@dataclass(frozen=True)
class Batch:
    """One batch folder: its name, its position in name order, and a digest of its files."""

    name: str
    index: int
    path: Path
    digest: str


# (folder, its files' names, sizes and mtimes) -> content digest, for this process only: a run
# lists the batches three times (check, preprocessing, ledger) and reads each file once.
_DIGESTS: dict[tuple, str] = {}


def _content_digest(folder: Path) -> str:
    """sha256 over the relative names and bytes of every file under `folder`."""
    stats = tuple(file_stats(folder))
    if (folder, stats) not in _DIGESTS:
        _DIGESTS[folder, stats] = _read_digest(folder, [Path(path) for path, _, _ in stats])
    return _DIGESTS[folder, stats]


def _read_digest(folder: Path, files: list[Path]) -> str:
    blob = hashlib.sha256()
    for file in files:
        blob.update(str(file.relative_to(folder)).encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                blob.update(chunk)
    return blob.hexdigest()[:16]


def list_batches(path: str | Path) -> list[Batch]:
    """The batch subfolders of a data folder, ordered by name (hidden folders skipped)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError("data.batched needs a folder of batch folders", file=root,
                        field="data.path", reason="missing_file")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError("no batch folders in the data folder", file=root, field="data.path",
                        reason="empty_dataset")
    return [Batch(f.name, i, f, _content_digest(f)) for i, f in enumerate(folders)]


def batch_data_config(cfg: DataConfig, batch: Batch, classes: list[str] | None = None,
                      ) -> DataConfig:
    """The data config that reads one batch with `cfg.source`: its folder, or for a manifest
    the `manifest.csv|parquet` in it; `classes` fixes a manifest's class list (the reference
    window's), so that a batch lacking a class still numbers the others the same."""
    path = batch.path
    update: dict = {"batched": False}
    if cfg.source == "manifest":
        found = [path / name for name in MANIFEST_NAMES if (path / name).is_file()]
        if not found:
            raise DataError(f"batch '{batch.name}' has no {' or '.join(MANIFEST_NAMES)}",
                            file=path, field="data.path", reason="missing_file")
        path = found[0]
        if cfg.classes is None and classes is not None:
            update["classes"] = classes
    return cfg.model_copy(update={**update, "path": str(path)})


def hash_split(ids: list[str], val: float, test: float) -> np.ndarray:
    """Split code per id from a hash of the id alone: test below `test`, val below
    `test + val`, else train, on the id's uniform draw in [0, 1)."""
    draws = id_draws(ids)
    return np.where(draws < test, TEST, np.where(draws < test + val, VAL, TRAIN)).astype(np.int8)


def read_batch(path: str | Path, name: str, columns: list[str] | None = None) -> pa.Table:
    """The rows of batch `name` from a preprocessing file or a feature dataset folder (each
    batch is its own row groups, so the others are skipped by their statistics)."""
    return ds.dataset(str(path), format="parquet").to_table(
        columns=columns, filter=ds.field("batch") == name)


def batch_row_groups(file: str | Path, names: list[str]) -> list[int]:
    """The row groups of a preprocessing file that hold the rows of batches `names` (each row
    group holds one batch's rows)."""
    parquet = pq.ParquetFile(file)
    wanted = set(names)
    return [g for g in range(parquet.num_row_groups)
            if parquet.metadata.row_group(g).num_rows
            and parquet.read_row_group(g, columns=["batch"]).column(0)[0].as_py() in wanted]


class ChainedSource:
    """Several sources read as one, in order (the reference window's batches): the first's
    info, every source's rows."""

    def __init__(self, sources: list[Source]):
        self.sources = sources
        self.info = sources[0].info

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        for source in self.sources:
            yield from source.batches(batch_rows)


def ledger_path(run_dir: str | Path, data_path: str | Path) -> Path:
    """Where a run folder records the batches it ingested from one data folder."""
    folder = hashlib.sha256(str(Path(data_path).resolve()).encode()).hexdigest()[:16]
    return Path(run_dir) / "batches" / f"{folder}.json"


def read_ledger(path: Path) -> dict[str, str]:
    """Batch name -> digest of every batch ingested so far (empty before the first)."""
    try:
        return json.loads(path.read_text())["batches"]
    except FileNotFoundError:
        return {}


def check_unchanged(batches: list[Batch], seen: dict[str, str]) -> None:
    """A batch ingested before whose files changed, or that is gone, is an error naming it."""
    now = {b.name: b for b in batches}
    for name, digest in seen.items():
        if name not in now:
            raise DataError(f"batch '{name}' was ingested before and is gone; batches are "
                            "immutable (rerun with --refresh preprocessing to accept)",
                            field="data.path", reason="batch_changed")
        if now[name].digest != digest:
            raise DataError(f"batch '{name}' changed since it was ingested; batches are "
                            "immutable: add a new batch, or rerun with --refresh preprocessing "
                            "to re-ingest it", file=now[name].path, reason="batch_changed")


def write_ledger(path: Path, digests: dict[str, str]) -> None:
    """Record the batches (name -> digest) a run ingested."""
    write_json(path, {"batches": digests})

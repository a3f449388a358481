"""Parquet IO with the pipeline's contracts.

- Embeddings and images are `fixed_size_list<float32>[d]`: read into numpy with no per-row Python.
- Every file carries `mmpipe` JSON metadata in its schema (stage, cache key, upstream keys, ...).
- Files are written under a temporary name in the same folder and renamed into place; a stage's
  output folder gets its completion marker last, and a folder without it does not exist.
- The marker lists every file with its size and SHA-256 (`mmcore/io/integrity.py`), so a folder
  whose files were later cut, changed or deleted is found out before anyone reads it.
- A partitioned output is a folder `<name>.parquet/` of part files (`mmcore/io/partitions.py`);
  the readers here take a file or such a folder alike, and the marker is refused while a part is
  missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmcore.io import integrity

# Partitioned datasets (`mmcore/io/partitions.py`): a folder `<name>.parquet/` of part files.
PART = "part-{:05d}.parquet"
_PART = re.compile(r"^part-(\d{5})\.parquet$")

META_KEY = b"mmpipe"
MARKER = "_COMPLETE.json"


def embedding_array(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float matrix -> fixed_size_list<float32>[D] without per-row Python."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def embedding_schema(dim: int, batched: bool = False) -> pa.Schema:
    """The features/shared contract: id, split, label, embedding[dim]; batched data
    (docs/batches.md) adds `batch`, the batch's name."""
    fields = [("id", pa.string()), ("split", pa.string()), ("label", pa.int64()),
              ("embedding", pa.list_(pa.float32(), dim))]
    return pa.schema(fields + ([("batch", pa.string())] if batched else []))


def _column(values, type_: pa.DataType) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values.cast(type_)
    return pa.array(values, type_)


def embedding_table(ids, splits, labels, matrix: np.ndarray, batches=None) -> pa.Table:
    """Rows of the features/shared contract from columns (Arrow or numpy) and an (N, D) matrix
    (and, for batched data, the batch column)."""
    columns = [_column(ids, pa.string()), _column(splits, pa.string()),
               _column(labels, pa.int64()), embedding_array(matrix)]
    if batches is not None:
        columns.append(_column(batches, pa.string()))
    return pa.Table.from_arrays(columns,
                                schema=embedding_schema(matrix.shape[1], batches is not None))


def to_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """fixed_size_list<float32>[D] column -> (N, D) float32 array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    width = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), width).astype(np.float32, copy=False)


def read_dataset(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file, or a partitioned dataset folder read part by part in row order."""
    path = Path(path)
    if not path.is_dir():
        return pq.read_table(path, columns=columns)
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in part_files(path)])


def read_embeddings(path: str | Path) -> dict[str, Any]:
    """A features/shared file (or dataset folder) -> ids, splits, labels and the (N, D)
    embedding matrix."""
    table = read_dataset(path)
    return {
        "id": table.column("id").to_numpy(zero_copy_only=False),
        "split": table.column("split").to_numpy(zero_copy_only=False),
        "label": table.column("label").to_numpy(),
        "embedding": to_matrix(table.column("embedding")).copy(),  # writable, for torch
    }


def with_metadata(schema: pa.Schema, meta: dict[str, Any]) -> pa.Schema:
    merged = dict(schema.metadata or {})
    merged[META_KEY] = json.dumps(meta, sort_keys=True, default=str).encode()
    return schema.with_metadata(merged)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The `mmpipe` metadata of a file, or of a dataset folder's first part."""
    path = Path(path)
    if path.is_dir():
        path = part_files(path)[0]
    raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


def _tmp_name(path: Path) -> Path:
    """`.<name>.<pid>-<random>.tmp`: the pid lets a later run tell a crashed writer's leftover
    from a file being written right now."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_writer(path: str | Path, schema: pa.Schema, meta: dict[str, Any] | None = None,
                  ) -> Iterator[pq.ParquetWriter]:
    """A ParquetWriter on a temporary file that becomes `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    schema = with_metadata(schema, meta) if meta is not None else schema
    writer = pq.ParquetWriter(tmp, schema)
    try:
        yield writer
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise


def write_table(path: str | Path, table: pa.Table, meta: dict[str, Any] | None = None,
                row_group_size: int | None = None) -> Path:
    """Write a whole table atomically, with `meta` in the schema."""
    schema = with_metadata(table.schema, meta) if meta is not None else table.schema
    with atomic_writer(path, schema) as writer:
        writer.write_table(table.replace_schema_metadata(schema.metadata),
                           row_group_size=row_group_size)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


def mark_complete(folder: str | Path, info: dict[str, Any]) -> dict[str, Any]:
    """Write the completion marker: `info`, every file of the folder with its size and digest
    (`files`), and one digest of them all (`content`). Call last, after every output file is in
    place; a partitioned dataset with a part missing is an error, not a marker. Returns what
    was written."""
    gaps = [gap for dataset in sorted(Path(folder).glob("*.parquet")) if dataset.is_dir()
            for gap in missing_parts(dataset)]
    if gaps:
        raise ValueError(f"{folder}: not complete, so not marked: {'; '.join(gaps[:5])}")
    files = integrity.manifest(folder, skip={MARKER})
    marker = {**info, "files": files, "content": integrity.content_digest(files)}
    write_json(Path(folder) / MARKER, marker)
    return marker


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The completion marker's content, or None when the folder is missing or incomplete."""
    try:
        return json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def verify_folder(folder: str | Path, full: bool = False,
                  ) -> tuple[dict[str, Any] | None, list[integrity.Problem]]:
    """(marker, what is wrong with the folder's files); (None, []) when the folder is missing or
    incomplete. `full`: hash every file (else `integrity`'s policy for large files)."""
    marker = read_marker(folder)
    if marker is None:
        return None, []
    return marker, integrity.check(folder, marker.get("files"), full=full, skip={MARKER})


def cached_folder(folder: Path, build: Callable[[Path], None]) -> Path:
    """`folder`, built once: `build` fills a temporary sibling, which gets its completion marker
    and is renamed into place, so a crash never leaves a half-built entry. A damaged entry is
    built again."""
    if folder_complete(folder):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        mark_complete(tmp, {})
        try:
            os.replace(tmp, folder)
        except OSError:  # another run published the same entry first
            if folder_complete(folder):
                shutil.rmtree(tmp)
            else:
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def folder_complete(folder: Path) -> bool:
    """Whether `folder` has its completion marker and every file it lists, unchanged."""
    marker, problems = verify_folder(folder)
    return marker is not None and not problems


def iter_batches(path: str | Path, columns: list[str] | None = None,
                 ) -> Iterator[pa.RecordBatch]:
    """Row group by row group, so memory stays bounded by one row group."""
    file = pq.ParquetFile(path)
    for group in range(file.num_row_groups):
        yield from file.read_row_group(group, columns=columns).to_batches()


def part_name(index: int) -> str:
    return PART.format(index)


def part_files(dataset: str | Path) -> list[Path]:
    """The part files of a dataset folder, in row order (hidden and temporary files left out)."""
    return sorted(p for p in Path(dataset).iterdir() if _PART.match(p.name))


def part_info(path: Path) -> dict[str, Any] | None:
    """A part file's `part` metadata, or None if the file is missing or unreadable."""
    try:
        return read_metadata(path).get("part")
    except (OSError, ValueError):
        return None


def missing_parts(dataset: str | Path) -> list[str]:
    """What keeps a dataset folder from being complete: parts missing from 0..of-1, or parts
    that disagree on their count. Empty: every part is there."""
    parts = part_files(dataset)
    if not parts:
        return [f"{Path(dataset).name}: no part files"]
    infos = [part_info(p) or {} for p in parts]
    counts = {info.get("of") for info in infos}
    if len(counts) != 1 or None in counts:
        return [f"{Path(dataset).name}: parts disagree on their count ({sorted(map(str, counts))})"]
    (count,) = counts
    have = {info.get("index") for info in infos}
    return [f"{Path(dataset).name}/{part_name(i)} is missing" for i in range(count)
            if i not in have]

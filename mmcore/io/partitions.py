"""Partitioned datasets: a stage output written as one part file per partition of its input.

A dataset is a folder named like a file, `<name>.parquet/`, holding `part-00000.parquet`,
`part-00001.parquet`, ... in row order (the layout Spark and pyarrow datasets use; pyarrow and
pandas read the folder as one table). Each part carries, in its schema's `mmpipe` metadata,
`part = {index, of, source}`: its place, the number of parts, and a digest of what it was
computed from (an encoder's weights, the stage's inputs).

Parts are computed in a work folder that survives a failed or killed attempt of the stage; a
part found there with the expected `part` metadata was published whole (written under a temporary
name, then renamed) from the same source, so a retry reuses it and computes only the others.
When all are there, they move into the stage's output folder, whose completion marker then lists
each with its size and digest (`mmcore.parquet_io.mark_complete`, which refuses a dataset with a
part missing).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from mmcore.io.parquet import part_info, part_name


class MapParts(Protocol):
    """Computes every part of a dataset: `work(out=<part file>, meta=<its metadata>, **job)` for
    each job, and returns the dataset folder in the stage's output once all parts are there.
    `source` is a digest of what the parts are computed from (recorded in each part)."""

    def __call__(self, name: str, work: Callable[..., None], jobs: list[dict[str, Any]],
                 source: str) -> Path: ...


def part_meta(job: dict[str, Any], index: int, count: int, source: str) -> dict[str, Any]:
    """The metadata of part `index`: the job's file metadata plus `part`."""
    return {**job["meta"], "part": {"index": index, "of": count, "source": source}}


def run_inline(out_dir: Path, threads: int = 1) -> MapParts:
    """Parts in this process, straight into `out_dir` (no reuse across attempts: for library
    use, benchmarks and tests; the pipeline's stages use `tasks/parallel/partitions.py`): one
    after another, or side by side on `threads` threads, each part running torch on one thread,
    as a stage runs them inline."""
    def run(name: str, work: Callable[..., None], jobs: list[dict[str, Any]],
            source: str) -> Path:
        dataset = out_dir / name
        parts = [functools.partial(work, **{**job, "meta": part_meta(job, index, len(jobs),
                                                                      source)},
                                   out=dataset / part_name(index))
                 for index, job in enumerate(jobs)]
        if threads == 1:
            for part in parts:
                part()
        else:
            with one_thread(), ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda part: part(), parts))
        return dataset
    return run


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread for the block. A forward pass on 2 threads gave some embeddings
    that differed in the last bits from the same pass on 1 (a Dask worker's setting), so every
    part runs on one: the parts are the same bytes wherever they run. Parallelism comes from
    running parts side by side. The setting is process-wide: parts on threads of one process
    run inside one outer `one_thread` block, so that no part's exit restores it under another."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reusable(path: Path, expected: dict[str, Any]) -> bool:
    """Whether a part left in the work folder by an earlier attempt can stand for this one: it
    is complete (published by rename) and was computed from the same source."""
    return part_info(path) == expected


def move_parts(work: Path, dataset: Path, count: int) -> None:
    """Move parts 0..count-1 from the work folder into the output dataset folder (renames on one
    file system: nothing is copied, and no reader sees half a file)."""
    dataset.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        name = part_name(index)
        os.replace(work / name, dataset / name)

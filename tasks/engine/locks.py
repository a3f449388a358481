"""One lock per stage key, so that concurrent runs in one run directory compute each stage once.

An exclusive lock on `<run_dir>/locks/<stage>-<key>.lock` (`mmcore/io/locks.py`), held from "is
the output there?" through running the stage, publishing its folder and Prefect persisting its
result. The kernel releases it when the holder's process ends, however it ends (SIGKILL
included), so a crash never leaves a stale lock behind; Prefect's `FileSystemLockManager` writes
lock files that outlive a killed holder until they expire (`docs/decisions.md`). The holder
writes who it is into the file, so a waiter can say whom it waits for.

Different keys never wait for each other: runs of different configs proceed in parallel and
share only the stages whose keys they share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mmcore.io import locks


def lock_path(run_dir: str | Path, stage: str, key: str) -> Path:
    return Path(run_dir) / "locks" / f"{stage}-{key}.lock"


@contextmanager
def stage_lock(run_dir: str | Path, stage: str, key: str,
               on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock of (stage, key) for the block; wait for it if another run holds it, after
    calling `on_wait(who holds it)`."""
    with locks.exclusive(lock_path(run_dir, stage, key), on_wait=on_wait):
        yield


@contextmanager
def try_stage_lock(run_dir: str | Path, stage: str, key: str) -> Iterator[bool]:
    """The lock of (stage, key) if nobody holds it (True), else False; never waits."""
    with locks.try_exclusive(lock_path(run_dir, stage, key)) as free:
        yield free

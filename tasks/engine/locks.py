"""One lock per stage key, so that concurrent runs in one run directory compute each stage once.

A plain `flock` on `<run_dir>/locks/<stage>-<key>.lock`, held from "is the output there?" through
running the stage, publishing its folder and Prefect persisting its result. The kernel releases
it when the holder's process ends, however it ends (SIGKILL included), so a crash never leaves a
stale lock behind; Prefect's `FileSystemLockManager` writes lock files that outlive a killed
holder until they expire (`docs/decisions.md`). The holder writes who it is into the file, so a
waiter can say whom it waits for.

Different keys never wait for each other: runs of different configs proceed in parallel and
share only the stages whose keys they share.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_path(run_dir: str | Path, stage: str, key: str) -> Path:
    return Path(run_dir) / "locks" / f"{stage}-{key}.lock"


def _holder() -> str:
    return (f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%H:%M:%S')}")


@contextmanager
def _open(path: Path) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        yield fd
    finally:
        os.close(fd)  # releases the lock too


@contextmanager
def stage_lock(run_dir: str | Path, stage: str, key: str,
               on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock of (stage, key) for the block; wait for it if another run holds it, after
    calling `on_wait(who holds it)`."""
    with _open(lock_path(run_dir, stage, key)) as fd:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(os.pread(fd, 512, 0).decode(errors="replace").strip() or "another run")
            fcntl.flock(fd, fcntl.LOCK_EX)
        # Overwrite in place, then cut: truncating to zero first made ext4 flush the file on
        # close (3.7 ms per lock here, against 0.03 ms).
        holder = _holder().encode()
        os.pwrite(fd, holder, 0)
        os.ftruncate(fd, len(holder))
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def run_dir_lock(run_dir: str | Path, name: str) -> Iterator[None]:
    """A lock for one-time work on something the run directory's runs share (e.g. creating the
    MLflow store's tables, which two processes must not do at once)."""
    with stage_lock(run_dir, "run-dir", name):
        yield


@contextmanager
def try_stage_lock(run_dir: str | Path, stage: str, key: str) -> Iterator[bool]:
    """The lock of (stage, key) if nobody holds it (True), else False; never waits."""
    with _open(lock_path(run_dir, stage, key)) as fd:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

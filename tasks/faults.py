"""Fault injection for the crash tests: `MMPIPE_FAULT=<stage>:<point>[@<n>]` makes the process
kill itself with SIGKILL the n-th time (default: the first) it reaches that point of that stage,
as a power cut or the OOM killer would: no `finally`, no `atexit`, nothing flushed.

Points (where `tasks/engine/skeleton.py` calls `point`):
- `start`: the stage's temporary folder and MLflow run exist, its body is about to run;
- `epoch`: an epoch's metrics are being recorded (training loops);
- `metrics`: the body logs its metrics, after writing its files;
- `artifacts`: one artifact was logged to MLflow, the others not yet;
- `publish`: the completion marker is written, the folder not yet renamed into place;
- `partition`: a part of a partitioned dataset is about to be computed
  (`tasks/parallel/partitions.py`),
  in the flow's process or on a Dask worker.

Unset (always, outside tests), a point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

POINTS = ("start", "epoch", "metrics", "artifacts", "publish", "partition")
_reached: Counter[str] = Counter()


def _target(value: str) -> tuple[str, int]:
    """'training:epoch@2' -> ('training:epoch', 2); a malformed value is an error, not a no-op
    (a test that injects nothing must not pass)."""
    where, _, nth = value.partition("@")
    stage, _, name = where.partition(":")
    if not stage or name not in POINTS or not (nth or "1").isdigit():
        raise ValueError(f"MMPIPE_FAULT={value!r}: expected <stage>:<point>[@<n>] with a point "
                         f"in {POINTS}")
    return where, int(nth or 1)


def point(stage: str, name: str) -> None:
    """SIGKILL this process here if MMPIPE_FAULT names this point (and its n-th visit)."""
    value = os.environ.get("MMPIPE_FAULT")
    if not value:
        return
    where, nth = _target(value)
    if where != f"{stage}:{name}":
        return
    _reached[where] += 1
    if _reached[where] >= nth:
        print(f"MMPIPE_FAULT: killing process {os.getpid()} at {where} (visit {nth})",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

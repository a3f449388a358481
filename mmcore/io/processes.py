"""Processes named in files (run records, the local Prefect server's record): pid + create time.

A pid alone names whichever process has that number now: once the recorded process has ended,
the system may give the number to another one. A pid with the process's create time (psutil's
`Process.create_time()`) names one process for good, so nothing is signalled, or declared dead,
on the strength of a recycled pid or an edited record. Create times are compared to within
`TOLERANCE_S`: psutil derives them from the boot time, which the system reports in whole seconds.
"""

from __future__ import annotations

import os
from typing import Any

import psutil

TOLERANCE_S = 1.0


def create_time(pid: int) -> float | None:
    """When process `pid` was created (seconds since the epoch); None when no such process runs
    (a zombie has finished: it only waits for its parent to collect its exit status)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except psutil.NoSuchProcess:
        return None


def identity(pid: int | None = None) -> dict[str, Any]:
    """{"pid", "create_time"} of process `pid` (default: this one), as records store it."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "create_time": create_time(pid)}


def same_process(pid: int, created: Any) -> bool | None:
    """Whether process `pid` runs and is the one created at `created` (a recorded create time);
    None when that cannot be told (the system refuses to say, or the record has no create
    time)."""
    try:
        now = create_time(int(pid))
    except psutil.AccessDenied:
        return None
    if now is None:
        return False
    if not isinstance(created, int | float) or isinstance(created, bool):
        return None
    return abs(now - created) <= TOLERANCE_S


def command_line(pid: int) -> str:
    """Process `pid`'s command line, space-separated ("" when it cannot be read)."""
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def started_before(pid: int, moment: float) -> bool:
    """Whether process `pid` runs and started before `moment` (then it may have written a file
    dated `moment`; a process given the pid later did not)."""
    try:
        created = create_time(pid)
    except psutil.AccessDenied:
        return True
    return created is not None and created <= moment + TOLERANCE_S

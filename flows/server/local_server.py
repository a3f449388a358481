"""A local Prefect server that the CLI starts once per run directory and reuses.

Without PREFECT_API_URL every Prefect process starts a temporary server (11-15 s here, about a
third of a cold run); a server already running answers in milliseconds. It binds to 127.0.0.1,
keeps its state in the run directory, serves a UI that talks to its own API, and stops on its
own after `MMPIPE_SERVER_IDLE_MINUTES` (default 30) without use (`flows/server/watchdog.py`), or
at `mmpipe server stop`.

Files in the run directory:
    prefect-server.json   the running server: pid and create time of its process group's
                          leader (nothing is signalled unless both match: `mmcore/io/processes.py`),
                          API and UI URLs
    prefect-server.lock   held while a process checks for, starts or stops the server, so two
                          commands started together share one server
    prefect-server.users  each command that uses the server holds a shared lock on it until it
                          exits; its mtime is the last use
    prefect-server.log    the server's output and the watchdog's decisions
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from flows.errors import UsageError
from mmcore.io import locks, processes

STARTUP_TIMEOUT_S = 120
DEFAULT_IDLE_MINUTES = 30.0
IDLE_ENV = "MMPIPE_SERVER_IDLE_MINUTES"

_held_users_lock: dict[Path, int] = {}  # run dir -> open fd holding LOCK_SH for this process
log = logging.getLogger(__name__)


def info_path(run_dir: Path) -> Path:
    return run_dir / "prefect-server.json"


def lock_path(run_dir: Path) -> Path:
    return run_dir / "prefect-server.lock"


def users_path(run_dir: Path) -> Path:
    return run_dir / "prefect-server.users"


def log_path(run_dir: Path) -> Path:
    return run_dir / "prefect-server.log"


@contextlib.contextmanager
def server_lock(run_dir: Path) -> Iterator[None]:
    """Exclusive lock around check-and-start and check-and-stop (released if the process dies)."""
    with locks.exclusive(lock_path(run_dir)):
        yield


def idle_minutes() -> float:
    """The idle time after which a server stops, from MMPIPE_SERVER_IDLE_MINUTES (0: never)."""
    raw = os.environ.get(IDLE_ENV, "").strip()
    if not raw:
        return DEFAULT_IDLE_MINUTES
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{IDLE_ENV}={raw!r}: expected a number of minutes (0: never stop)"
                         ) from None
    if value < 0:
        raise UsageError(f"{IDLE_ENV}={raw!r}: expected a number of minutes >= 0")
    return value


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def recorded(run_dir: Path) -> dict | None:
    try:
        return json.loads(info_path(run_dir).read_text())
    except (OSError, ValueError):
        return None


def running(run_dir: Path) -> dict | None:
    """The server recorded in the run directory, if it still answers."""
    info = recorded(run_dir)
    return info if info and healthy(info["api_url"]) else None


def _launch(run_dir: Path, idle_min: float) -> dict:
    """Start the watchdog, which starts the server in its own process group; wait until the
    server answers. Caller holds the server lock."""
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log = open(log_path(run_dir), "ab")  # noqa: SIM115 -- handed to the watchdog
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.server.watchdog", str(run_dir), str(port),
         str(idle_min * 60)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, env=server_environment(api_url),
    )
    log.close()
    info = {**processes.identity(process.pid), "api_url": api_url,
            "ui_url": f"http://127.0.0.1:{port}", "idle_minutes": idle_min}
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not healthy(api_url):
        if process.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            raise RuntimeError(f"Prefect server did not start; see {log_path(run_dir)}")
        time.sleep(0.25)
    info_path(run_dir).write_text(json.dumps(info))
    return info


def server_environment(api_url: str) -> dict[str, str]:
    """The server's environment: never a client of another server, and its UI pointed at its
    own API (without this the UI asks http://127.0.0.1:4200/api, whatever the port)."""
    return {**os.environ, "PREFECT_API_URL": "", "PREFECT_SERVER_UI_API_URL": api_url,
            "PREFECT_UI_API_URL": api_url, "PYTHONUNBUFFERED": "1"}


def _answers_soon(info: dict, patience_s: float = 15.0) -> bool:
    """A recorded server whose process lives may just be busy: give it a few seconds."""
    deadline = time.monotonic() + patience_s
    while is_ours(info) and time.monotonic() < deadline:
        if healthy(info["api_url"]):
            return True
        time.sleep(0.5)
    return False


def _start_locked(run_dir: Path, idle_min: float | None) -> dict:
    minutes = idle_minutes() if idle_min is None else idle_min
    info = recorded(run_dir)
    if info and (healthy(info["api_url"]) or _answers_soon(info)):
        return info
    if info:  # recorded but not answering: stop what is left rather than leave it running
        _kill_recorded(run_dir, info)
    return _launch(run_dir, minutes)


def start(run_dir: Path, idle_min: float | None = None) -> dict:
    """Start a server for this run directory, or return the one already running.

    `idle_min` (default: MMPIPE_SERVER_IDLE_MINUTES, else 30) is how long it runs unused."""
    with server_lock(run_dir):
        info = _start_locked(run_dir, idle_min)
        users_path(run_dir).touch()  # a use: the idle time starts now
        return info


def is_ours(info: dict) -> bool:
    """The recorded process still runs: its pid names the process created at the recorded
    time, not one that reused the number, and that process is our watchdog or a Prefect server
    (a record edited by hand to name another process, with its create time, is not)."""
    pid = info.get("pid")
    if not (isinstance(pid, int) and pid > 1
            and processes.same_process(pid, info.get("create_time")) is True):
        return False
    command = processes.command_line(pid)
    return "flows.server.watchdog" in command or "prefect" in command


def _kill_recorded(run_dir: Path, info: dict) -> bool:
    """Stop the recorded server's process group, if the record names it; forget the record."""
    info_path(run_dir).unlink(missing_ok=True)
    if not is_ours(info):
        if isinstance(info.get("pid"), int) and processes.create_time(info["pid"]) is not None:
            log.warning("%s names pid %s, which is not the recorded server (no or another "
                        "create time or command line: the pid was reused, or the record was "
                        "edited): left alone",
                        info_path(run_dir), info.get("pid"))
        return False
    try:
        os.killpg(info["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def stop(run_dir: Path) -> bool:
    """Stop the run directory's server, answering or not; False if none was running."""
    with server_lock(run_dir):
        info = recorded(run_dir)
        return _kill_recorded(run_dir, info) if info else False


def _hold_users_lock(run_dir: Path) -> None:
    """Mark this process as a user of the server until it exits (the lock goes with it)."""
    path = users_path(run_dir)
    if run_dir not in _held_users_lock:
        _held_users_lock[run_dir] = locks.hold_shared(path)
        atexit.register(release, run_dir)  # the idle time counts from the end of the command
    os.utime(path)


def release(run_dir: Path) -> None:
    """This process no longer uses the server (it also stops at exit); the idle time starts."""
    fd = _held_users_lock.pop(run_dir, None)
    if fd is not None:
        os.utime(users_path(run_dir))
        os.close(fd)


def use(run_dir: Path) -> dict | None:
    """Point this process at the run directory's server, starting it if needed, and keep it
    from stopping while this process runs; None when the user chose a server
    (PREFECT_API_URL) or a temporary one (MMPIPE_TEMPORARY_SERVER=1)."""
    if os.environ.get("PREFECT_API_URL") or os.environ.get("MMPIPE_TEMPORARY_SERVER") == "1":
        return None
    with server_lock(run_dir):
        info = _start_locked(run_dir, None)
        _hold_users_lock(run_dir)
    os.environ["PREFECT_API_URL"] = info["api_url"]
    return info

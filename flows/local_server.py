"""A local Prefect server that the CLI starts once and reuses.

Without PREFECT_API_URL every Prefect process starts a temporary server (11-15 s here, about a
third of a cold run); a server already running answers in milliseconds. It binds to 127.0.0.1,
keeps its state in the run directory and runs until `mmpipe server stop`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

STARTUP_TIMEOUT_S = 120


def _info_path(run_dir: Path) -> Path:
    return run_dir / "prefect-server.json"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _recorded(run_dir: Path) -> dict | None:
    try:
        return json.loads(_info_path(run_dir).read_text())
    except (OSError, ValueError):
        return None


def running(run_dir: Path) -> dict | None:
    """The server recorded in the run directory, if it still answers."""
    info = _recorded(run_dir)
    return info if info and _healthy(info["api_url"]) else None


def start(run_dir: Path) -> dict:
    """Start a server for this run directory (or return the one already running)."""
    info = running(run_dir)
    if info:
        return info
    port = _free_port()
    log = open(run_dir / "prefect-server.log", "ab")  # noqa: SIM115 -- handed to the server
    prefect = Path(sys.executable).with_name("prefect")
    process = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ, "PREFECT_API_URL": ""},
    )
    info = {"pid": process.pid, "api_url": f"http://127.0.0.1:{port}/api",
            "ui_url": f"http://127.0.0.1:{port}"}
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not _healthy(info["api_url"]):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"Prefect server did not start; see {run_dir}/prefect-server.log")
        time.sleep(0.25)
    _info_path(run_dir).write_text(json.dumps(info))
    return info


def _is_prefect_server(pid: int) -> bool:
    """The pid still belongs to a Prefect server (not a process that reused the number)."""
    if not Path("/proc/self").exists():  # no /proc here (macOS): trust the record
        return True
    try:
        return b"prefect" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop(run_dir: Path) -> bool:
    """Stop the run directory's server, answering or not; False if none was running."""
    info = _recorded(run_dir)
    _info_path(run_dir).unlink(missing_ok=True)
    if not info or not _is_prefect_server(info["pid"]):
        return False
    try:
        os.killpg(info["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def use(run_dir: Path) -> dict | None:
    """Point this process at the run directory's server, starting it if needed; None when the
    user chose a server (PREFECT_API_URL) or a temporary one (MMPIPE_TEMPORARY_SERVER=1)."""
    if os.environ.get("PREFECT_API_URL") or os.environ.get("MMPIPE_TEMPORARY_SERVER") == "1":
        return None
    info = start(run_dir)
    os.environ["PREFECT_API_URL"] = info["api_url"]
    return info

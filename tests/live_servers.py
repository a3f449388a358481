"""Test helpers: real server processes (`mlflow server`, `mlflow models serve`) on 127.0.0.1,
started for a test and always stopped after it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def venv_command(name: str) -> str:
    """A console script of this environment (mlflow, prefect, mmpipe)."""
    return str(Path(sys.executable).with_name(name))


@contextmanager
def server_process(argv: list[str], health_url: str, log: Path, env: dict[str, str] | None = None,
                   timeout: float = 180) -> Iterator[subprocess.Popen]:
    """Run `argv` in its own process group until `health_url` answers; stop it afterwards
    (SIGTERM, then SIGKILL if it lingers, e.g. on a browser's open keep-alive connections).
    It runs as with the virtual environment activated (`mlflow models serve` runs `uvicorn`
    from PATH)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, "PATH": path, **(env or {})})
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(health_url, timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{' '.join(argv[:3])} did not answer at {health_url};"
                                       f" its log:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield process
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def mlflow_server(tracking_uri: str, log: Path) -> Iterator[str]:
    """`mlflow server` (the UI and its API) on a store, on a free port; yields its URL."""
    port = free_port()
    argv = [venv_command("mlflow"), "server", "--backend-store-uri", tracking_uri,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with server_process(argv, f"http://127.0.0.1:{port}/health", log,
                        env={"MLFLOW_TRACKING_URI": tracking_uri}):
        yield f"http://127.0.0.1:{port}"

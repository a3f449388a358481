"""Real servers for tests, each on 127.0.0.1 and a free port, stopped (with its children) on exit:
an `mlflow server` that proxies artifacts, and a throwaway PostgreSQL cluster from Debian's
packages."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until(ready, process: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start; its log:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (uvicorn workers included), SIGKILL if it lingers: a server
    still holding a test client's keep-alive connections waited 20 s before exiting."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass
class MlflowServer:
    url: str
    artifacts: Path  # the server's --artifacts-destination


@contextmanager
def mlflow_server(root: Path, backend_uri: str | None = None) -> Iterator[MlflowServer]:
    """`mlflow server` with `backend_uri` (default: SQLite in `root`) proxying artifacts to
    `root/artifacts`; one worker process."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    artifacts = root / "artifacts"
    log = root / "mlflow-server.log"
    command = [str(Path(sys.executable).with_name("mlflow")), "server",
               "--backend-store-uri", backend_uri or f"sqlite:///{root / 'server.db'}",
               "--artifacts-destination", str(artifacts),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: _healthy(url), process, "mlflow server", log)
        yield MlflowServer(url, artifacts)
    finally:
        _stop(process)


def postgres_bin() -> Path | None:
    """Folder of Debian's PostgreSQL server binaries (initdb is not on PATH there), or None."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextmanager
def postgres_cluster(bin_dir: Path, durable: bool = False) -> Iterator[str]:
    """A throwaway cluster in a temporary folder on 127.0.0.1; yields the URI of an empty
    database `mlflow` (user `mmpipe`, no password: trust on loopback). Run as the `postgres`
    user when we are root, since PostgreSQL refuses to run as root. Not `durable`: fsync off,
    as a test needs no crash safety (benchmarks pass durable=True)."""
    as_user = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="mmpipe-pg-"))  # /tmp: traversable by postgres
    if as_user:
        shutil.chown(folder, as_user)
    data, log, port = folder / "data", folder / "postgres.log", free_port()

    def pg(tool: str, *args: str) -> None:
        subprocess.run([str(bin_dir / tool), *args], check=True, user=as_user,
                       capture_output=True, cwd=folder)

    try:
        pg("initdb", "-D", str(data), "-U", "mmpipe", "--auth=trust", "-E", "UTF8",
           "--no-sync")
        pg("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", str(STARTUP_TIMEOUT_S),
           "-o", f"-h 127.0.0.1 -p {port} -k {folder}" + ("" if durable else " -c fsync=off"),
           "start")
        try:
            pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "mmpipe", "mlflow")
            # The driver named: SQLAlchemy 2.0 would pick psycopg2 for a bare postgresql://.
            yield f"postgresql+psycopg://mmpipe@127.0.0.1:{port}/mlflow"
        finally:
            pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)

"""Real server processes for tests (and benchmarks/stores.py), each on 127.0.0.1 and a free port.

Each process starts in its own process group and is stopped with the whole group (SIGTERM, then
SIGKILL if it lingers), so nothing it spawned (a uvicorn worker, a flow run's process) outlives
the test:

- `server_process`: any command, until its health URL answers (`mlflow models serve`);
- `mlflow_server`: `mlflow server` (the UI and its API) on a store, optionally proxying artifacts,
  optionally with MLflow's basic-auth app;
- `prefect_server`, `process_worker`, `Api`: `prefect server start`, a process worker, the REST
  calls the tests need;
- `postgres_cluster`: a throwaway PostgreSQL cluster from Debian's packages.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

PROJECT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 180


def venv_command(name: str) -> str:
    """A console script of this environment (mlflow, prefect, mmpipe)."""
    return str(Path(sys.executable).with_name(name))


PREFECT = venv_command("prefect")
MMPIPE = venv_command("mmpipe")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def venv_env(**extra: str) -> dict[str, str]:
    """This process's environment as with the virtual environment activated (`mlflow models
    serve` runs `uvicorn` from PATH), plus `extra`."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, **extra}


def service_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment: its own PREFECT_HOME, quiet, and no server of the user's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "MMPIPE_", "PYTEST_"))}
    env.update(PREFECT_HOME=str(home), DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1", **extra)
    return env


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5):
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def answers(url: str) -> bool:
    """`url` (a health endpoint) answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop_group(process: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM the process group, SIGKILL what is left after `grace_s` (a server still holding a
    client's keep-alive connections waited 20 s before exiting), reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def server_process(argv: list[str], health_url: str, log: Path,
                   env: dict[str, str] | None = None, cwd: Path | None = None,
                   timeout: float = STARTUP_TIMEOUT_S, grace_s: float = 10,
                   ) -> Iterator[subprocess.Popen]:
    """Run `argv` (environment `env`, default `venv_env()`) in its own process group, its
    output in `log`, until `health_url` answers; stop the group afterwards."""
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env=venv_env() if env is None else env, cwd=cwd)
    try:
        deadline = time.monotonic() + timeout
        while not answers(health_url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(argv[:3])} did not answer at {health_url};"
                                   f" its log:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield process
    finally:
        stop_group(process, grace_s)


@dataclass
class MlflowServer:
    url: str
    artifacts: Path | None  # the server's --artifacts-destination, if it proxies artifacts


@contextlib.contextmanager
def mlflow_server(root: Path, backend_uri: str | None = None,
                  proxy_artifacts: bool = True, auth_config: Path | None = None,
                  port: int | None = None) -> Iterator[MlflowServer]:
    """`mlflow server` (one worker) on `backend_uri` (default: SQLite in `root`), its log in
    `root`; with `proxy_artifacts`, new runs' artifacts go through it to `root/artifacts`
    (runs already in the store keep theirs where they are). With `auth_config` (an INI file:
    user database, admin, default permission), the basic-auth app asks every request who it is
    (its /health answers anyone). `port`: a free port chosen beforehand (default: one now)."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    backend_uri = backend_uri or f"sqlite:///{root / 'server.db'}"
    artifacts = root / "artifacts" if proxy_artifacts else None
    argv = [venv_command("mlflow"), "server", "--backend-store-uri", backend_uri,
            *(["--artifacts-destination", str(artifacts)] if artifacts else []),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            *(["--app-name", "basic-auth"] if auth_config else [])]
    env = venv_env(MLFLOW_TRACKING_URI=backend_uri, MLFLOW_DISABLE_TELEMETRY="true")
    if auth_config:
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(auth_config),
                   MLFLOW_FLASK_SERVER_SECRET_KEY=os.urandom(16).hex())
    url = f"http://127.0.0.1:{port}"
    with server_process(argv, f"{url}/health", root / "mlflow-server.log", env, cwd=root,
                        grace_s=5):
        yield MlflowServer(url, artifacts)


@contextlib.contextmanager
def prefect_server(home: Path, **env: str) -> Iterator[str]:
    """`prefect server start` with its own PREFECT_HOME (and `env`, such as
    PREFECT_SERVER_API_AUTH_STRING); yields the API URL."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    argv = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with server_process(argv, f"{api_url}/health", home / "server.log",
                        service_env(home, **env)):
        yield api_url


@contextlib.contextmanager
def process_worker(home: Path, api_url: str, pool: str) -> Iterator[subprocess.Popen]:
    """`prefect worker start` on a process pool, polling every second."""
    log = open(home / f"worker-{time.time_ns()}.log", "wb")  # noqa: SIM115 -- closed below
    env = service_env(home, PREFECT_API_URL=api_url, PREFECT_WORKER_QUERY_SECONDS="1",
                      PREFECT_WORKER_PREFETCH_SECONDS="5")
    process = subprocess.Popen([PREFECT, "worker", "start", "--pool", pool, "--type", "process"],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True, env=env, cwd=home)
    try:
        yield process
    finally:
        stop_group(process)
        log.close()


class Api:
    """The few Prefect REST calls the tests need (plain HTTP: no Prefect client settings
    involved)."""

    def __init__(self, api_url: str):
        self.http = httpx.Client(base_url=api_url, timeout=30)

    def _send(self, method: str, path: str, **kwargs) -> Any:
        """One call; a 503 (the server's SQLite database busy, on a loaded machine) is retried
        with backoff, as Prefect's own client does."""
        for attempt in range(6):
            response = self.http.request(method, path, **kwargs)
            if response.status_code != 503:
                break
            time.sleep(0.5 * 2 ** attempt)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict | None = None) -> Any:
        return self._send("POST", path, json=body or {})

    def get(self, path: str) -> Any:
        return self._send("GET", path)

    def deployment(self, name: str) -> dict:
        return self.get(f"/deployments/name/{name}")

    def deployments(self) -> list[dict]:
        return self.post("/deployments/filter")

    def run_deployment(self, name: str, parameters: dict) -> dict:
        deployment_id = self.deployment(name)["id"]
        return self.post(f"/deployments/{deployment_id}/create_flow_run",
                         {"parameters": parameters})

    def flow_run(self, flow_run_id: str) -> dict:
        return self.get(f"/flow_runs/{flow_run_id}")

    def automations(self, name: str) -> list[dict]:
        return [a for a in self.post("/automations/filter") if a["name"] == name]

    def heartbeats(self, flow_run_id: str) -> int:
        page = self.post("/events/filter", {"filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}}, "limit": 1})
        return page["total"]

    def close(self) -> None:
        self.http.close()


def postgres_bin() -> Path | None:
    """Folder of Debian's PostgreSQL server binaries (initdb is not on PATH there), or None."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextlib.contextmanager
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

"""Real Prefect services for tests: a `prefect server start`, a process worker, the REST API.

Each process starts in its own process group and is stopped with the whole group, so nothing
it spawned (a flow run's process) outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

PREFECT = str(Path(sys.executable).with_name("prefect"))
MMPIPE = str(Path(sys.executable).with_name("mmpipe"))
PROJECT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def stop_group(process: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM the process group, SIGKILL what is left after `grace_s`, reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1 and a free port; yields the API URL."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "server.log", "wb")  # noqa: SIM115 -- closed below
    process = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port",
                                str(port)], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True,
                               env=service_env(home))
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        wait_for("the Prefect server", lambda: healthy(api_url) or process.poll() is not None,
                 STARTUP_TIMEOUT_S)
        assert process.poll() is None, (home / "server.log").read_text()[-3000:]
        yield api_url
    finally:
        stop_group(process)
        log.close()


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
    """The few REST calls the tests need (plain HTTP: no Prefect client settings involved)."""

    def __init__(self, api_url: str):
        self.http = httpx.Client(base_url=api_url, timeout=30)

    def post(self, path: str, body: dict | None = None) -> Any:
        response = self.http.post(path, json=body or {})
        response.raise_for_status()
        return response.json()

    def get(self, path: str) -> Any:
        response = self.http.get(path)
        response.raise_for_status()
        return response.json()

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

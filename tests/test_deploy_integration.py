"""Deployments on a real Prefect server, as an operator runs them: `prefect server start`, a
process worker, `mmpipe deploy`; a deployment run read back from MLflow; `mmpipe serve` beside
the worker's deployments; the heartbeat automation marking a killed run Crashed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlflow import MlflowClient
from servers import (
    MMPIPE,
    PROJECT,
    Api,
    prefect_server,
    process_worker,
    service_env,
    wait_for,
)

from flows.deployments import prefect_yaml, run_locally
from flows.deployments.deploy import CRASH_AUTOMATION, FLOW_NAMES
from flows.errors import UsageError

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists("/proc/self"), reason="reads /proc")]

POOL = "mmpipe-local"
DEPLOYMENTS = ["mmpipe/nightly-full-run", "mmpipe/weekly-retrain",
               "mmpipe-compare/compare-learning-modes"]
CRASH_AFTER_S = 15  # the automation's limit in the test: Prefect's minimum is 10 s
FAST = ["data.limit=240", "features.image_epochs=1", "features.text_epochs=1",
        "shared_space.epochs=1", "training.epochs=1"]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="module")
def api_url(home):
    with prefect_server(home / "server") as url:
        yield url


@pytest.fixture
def api(api_url):
    client = Api(api_url)
    yield client
    client.close()


def mmpipe(home: Path, *args: str, env: dict | None = None, timeout: float = 300,
           ) -> subprocess.CompletedProcess:
    """The real `mmpipe` command, outside the project folder, with a clean environment."""
    return subprocess.run([MMPIPE, *args], cwd=home, env=env or service_env(home / "cli"),
                          capture_output=True, text=True, timeout=timeout)


def deploy(home: Path, api_url: str, *args: str) -> subprocess.CompletedProcess:
    result = mmpipe(home, "deploy", "--api-url", api_url, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def first_deploy(home, api_url) -> subprocess.CompletedProcess:
    return deploy(home, api_url)


def test_deploy_needs_an_answering_api_and_says_how_to_get_one(home):
    result = mmpipe(home, "deploy")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "PREFECT_API_URL" in result.stderr
    result = mmpipe(home, "deploy", "--api-url", "http://127.0.0.1:9/api")
    assert result.returncode == 2 and "does not answer" in result.stderr
    assert "Traceback" not in result.stderr


def test_deploy_then_a_process_worker_runs_a_deployment_to_completed(home, api_url, api,
                                                                     first_deploy):
    assert f"{POOL} (created)" in first_deploy.stdout
    assert len(api.automations(CRASH_AUTOMATION)) == 1
    assert sorted(f"{FLOW_NAMES[0] if d['entrypoint'].endswith(':pipeline') else FLOW_NAMES[1]}"
                  f"/{d['name']}" for d in api.deployments()) == sorted(DEPLOYMENTS)

    for name in DEPLOYMENTS:
        deployment = api.deployment(name)
        assert deployment["work_pool_name"] == POOL
        # The project folder is stored resolved, never as `{{ $MMPIPE_PROJECT_DIR }}`.
        assert deployment["pull_steps"] == [{
            "prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT)}}]
        assert [s["schedule"]["timezone"] for s in deployment["schedules"]] == ["UTC"]

    run_dir = home / "runs"
    with process_worker(home, api_url, POOL):
        flow_run = api.run_deployment("mmpipe/nightly-full-run", {
            "config": "configs/default.yaml", "overrides": [*FAST, f"run_dir={run_dir}"]})
        final = wait_for("the deployment run to finish", lambda: (
            state := api.flow_run(flow_run["id"])["state"])["type"] in
            ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and state, timeout=300)
    assert final["type"] == "COMPLETED", final

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("default")
    runs = client.search_runs([experiment.experiment_id],
                              f"tags.`prefect.flow_run_id` = '{flow_run['id']}'")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 6  # the pipeline run and its five stages
    assert all(r.info.status == "FINISHED" for r in runs)
    assert 0 <= parents[0].data.metrics["test.accuracy"] <= 1


def test_serve_beside_worker_deployments_leaves_them_alone(home, api_url, api, first_deploy):
    before = {name: api.deployment(name) for name in DEPLOYMENTS}
    local = [name.replace("/", "/local-") for name in DEPLOYMENTS]
    # DEBUG: the runner logs each poll for scheduled runs, which says it is fully started.
    env = service_env(home / "serve", PREFECT_API_URL=api_url, PREFECT_LOGGING_LEVEL="DEBUG")
    log_path = home / "serve.log"
    log = open(log_path, "wb")  # noqa: SIM115 -- closed below
    # Ctrl-C as in a terminal: a suite started in the background (`make test &`) inherits an
    # ignored SIGINT, and Python then installs no KeyboardInterrupt handler in the child.
    serve = subprocess.Popen([MMPIPE, "serve"], cwd=home, env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for("serve to poll for scheduled runs",
                 lambda: "Discovered" in log_path.read_text(errors="replace"), timeout=120)
        assert len([d for d in api.deployments() if d["name"].startswith("local-")]) == 3
        for name in local:
            deployment = api.deployment(name)
            assert deployment["work_pool_name"] is None
            assert [s["schedule"]["timezone"] for s in deployment["schedules"]] == ["UTC"]
            assert deployment["parameters"]["config"] == "configs/default.yaml"
    finally:
        os.killpg(serve.pid, signal.SIGINT)  # Ctrl-C: Prefect pauses what it served
        try:
            serve.wait(60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(serve.pid, signal.SIGKILL)
            log.close()
    for name in DEPLOYMENTS:  # the worker's deployments: untouched
        after = api.deployment(name)
        for field in ("paused", "schedules", "pull_steps", "parameters", "work_pool_name",
                      "updated"):
            assert after[field] == before[name][field], (name, field)
    assert all(api.deployment(name)["paused"] for name in local)  # only its own


def test_serve_refuses_a_local_name_held_by_a_work_pool_deployment(api_url, api,
                                                                   first_deploy):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    flow = api.post("/flows/", {"name": "mmpipe"})
    taken = api.post("/deployments/", {"name": "local-weekly-retrain", "flow_id": flow["id"],
                                       "work_pool_name": POOL, "entrypoint": "elsewhere.py:f"})
    try:
        deployments = [run_locally.build(spec) for spec in prefect_yaml.deployments()]
        with temporary_settings(updates={PREFECT_API_URL: api_url}), \
                pytest.raises(UsageError, match="mmpipe/local-weekly-retrain exists on work "
                                                f"pool '{POOL}'.*will not take it over"):
            run_locally.refuse_taken_names(deployments)
        assert api.get(f"/deployments/{taken['id']}")["entrypoint"] == "elsewhere.py:f"
    finally:
        api.http.delete(f"/deployments/{taken['id']}")


def _kill_flow_run_processes(flow_run_id: str) -> int:
    """SIGKILL every process running this flow run (found by its PREFECT__FLOW_RUN_ID)."""
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in environ.split(b"\0"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
    return killed


def test_a_run_whose_heartbeats_stop_is_marked_crashed(home, api_url, api, first_deploy):
    # Deploying again changes nothing but the automation's time limit (idempotent).
    again = deploy(home, api_url, "--crash-after", str(CRASH_AFTER_S))
    assert f"{POOL} (exists)" in again.stdout and "(updated)" in again.stdout
    assert len(api.automations(CRASH_AUTOMATION)) == 1
    assert len([d for d in api.deployments() if d["work_pool_name"] == POOL]) == 3
    run_dir = home / "runs-crash"
    with process_worker(home, api_url, POOL) as worker:
        # Long enough to be killed mid-run: thousands of training epochs.
        flow_run = api.run_deployment("mmpipe/nightly-full-run", {
            "config": "configs/default.yaml",
            "overrides": [*FAST, "training.epochs=100000", f"run_dir={run_dir}"]})
        wait_for("the run's first heartbeat", lambda: api.heartbeats(flow_run["id"]) > 0,
                 timeout=180)
        assert api.flow_run(flow_run["id"])["state"]["type"] == "RUNNING"  # alive till now
        os.killpg(worker.pid, signal.SIGKILL)  # the worker cannot report the crash
        assert _kill_flow_run_processes(flow_run["id"]) >= 1
        killed_at = datetime.now(UTC)
        state = wait_for("the automation to mark the run Crashed", lambda: (
            s := api.flow_run(flow_run["id"])["state"])["type"] == "CRASHED" and s,
            timeout=CRASH_AFTER_S + 60)
    assert "No heartbeat" in state["message"]  # the automation's, not a worker's report
    assert datetime.fromisoformat(state["timestamp"]) > killed_at

"""Three nights through the nightly deployment, as an operator runs them: a real Prefect server,
`mmpipe deploy --webhook-url` pointing at an HTTP receiver on 127.0.0.1, a process worker, and
a data folder that grows by one batch folder a night (`mmpipe data batches`):

- night 1: the first batch: baseline, the first champion (one `mmpipe.champion.promoted`);
- night 2: a batch from the same distribution: only that batch is preprocessed and embedded,
  the classifier retrained, no drift, no drift alert, the gate's decision recorded;
- night 3: a batch with far noisier images: a drift alert with its figures, the challenger
  trained and judged, the decision and figures in MLflow;
- then a deployment run that fails: `mmpipe.run.failed`.

Exactly the notifications each night's MLflow record says it sent (and the failure's) must
arrive.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from mlflow import MlflowClient
from servers import MMPIPE, Api, prefect_server, process_worker, service_env, wait_for

from tasks.tracking import alerts

pytestmark = pytest.mark.slow

QUICK = ["features.image_epochs=6", "features.text_epochs=6", "shared_space.epochs=10",
         "training.epochs=10", "testing.robustness=false"]
NAME = "mmpipe-classifier"


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every POSTed JSON body."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 -- http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        """The notified events: each notification's body is the event as JSON."""
        return [json.loads(n["body"]) for n in self.received]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def deployment_run(api: Api, parameters: dict) -> dict:
    """One run of the nightly deployment, waited for; its final state."""
    def create():
        try:
            return api.run_deployment("mmpipe/nightly-full-run", parameters)
        except httpx.HTTPStatusError as exc:  # 503: the server's SQLite busy; try again
            if exc.response.status_code != 503:
                raise
            return None

    flow_run = wait_for("the server to create the flow run", create, timeout=90, interval=3)
    return wait_for("the deployment run to finish", lambda: (
        state := api.flow_run(flow_run["id"])["state"])["type"] in
        ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and {**state, "id": flow_run["id"]},
        timeout=400)


def parent_run(client: MlflowClient, flow_run_id: str):
    experiment = client.get_experiment_by_name("default").experiment_id
    found = client.search_runs([experiment], f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    return next(r for r in found if "mlflow.parentRunId" not in r.data.tags)


def alerts_sent(run) -> list[str]:
    """The alerts a night's parent run says it sent (its description's "alerts sent" line)."""
    line = re.search(r"^- alerts sent: (.+)$", run.data.tags["mlflow.note.content"], re.M)
    return line.group(1).split(", ") if line else []


@pytest.fixture(scope="module")
def three_nights(tmp_path_factory):
    home = tmp_path_factory.mktemp("nights")
    runs, stream, data = home / "runs", home / "stream", home / "data"
    made = subprocess.run([MMPIPE, "data", "batches", "--out", str(stream), "--batches", "3",
                           "--shift-from", "3", "--shift", "noise", "--shift-size", "0.5"],
                          env=service_env(home / "cli"), capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stdout + made.stderr
    batches = sorted(p.name for p in stream.iterdir() if p.is_dir())
    night = {"config": "configs/default.yaml", "overrides": [
        *QUICK, "data.source=manifest", f"data.path={data}", "data.batched=true",
        f"run_dir={runs}"]}
    receiver = Receiver()
    try:
        # A busy 2-core machine locks the server's SQLite past Prefect's 10 s default.
        with prefect_server(home / "server", PREFECT_SERVER_DATABASE_TIMEOUT="60") as api_url:
            deployed = subprocess.run(
                [MMPIPE, "deploy", "--api-url", api_url, "--webhook-url", receiver.url],
                cwd=home, env=service_env(home / "cli"), capture_output=True, text=True,
                timeout=300)
            assert deployed.returncode == 0, deployed.stdout + deployed.stderr
            api = Api(api_url)
            states = []
            with process_worker(home, api_url, "mmpipe-local"):
                for batch in batches:  # one new batch folder a night
                    shutil.copytree(stream / batch, data / batch)
                    states.append(deployment_run(api, night))
                states.append(deployment_run(api, {**night, "stages": ["no-such-stage"]}))
            client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
            nights = [parent_run(client, s["id"]) for s in states[:3]]
            expected = [*(e for n in nights for e in alerts_sent(n)), alerts.RUN_FAILED]
            try:
                wait_for(f"{len(expected)} notifications",
                         lambda: len(receiver.received) >= len(expected), timeout=240)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: expected {expected}, got "
                                     f"{[e['event'] for e in receiver.events()]}") from None
            time.sleep(10)  # anything more would have arrived by now
            api.close()
    finally:
        receiver.close()
    return {"states": states, "client": client, "expected": expected, "nights": nights,
            "batches": batches, "events": receiver.events(), "deployed": deployed.stdout}


def test_deploy_installs_one_alert_automation_per_event(three_nights):
    for event in alerts.EVENTS:
        assert f"automation: 'mmpipe alert: {event}' (created)" in three_nights["deployed"]


def test_exactly_the_expected_notifications_arrive_with_their_figures(three_nights):
    events, nights = three_nights["events"], three_nights["nights"]
    assert alerts_sent(nights[0]) == [alerts.PROMOTED]
    assert alerts.DRIFT not in alerts_sent(nights[1]) and alerts.DRIFT in alerts_sent(nights[2])
    assert sorted(e["event"] for e in events) == sorted(three_nights["expected"])
    drift = next(e for e in events if e["event"] == alerts.DRIFT)["payload"]
    assert drift["night"] == 2 and drift["rows"] > 0  # the third batch, index 2
    sharpness = drift["tests"]["property:sharpness"]
    assert sharpness["p_value"] <= sharpness["threshold"]
    first = next(e for e in events if e["event"] == alerts.PROMOTED)["payload"]
    assert first["decision"] == "promoted: first champion"
    failure = next(e for e in events if e["event"] == alerts.RUN_FAILED)["payload"]
    assert failure["flow"] == "mmpipe" and "unknown stage" in failure["message"]


def test_the_nights_are_recorded_in_mlflow(three_nights):
    states, client, nights = three_nights["states"], three_nights["client"], three_nights["nights"]
    batches = three_nights["batches"]
    assert [s["type"] for s in states] == ["COMPLETED"] * 3 + ["FAILED"]
    for night, batch in zip(nights, batches, strict=True):  # each night ingested its batch only
        assert night.data.tags["mmpipe.new_batches"] == batch
    assert nights[1].data.tags["mmpipe.drift"] == "none"
    assert nights[2].data.tags["mmpipe.drift"] == "detected"
    for index, night in ((1, nights[1]), (2, nights[2])):  # drift and gate by batch index
        history = client.get_metric_history(night.info.run_id,
                                            "drift/property:sharpness.p_value")
        assert [m.step for m in history] == [index]
    for version in ("2", "3"):  # each night's challenger judged on its batch's test rows
        challenger = client.get_model_version(NAME, version)
        assert challenger.tags["gate/decision"] in ("promote", "keep")
        assert int(challenger.tags["gate/rows"]) > 0
    assert challenger.tags["gate/reason"] in nights[2].data.tags["mlflow.note.content"]

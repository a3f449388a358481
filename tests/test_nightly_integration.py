"""Alerts end to end: a real Prefect server, `mmpipe deploy --webhook-url` pointing at an HTTP
receiver on 127.0.0.1, then two nights of `mmpipe run` against that server (the second on far
noisier images) and one flow run that fails. Exactly the expected notifications must arrive,
each with its figures."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from servers import MMPIPE, PROJECT, prefect_server, service_env, wait_for

pytestmark = pytest.mark.slow

QUICK = ["data.limit=800", "features.image_epochs=6", "features.text_epochs=6",
         "shared_space.epochs=10", "training.epochs=10", "testing.robustness=false"]


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
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict]:
        return [json.loads(n["body"]) for n in self.received]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def run(home: Path, env: dict, *argv: str) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=PROJECT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_each_alert_event_reaches_the_webhook_exactly_once_with_its_figures(tmp_path):
    receiver = Receiver()
    try:
        with prefect_server(tmp_path / "server") as api_url:
            env = service_env(tmp_path / "cli", PREFECT_API_URL=api_url)
            deployed = run(tmp_path, env, MMPIPE, "deploy", "--webhook-url", receiver.url)
            assert "automation: 'mmpipe alert: mmpipe.drift.detected' (created)" in \
                deployed.stdout
            runs = tmp_path / "runs"
            common = [f"--set=run_dir={runs}", *(f"--set={o}" for o in QUICK)]
            run(tmp_path, env, MMPIPE, "run", *common)
            run(tmp_path, env, MMPIPE, "run", *common, "--set=data.image_noise.gaussian=0.6")
            failed = subprocess.run(
                [sys.executable, "-c", "from flows.pipeline import pipeline; "
                 f"pipeline(overrides=['run_dir={runs}'], stages=['no-such-stage'])"],
                cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
            assert failed.returncode != 0 and "unknown stage" in failed.stderr
            wait_for("four notifications", lambda: len(receiver.received) >= 4, timeout=120)
            time.sleep(10)  # anything more would have arrived by now
    finally:
        receiver.close()
    events = receiver.events()
    names = sorted(e["event"] for e in events)
    second = {"mmpipe.champion.promoted", "mmpipe.gate.failed"}
    assert len(names) == 4 and names.count("mmpipe.champion.promoted") >= 1, names
    assert "mmpipe.drift.detected" in names and "mmpipe.run.failed" in names
    assert set(names) - {"mmpipe.drift.detected", "mmpipe.run.failed"} <= second
    by_name = {e["event"]: e for e in events}
    drift = by_name["mmpipe.drift.detected"]["payload"]
    assert drift["night"] == 1 and drift["rows"] > 0
    assert "property:sharpness" in drift["tests"]
    assert drift["tests"]["property:sharpness"]["p_value"] <= \
        drift["tests"]["property:sharpness"]["threshold"]
    first = next(e for e in events if e["event"] == "mmpipe.champion.promoted")
    assert first["payload"]["decision"].startswith("promoted")
    failure = by_name["mmpipe.run.failed"]["payload"]
    assert failure["flow"] == "mmpipe" and "unknown stage" in failure["message"]

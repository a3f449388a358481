"""prefect.yaml's deployments build into real Prefect deployments, and the CLI's non-running
commands answer clearly."""

from __future__ import annotations

import contextlib
import http.server
import inspect
import threading

import pytest

from flows.cli import commands
from flows.compare import compare
from flows.deployments import deploy, prefect_yaml, run_locally
from flows.errors import UsageError
from flows.pipeline import pipeline, select


def test_every_deployment_in_prefect_yaml_serves_as_local_name_with_its_schedules():
    specs = prefect_yaml.deployments()
    assert {s["name"] for s in specs} >= {"nightly-full-run", "weekly-retrain"}
    for spec in specs:
        deployment = run_locally.build(spec)
        # A name of its own: never the work-pool deployment `mmpipe deploy` creates.
        assert deployment.name == "local-" + spec["name"]
        assert deployment.parameters == spec.get("parameters", {})
        assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [
            (s["cron"], s["timezone"]) for s in spec["schedules"]]
        assert deployment.work_pool_name is None
        flow = pipeline if spec["entrypoint"].endswith(":pipeline") else compare
        allowed = set(inspect.signature(flow.fn).parameters)
        assert set(spec.get("parameters", {})) <= allowed
        stages = spec.get("parameters", {}).get("stages")
        if stages:
            select(stages, spec["parameters"].get("refresh"))  # names are real stages


def test_served_schedules_keep_their_time_zone_and_parameters():
    spec = {"name": "berlin", "entrypoint": "flows/pipeline.py:pipeline",
            "parameters": {"config": "configs/default.yaml"},
            "schedules": [{"cron": "0 2 * * *", "timezone": "Europe/Berlin",
                           "parameters": {"stages": ["testing"]}}]}
    [schedule] = run_locally.build(spec).schedules
    assert schedule.schedule.timezone == "Europe/Berlin"
    assert schedule.parameters == {"stages": ["testing"]}
    with pytest.raises(UsageError, match="cron schedules only"):
        run_locally.build({**spec, "schedules": [{"interval": 60}]})


def test_deploy_refuses_a_project_folder_without_prefect_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv(deploy.PROJECT_ENV, str(tmp_path))
    with pytest.raises(UsageError, match=f"{deploy.PROJECT_ENV}=.* has no prefect.yaml"):
        deploy.project_dir()
    monkeypatch.delenv(deploy.PROJECT_ENV)
    assert deploy.project_dir() == deploy.PROJECT  # this checkout, resolved


@pytest.mark.parametrize(("text", "message"), [
    ("deployments: [\n", "prefect.yaml: cannot read it: while parsing"),
    ("name: mmpipe\n", "prefect.yaml: expected a `deployments:` list"),
    ("deployments:\n  - name: x\n", r"prefect.yaml: deployments\[0\]: missing entrypoint"),
])
def test_a_prefect_yaml_that_cannot_be_used_is_one_line_naming_it(tmp_path, text, message):
    (tmp_path / "prefect.yaml").write_text(text)
    with pytest.raises(UsageError, match=message) as caught:
        prefect_yaml.deployments(tmp_path)
    assert "\n" not in str(caught.value)


def test_deploy_names_the_fix_when_the_url_is_not_a_prefect_api(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(UsageError, match="export PREFECT_API_URL="):
        deploy.check_api_url(None)
    with pytest.raises(UsageError, match="does not answer"):
        deploy.check_api_url("http://127.0.0.1:9/api")
    with _http_server(b"<html>a web page</html>") as url, \
            pytest.raises(UsageError, match="not as a Prefect API.*ends in /api"):
        deploy.check_api_url(url)
    with _http_server(b"true") as url:
        assert deploy.check_api_url(url + "/") == url
    with pytest.raises(UsageError, match="at least 10 s"):
        deploy.deploy("http://127.0.0.1:9/api", crash_after_s=5)


@contextlib.contextmanager
def _http_server(body: bytes):
    """A real HTTP server on a free port that answers every GET with `body`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 -- the stdlib's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


def test_heartbeat_automation_watches_this_projects_flows():
    automation = deploy.crash_automation(540)
    trigger = automation.trigger
    assert trigger.posture == "Proactive" and trigger.within.total_seconds() == 540
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.expect == {"prefect.flow-run.*"}  # any later event of the run disarms it
    assert trigger.for_each == {"prefect.resource.id"}
    [related] = trigger.match_related if isinstance(trigger.match_related, list) else [
        trigger.match_related]
    assert related["prefect.resource.name"] == deploy.FLOW_NAMES
    assert [a.type for a in automation.actions] == ["change-flow-run-state"]
    assert automation.actions[0].state == "CRASHED"


def test_stage_selection_rejects_unknown_stages():
    with pytest.raises(ValueError, match="unknown stage"):
        select(["trainig"], None)
    assert select(["testing", "training"], ["training"]) == (["training", "testing"], 3)


def test_cli_reports_a_bad_config_value_and_exits_2(tmp_path, capsys):
    code = commands.main(["status", "--set", f"run_dir={tmp_path}",
                          "--set", "training.epochs=many"])
    assert code == 2
    assert "training.epochs" in capsys.readouterr().err


def test_cli_reports_an_unknown_config_key(tmp_path, capsys):
    code = commands.main(["status", "--set", f"run_dir={tmp_path}",
                          "--set", "shared_space.lossy=l2"])
    assert code == 2
    assert "shared_space.lossy" in capsys.readouterr().err


def test_cli_status_on_a_fresh_run_dir_says_every_stage_misses(tmp_path, capsys):
    assert commands.main(["status", "--set", f"run_dir={tmp_path}"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["preprocessing", "feature_extraction",
                                                   "shared_space", "training", "testing"]
    assert all(" miss " in line and "never ran" in line for line in lines)

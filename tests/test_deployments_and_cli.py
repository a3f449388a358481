"""prefect.yaml's deployments build into real Prefect deployments, and the CLI's non-running
commands answer clearly."""

from __future__ import annotations

import inspect

import pytest

from flows import cli, serve
from flows.pipeline import compare_modes, pipeline, select


def test_every_deployment_in_prefect_yaml_builds_with_its_schedule_and_parameters():
    specs = serve.load_deployments()
    assert {s["name"] for s in specs} >= {"nightly-full-run", "weekly-retrain"}
    for spec in specs:
        deployment = serve.build(spec)
        assert deployment.name == spec["name"]
        crons = sorted(s.schedule.cron for s in deployment.schedules)
        assert crons == sorted(s["cron"] for s in spec["schedules"])
        flow = pipeline if spec["entrypoint"].endswith(":pipeline") else compare_modes
        allowed = set(inspect.signature(flow.fn).parameters)
        assert set(spec.get("parameters", {})) <= allowed
        stages = spec.get("parameters", {}).get("stages")
        if stages:
            select(stages, spec["parameters"].get("refresh"))  # names are real stages


def test_stage_selection_rejects_unknown_stages():
    with pytest.raises(ValueError, match="unknown stage"):
        select(["trainig"], None)
    assert select(["testing", "training"], ["training"]) == (["training", "testing"], 3)


def test_cli_reports_a_bad_config_value_and_exits_2(tmp_path, capsys):
    code = cli.main(["status", "--set", f"run_dir={tmp_path}", "--set", "training.epochs=many"])
    assert code == 2
    assert "training.epochs" in capsys.readouterr().err


def test_cli_reports_an_unknown_config_key(tmp_path, capsys):
    code = cli.main(["status", "--set", f"run_dir={tmp_path}", "--set", "fusion.lossy=l2"])
    assert code == 2
    assert "fusion.lossy" in capsys.readouterr().err


def test_cli_status_on_a_fresh_run_dir_says_every_stage_misses(tmp_path, capsys):
    assert cli.main(["status", "--set", f"run_dir={tmp_path}"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["preprocessing", "feature_extraction",
                                                   "fusion", "training", "testing"]
    assert all(" miss " in line and "never ran" in line for line in lines)

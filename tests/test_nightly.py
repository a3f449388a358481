"""Nightly runs: drift checks against the champion's reference, the champion-vs-challenger gate,
`@previous_champion` and rollback. Real Prefect flows, real MLflow (SQLite, read back through
MlflowClient), real Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from mmcore.config import GateConfig
from mmcore.nightly import gate, read_rows
from tasks.tracking import model_registry

NAME = "mmpipe-classifier"
QUICK = ["data.limit=800", "features.image_epochs=6", "features.text_epochs=6",
         "shared_space.epochs=10", "training.epochs=10", "testing.robustness=false"]


def correct(n_right: int, n: int = 200) -> np.ndarray:
    return np.arange(n) < n_right


@pytest.mark.parametrize("champion, challenger, cfg, promote, why", [
    (100, 160, GateConfig(), True, "McNemar p"),
    (100, 104, GateConfig(), False, "not significant"),
    (100, 104, GateConfig(alpha=1), True, "McNemar p"),
    (100, 160, GateConfig(floor=0.9), False, "< floor"),
    (100, 160, GateConfig(min_gain=0.5), False, "< min_gain"),
    (160, 100, GateConfig(), False, "< min_gain"),
])
def test_gate_promotes_only_past_floor_gain_and_mcnemar(champion, challenger, cfg, promote, why):
    result = gate(correct(champion), correct(challenger), cfg, None)
    assert result.promote is promote and why in result.reason
    assert result.rows == 200
    assert result.delta == pytest.approx((challenger - champion) / 200)
    assert result.only_challenger == max(0, challenger - champion)


def test_gate_reports_a_champion_that_degraded_beyond_noise():
    ok = gate(correct(150), correct(150), GateConfig(), champion_promoted_at=0.78)
    assert not ok.champion_degraded  # 0.75 against 0.78: within max_drop
    noise = gate(correct(15, 20), correct(15, 20), GateConfig(), champion_promoted_at=0.85)
    assert not noise.champion_degraded  # 0.75 on 20 rows: binomial p 0.17
    dropped = gate(correct(150), correct(150), GateConfig(), champion_promoted_at=0.85)
    assert dropped.champion_degraded and "below its 0.8500 at promotion" in dropped.degraded_reason
    floor = gate(correct(150), correct(150), GateConfig(floor=0.8), champion_promoted_at=None)
    assert floor.champion_degraded and "< floor" in floor.degraded_reason


def test_read_rows_names_a_file_that_is_not_a_samples_table(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1]}), path)
    with pytest.raises(ValueError, match=r"x\.parquet: not a samples table"):
        read_rows(path)
    with pytest.raises(ValueError, match="no such samples table"):
        read_rows(tmp_path / "missing.parquet")


def samples_table(path: Path, labels: list[int | None], batches: list[str] | None = None,
                  meta: dict | None = None) -> Path:
    """A tiny test.parquet as preprocessing writes it: unit-scale pixels, raw text."""
    import pyarrow as pa

    from mmcore.io.parquet import embedding_array, write_table

    n = len(labels)
    columns = {"id": [f"r{i}" for i in range(n)], "label": pa.array(labels, pa.int64()),
               "split": ["test"] * n,
               "image": embedding_array(np.full((n, 4), 0.5, dtype=np.float32)),
               "text": [f"text {i}" for i in range(n)]}
    if batches:
        columns["batch"] = batches
    return write_table(path, pa.table(columns), {"pixel_max": 16.0, **(meta or {})})


def test_new_rows_are_the_new_batches_test_rows_or_every_test_row_without_batches(tmp_path):
    from mmcore.nightly import newest_rows

    plain = samples_table(tmp_path / "plain" / "test.parquet", [1, 2, 3])
    rows, index = newest_rows(plain.parent)
    assert (rows.ids, index, rows.labels.tolist()) == (["r0", "r1", "r2"], None, [1, 2, 3])
    assert rows.images.tolist()[0] == [8.0] * 4  # back on the source's scale
    batched = samples_table(tmp_path / "batched" / "test.parquet", [1, 2, 3, 4],
                            ["2026-12-01", "2026-12-01", "2026-12-02", "2026-12-03"],
                            {"batches": ["2026-12-01", "2026-12-02", "2026-12-03"],
                             "new_batches": ["2026-12-02", "2026-12-03"]})
    rows, index = newest_rows(batched.parent)
    assert (rows.ids, index) == (["r2", "r3"], 2)


def test_unlabelled_rows_are_read_but_never_scored(tmp_path):
    from mmcore.nightly import correct

    rows = read_rows(samples_table(tmp_path / "test.parquet", [1, None]))
    assert rows.labels is None and len(rows) == 2
    with pytest.raises(ValueError, match="rows without labels cannot be scored"):
        correct(None, rows)


@pytest.fixture(scope="module")
def nights(tmp_path_factory, prefect_harness):
    """Night 1 on the built-in digits; night 2 on the same rows with far noisier images (drift);
    both in one run folder."""
    from flows.pipeline import pipeline

    run_dir = tmp_path_factory.mktemp("nights")
    common = [*QUICK, f"run_dir={run_dir}"]
    first = pipeline(overrides=common)
    second = pipeline(overrides=[*common, "data.image_noise.gaussian=0.6"])
    return run_dir, first, second


def test_first_night_sets_the_champion_and_stores_its_reference(nights):
    run_dir, first, _ = nights
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    assert first["model"]["decision"] == "promoted: first champion"
    assert first["model"]["night"]["drift"] is None  # nothing to compare with yet
    mv = client.get_model_version_by_alias(NAME, "champion")
    assert mv.tags["champion.accuracy"] == mv.tags["test.accuracy"]
    stored = client.list_artifacts(mv.run_id, "drift")
    assert [a.path for a in stored] == ["drift/reference_profile.npz", "drift/temperature.json"]
    calibration = json.loads(Path(client.download_artifacts(
        mv.run_id, "drift/temperature.json", str(run_dir))).read_text())
    assert calibration["temperature"] > 0


def test_second_night_detects_the_noisier_images_and_records_the_gate(nights):
    run_dir, first, second = nights
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    night = second["model"]["night"]
    detected = {t["name"] for t in night["drift"]["tests"] if t["detected"]}
    assert {"property:brightness", "property:sharpness"} <= detected
    assert "mmpipe.drift.detected" in night["events"]
    parent = client.get_run(second["parent_run_id"])
    assert parent.data.tags["mmpipe.drift"] == "detected"
    history = client.get_metric_history(parent.info.run_id, "drift/property:sharpness.p_value")
    assert [m.step for m in history] == [1] and history[0].value <= 0.05
    report = json.loads(Path(client.download_artifacts(parent.info.run_id, "drift/report.json"))
                        .read_text())
    assert report["drifted"] and len(report["tests"]) == 11
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "drift")} == {
        "drift/report.json", "drift/report.png"}
    # the gate, on the same rows, as the challenger's tags
    challenger = client.get_model_version(NAME, second["model"]["version"])
    gate_figures = night["gate"]
    assert challenger.tags["gate/rows"] == str(gate_figures["rows"]) == str(night["new_rows"])
    assert challenger.tags["gate/decision"] == ("promote" if gate_figures["promote"] else "keep")
    assert float(challenger.tags["gate/delta"]) == pytest.approx(gate_figures["delta"], abs=1e-6)
    assert challenger.tags["gate/data_digest"] == second["stages"]["preprocessing"]["key"]
    assert "gate on" in parent.data.tags["mlflow.note.content"]
    # the Prefect flow run's Markdown artifact: what was new, what drifted, what was decided
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as prefect:
        (artifact,) = prefect.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[parent.data.tags["prefect.flow_run_id"]])))
    assert f"- new rows: {night['new_rows']} test rows" in artifact.data
    assert "- drift: **drift detected** in " in artifact.data
    assert f"- decision: {night['decision']}" in artifact.data
    champion = client.get_model_version_by_alias(NAME, "champion")
    if gate_figures["promote"]:
        assert str(champion.version) == str(challenger.version)
        assert str(client.get_model_version_by_alias(NAME, "previous_champion").version) == \
            first["model"]["version"]
        assert night["events"][-1] == "mmpipe.champion.promoted"
    else:
        assert str(champion.version) == first["model"]["version"]
        assert night["events"][-1] == "mmpipe.gate.failed"


def test_rollback_restores_the_previous_champion_and_says_why(nights):
    run_dir, first, second = nights
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    client = MlflowClient(uri)
    if second["model"]["version"] != str(client.get_model_version_by_alias(NAME, "champion")
                                         .version):
        model_registry.promote(uri, NAME, second["model"]["version"])
    moved_from, moved_to = model_registry.rollback(uri, NAME, "night 2 looked wrong")
    assert (moved_from, moved_to) == (second["model"]["version"], first["model"]["version"])
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == \
        first["model"]["version"]
    assert str(client.get_model_version_by_alias(NAME, "previous_champion").version) == moved_from
    rolled = client.get_model_version(NAME, moved_from)
    assert rolled.tags["rollback.reason"] == "night 2 looked wrong"
    assert "rolled back: to v" in rolled.description


def test_mmpipe_rollback_moves_back_again_or_says_there_is_nothing_to_roll_back(
        nights, tmp_path, capsys):
    from flows.cli import commands

    run_dir, first, second = nights
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    for version in (first["model"]["version"], second["model"]["version"]):
        model_registry.promote(uri, NAME, version)  # champion: second, previous: first
    code = commands.main(["rollback", "--reason", "first was better after all",
                          "--set", f"run_dir={run_dir}"])
    assert code == 0
    assert capsys.readouterr().out.strip() == (
        f"{NAME}@champion -> version {first['model']['version']} (rolled back from version "
        f"{second['model']['version']}: first was better after all)")
    empty = commands.main(["rollback", "--reason", "x", "--set", f"run_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert empty == 2 and err.splitlines()[-1] == (
        f"mmpipe: error: model {NAME!r} has no @previous_champion to roll back to")
    assert "Traceback" not in err


def test_a_benchmark_set_is_scored_beside_the_new_rows(nights):
    from mmcore.config import load_config
    from mmcore.nightly import newest_rows
    from tasks.tracking.nightly import compare, load_chain

    run_dir, first, second = nights
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    benchmark = Path(first["stages"]["preprocessing"]["path"]) / "test.parquet"
    rows, _ = newest_rows(Path(second["stages"]["preprocessing"]["path"]))
    one = client.get_model_version(NAME, first["model"]["version"])
    chains = [load_chain(client, NAME, v) for v in (first["model"]["version"],
                                                   second["model"]["version"])]
    plain = compare(load_config(), *chains, one, rows)
    both = compare(load_config(overrides=[f"gate.benchmark={benchmark}"]), *chains, one, rows)
    assert plain.rows == len(rows)
    assert both.rows == len(rows) + len(read_rows(benchmark))
    with pytest.raises(ValueError, match="no such samples table"):
        compare(load_config(overrides=["gate.benchmark=/nonexistent/test.parquet"]), *chains,
                one, rows)


@pytest.mark.slow
def test_three_batched_nights_check_only_each_new_batch(tmp_path, request):
    """With batch folders (issue 17, item 1): each night's new rows are the new batch's test
    rows, the metrics' step is its index, and only the shifted batch raises drift."""
    request.getfixturevalue("prefect_harness")  # only once the test runs: it costs ~20 s
    import shutil

    from flows.cli import commands
    from flows.pipeline import pipeline

    stream, data = tmp_path / "stream", tmp_path / "data"
    assert commands.main(["data", "batches", "--out", str(stream), "--batches", "3",
                          "--shift-from", "3", "--shift", "noise", "--shift-size", "0.5"]) == 0
    overrides = [*QUICK[1:], "data.source=manifest", f"data.path={data}", "data.batched=true",
                 f"run_dir={tmp_path / 'runs'}"]
    nights = []
    for batch in sorted(p.name for p in stream.iterdir() if p.is_dir()):
        shutil.copytree(stream / batch, data / batch)
        nights.append(pipeline(overrides=overrides))
    checked = [n["model"]["night"] for n in nights[1:]]
    assert [n["step"] for n in checked] == [1, 2]
    for night, summary in zip(checked, nights[1:], strict=True):
        test = read_rows(Path(summary["stages"]["preprocessing"]["path"]) / "test.parquet")
        assert 0 < night["new_rows"] < len(test)  # the new batch's rows, not all of them
    assert not checked[0]["drift"]["drifted"] and checked[1]["drift"]["drifted"]
    assert "mmpipe.drift.detected" in checked[1]["events"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    history = client.get_metric_history(nights[2]["parent_run_id"],
                                        "drift/property:sharpness.p_value")
    assert [m.step for m in history] == [2]

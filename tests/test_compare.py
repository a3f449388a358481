"""`mmpipe compare` end to end: every cell through the real Prefect flow into one MLflow
experiment (real SQLite store, read back with MlflowClient), report.json as described, cells of
a seed sharing their upstream stages through the cache."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.compare import Cell, parse_fusions, plan_cells, run_cells
from mmcore.experiments.comparison import EFFECTIVE, FULLY, RELATIVE

FAST = ["data.limit=500", "features.image_epochs=2", "features.text_epochs=2",
        "features.image_channels=8", "features.text_hidden=16", "shared_space.epochs=4",
        "training.epochs=4"]
SEEDS = [0, 1]
FUSIONS = "late,concat"
CELL_FIELDS = {"mode", "train_modalities", "test_modalities", "fusion", "seed", "test_accuracy",
               "macro_f1", "labels_used", "run_id"}


def test_plan_cells_and_run_cells_keep_order():
    cells = plan_cells([3], ["late", "gmu"])
    assert [c.name for c in cells] == [
        "multimodal-late-seed3", "multimodal-gmu-seed3", "unimodal-image-seed3",
        "cross_modal-image-seed3", "unimodal-text-seed3", "cross_modal-text-seed3"]
    assert Cell("multimodal", "image", "gmu", 1).overrides() == [
        "seed=1", "training.mode=multimodal", "training.modality=image", "training.fusion=gmu"]
    # Any map-like executor: the default runs them here, a pool's map elsewhere.
    assert run_cells(cells, lambda c: c.name) == [c.name for c in cells]
    # Their runs' names in MLflow and Prefect: mode (mmcore.learning_plan.mode_label) and seed.
    assert [c.label for c in cells[:4]] == [
        "multimodal late · image+text · seed 3", "multimodal gmu · image+text · seed 3",
        "unimodal · image · seed 3", "cross_modal · image->text · seed 3"]
    with ThreadPoolExecutor(2) as pool:
        assert run_cells(cells, lambda c: c.name, pool.map) == [c.name for c in cells]


def test_parse_fusions():
    assert parse_fusions(None, "late") == ["late"]
    assert parse_fusions("late, gmu", "late") == ["late", "gmu"]
    assert len(parse_fusions("all", "late")) == 8
    with pytest.raises(ValueError, match="unknown fusion operator"):
        parse_fusions("late,fancy", "late")


def test_numbers_as_shown_and_names_of_what_ran():
    from flows.cli.commands import metrics_table
    from mmcore.learning_plan import mode_label
    from tasks.tracking.experiment_runs import compare_name, rounded

    # 4 decimals (small ones 4 significant digits); an exact zero is 0, never -0.0 or -2.2e-16.
    assert [rounded(v) for v in (0.660167130919, 3.1e-7, -2.2e-16, -0.0, 7)] == [
        0.6602, 3.1e-7, 0.0, 0.0, 7]
    assert str(rounded(-2.2e-16)) == "0.0"
    assert compare_name("default", [0, 1], ["late", "concat", "gmu"]) == \
        "compare · default · 2 seeds · 3 operators"
    assert mode_label("cross_modal", ["image"], ["text"]) == "cross_modal · image->text"
    table = metrics_table({"metrics": {"test.accuracy": 0.660167130919, "test.macro_f1": 0.6149,
                                       "robustness.image.missing.relative": 0.5372},
                           "comparison": [{"model": "multimodal late · image+text",
                                           "labels_used": "image+text"}]})
    assert table.splitlines() == [
        "test metrics: multimodal late · image+text (labels used: image+text)",
        "  accuracy  0.6602", "  macro_f1  0.6149"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory, prefect_harness) -> tuple[dict, Path]:
    from flows.compare import compare

    run_dir = tmp_path_factory.mktemp("compare")
    report = compare(overrides=[*FAST, f"run_dir={run_dir}"], seeds=SEEDS, fusions=FUSIONS)
    return report, run_dir


@pytest.mark.slow  # 12 cells through the real flow: ~2 min on an idle 2-core machine
def test_report_cells(compared):
    report, _ = compared
    cells = report["cells"]
    assert len(cells) == len(SEEDS) * (4 + 2)
    assert all(set(c) == CELL_FIELDS for c in cells)
    kinds = {(c["mode"], tuple(c["train_modalities"]), tuple(c["test_modalities"]), c["fusion"])
             for c in cells}
    assert kinds == {
        ("unimodal", ("image",), ("image",), None), ("unimodal", ("text",), ("text",), None),
        ("cross_modal", ("image",), ("text",), None), ("cross_modal", ("text",), ("image",), None),
        ("multimodal", ("image", "text"), ("image", "text"), "late"),
        ("multimodal", ("image", "text"), ("image", "text"), "concat")}
    for c in cells:
        assert 0.0 <= c["test_accuracy"] <= 1.0 and 0.0 <= c["macro_f1"] <= 1.0
        if c["mode"] == "cross_modal":  # never the labels of what it is tested on
            assert c["labels_used"] == c["train_modalities"]
            assert not set(c["labels_used"]) & set(c["test_modalities"])
        if c["mode"] == "multimodal":
            assert c["labels_used"] == ["image", "text"]
    assert {s["fusion"] for s in report["significance"]} == {"late", "concat"}
    assert all(0.0 <= s["p_value"] <= 1.0 and s["seeds"] == SEEDS
               for s in report["significance"])
    assert "±" in report["table"] and "McNemar" in report["table"]


@pytest.mark.slow
def test_transfer_matrix_and_robustness(compared):
    report, _ = compared
    matrix = report["transfer_matrix"]
    assert matrix["rows"] == matrix["columns"] == ["image", "text", "image+text"]
    acc = matrix["accuracy"]
    assert acc[0][2] is None and acc[1][2] is None  # one modality in training, both in test
    assert all(v is not None for row in acc for v in row[:2]) and acc[2][2] is not None
    figures = {(r["mode"], r["fusion"], r["modality"], r["corruption"])
               for r in report["robustness"]}
    for fusion in ("late", "concat"):
        for modality, corruption in [("image", "gaussian_noise"), ("image", "occlusion"),
                                     ("image", "missing"), ("text", "token_dropout"),
                                     ("text", "token_replacement"), ("text", "missing")]:
            assert ("multimodal", fusion, modality, corruption) in figures
    late = [r for r in report["robustness"] if r["mode"] == "multimodal" and r["fusion"] == "late"]
    assert all(r[EFFECTIVE] == 0.0 for r in late)  # its own reference: exactly, not -2.2e-16
    assert all(0.0 <= r[RELATIVE] <= 1.0 and 0.0 <= r[FULLY] <= 1.0
               for r in report["robustness"])
    assert set(report["robustness_columns"]) == {RELATIVE, EFFECTIVE, FULLY}
    # Each fused model fully corrupted, beside the unimodal model of the intact modality.
    fully = {(r["fusion"], r["corrupted"], r["corruption"]): r for r in report["fully_corrupted"]}
    occluded = fully["late", "image", "occlusion"]
    assert occluded["intact_unimodal"] == "unimodal · text"
    assert occluded["difference"] == pytest.approx(occluded[FULLY]
                                                   - occluded["intact_unimodal_accuracy"])
    # The best single modality per level: never below an intact unimodal model, and each fused
    # model's worst gap to it is one of its levels' gaps.
    best = {(r["modality"], r["corruption"], r["level_index"]): r
            for r in report["best_unimodal_curves"]}
    assert len(best) == 6 * 11
    assert all(r["best_unimodal"] >= occluded["intact_unimodal_accuracy"] - 1e-12
               for (m, _, _), r in best.items() if m == "image")
    curves = {(r["fusion"], r["modality"], r["corruption"], r["level_index"]): r["accuracy"]
              for r in report["robustness_curves"] if r["mode"] == "multimodal"}
    for row in report["graceful"]:
        gaps = [curves[row["fusion"], row["corrupted"], row["corruption"], i]
                - best[row["corrupted"], row["corruption"], i]["best_unimodal"]
                for i in range(11)]
        assert row["worst_gap"] == pytest.approx(min(gaps))
        assert row["met"] == (min(gaps) >= -0.02 - 1e-9)
    assert len(report["graceful"]) == 2 * 6


@pytest.mark.slow
def test_one_mlflow_experiment_with_cells_as_children(compared):
    report, run_dir = compared
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    parent = client.get_run(report["compare_run_id"])
    assert parent.data.tags["kind"] == "compare" and parent.info.status == "FINISHED"
    assert parent.info.run_name == "compare · default · 2 seeds · 2 operators"
    experiment = parent.info.experiment_id
    children = client.search_runs([experiment],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_id for r in children) == sorted(c["run_id"] for c in report["cells"])
    for run in children:
        tags = run.data.tags
        assert tags["kind"] == "compare-cell" and "labels_used" in tags
        stages = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        assert {s.data.tags["stage"] for s in stages} == {
            "preprocessing", "feature_extraction", "shared_space", "training", "testing"}
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.json", "transfer_matrix.png", "fusion_operators.png", "robustness_image.png",
            "robustness_text.png", "transfer_matrix.json", "fusion_operators.json",
            "summary.json", "significance.json", "robustness.json",
            "fully_corrupted.json", "graceful.json"} <= artifacts
    saved = json.loads(Path(client.download_artifacts(parent.info.run_id, "report.json",
                                                      str(run_dir))).read_text())
    assert saved["cells"] == json.loads(json.dumps(report["cells"]))
    assert parent.data.metrics["multimodal.late.test_accuracy_mean"] == round(
        next(s["test_accuracy_mean"] for s in report["summary"]
             if s["mode"] == "multimodal" and s["fusion"] == "late"), 4)  # rounded as shown


@pytest.mark.slow
def test_the_parent_explains_itself_and_the_cells_register_nothing(compared):
    """Its description says what ran, links Prefect, holds the headline and links every table
    and plot; its params are what every cell shares; no cell registered a model."""
    report, run_dir = compared
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    parent = client.get_run(report["compare_run_id"])
    note = parent.data.tags["mlflow.note.content"]
    assert "on seeds 0, 1: 12 cells" in note and "(late, concat)" in note
    assert "Prefect flow run: [http" in note
    assert "| multimodal late · image+text&emsp; | image+text&emsp; | 2&emsp; |" in note
    assert "#### **Fused − best unimodal** (unimodal · " in note and "McNemar p" in note
    for artifact in ("summary.json", "significance.json", "robustness.json",
                     "robustness_image.png", "transfer_matrix.png"):
        assert f"/artifacts/{artifact}?workflowType=machine_learning)" in note
    assert "`effective_robustness_sum_over_11_levels`: sum over the 11 levels" in note
    params = parent.data.params
    assert not {"seed", "training.mode", "training.modality", "training.fusion"} & set(params)
    assert params["training.epochs"] == "4" and params["training.register_model"] == "False"
    cell = client.get_run(report["cells"][0]["run_id"])
    assert cell.info.run_name == "multimodal late · image+text · seed 0"
    assert {k: cell.data.tags[k] for k in ("mode", "fusion", "seed", "labels_used")} == {
        "mode": "multimodal", "fusion": "late", "seed": "0", "labels_used": "image+text"}
    # Cells log their models with their runs and register none (no --register).
    assert client.search_registered_models() == []
    training = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{cell.info.run_id}' "
                                  "and tags.stage = 'training'")[0]
    assert training.data.tags["model.uri"]  # logged with the training run
    # MLflow's own empty `Default` experiment is hidden: the home page lists mmpipe's only.
    assert [e.name for e in client.search_experiments()] == ["default"]


@pytest.mark.slow
def test_prefect_names_tags_and_publishes_the_comparison(compared):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    report, run_dir = compared
    parent = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}").get_run(report["compare_run_id"])
    flow_run_id = parent.data.tags["prefect.flow_run_id"]
    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(flow_run_id)
        cells = prefect.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        artifacts = prefect.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert flow_run.name == "compare · default · 2 seeds · 2 operators"
    assert {"compare", "default", "fusion:late", "fusion:concat", "seed:0", "seed:1"} <= \
        set(flow_run.tags)
    # 12 cells, 12 names, each tagged with its mode, operator or modality, and seed.
    assert len({c.name for c in cells}) == len(cells) == 12
    concat = next(c for c in cells if c.name == "multimodal concat · image+text · seed 1")
    assert {"comparison", "multimodal", "fusion:concat", "seed:1"} <= set(concat.tags)
    (artifact,) = [a for a in artifacts if a.key == "mmpipe-compare-default"]
    assert report["run_url"] in artifact.data and "**Fused − best unimodal**" in artifact.data
    assert "| multimodal late · image+text | image+text | 2 |" in artifact.data  # no &emsp;


@pytest.mark.slow
def test_cells_of_a_seed_share_upstream_stages(compared):
    report, run_dir = compared
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_run(report["compare_run_id"]).info.experiment_id

    def stages(cell: dict) -> dict:
        runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{cell['run_id']}'")
        return {r.data.tags["stage"]: r.data.tags for r in runs}

    by = {(c["mode"], c["train_modalities"][0], c["fusion"], c["seed"]): c
          for c in report["cells"]}
    uni = stages(by["unimodal", "image", None, 0])
    cross = stages(by["cross_modal", "image", None, 0])
    for stage in ("preprocessing", "feature_extraction", "shared_space"):
        assert uni[stage]["cache.key"] == cross[stage]["cache.key"]
        assert cross[stage]["cache"] == "hit"
    assert uni["training"]["cache.key"] != cross["training"]["cache.key"]
    # The anchored space took the labelled image encoder from the joint space's output.
    assert uni["feature_extraction"]["encoders.reused_from"].endswith(
        stages(by["multimodal", "image", "late", 0])["feature_extraction"]["cache.key"])
    late = stages(by["multimodal", "image", "late", 0])
    concat = stages(by["multimodal", "image", "concat", 0])
    assert late["shared_space"]["cache.key"] == concat["shared_space"]["cache.key"]
    assert late["shared_space"]["cache.key"] != uni["shared_space"]["cache.key"]
    assert concat["shared_space"]["cache"] == "hit"
    cell = by["multimodal", "image", "late", 0]["run_id"]
    testing = client.search_runs(
        [experiment], f"tags.mlflow.parentRunId = '{cell}' and tags.stage = 'testing'")
    history = client.get_metric_history(testing[0].info.run_id, "curves/robustness.image.occlusion")
    assert [m.step for m in history] == list(range(11))


def test_on_a_cluster_anchored_cells_wait_for_the_joint_space_of_their_seed():
    from flows.compare import after_joint_space

    cells = plan_cells([0, 1], ["late", "gmu"])
    after = after_joint_space(cells)
    by_name = {c.name: c for c in cells}
    assert after(by_name["multimodal-gmu-seed0"]) == []
    assert after(by_name["unimodal-text-seed0"]) == [by_name["multimodal-late-seed0"]]
    assert after(by_name["cross_modal-image-seed1"]) == [by_name["multimodal-late-seed1"]]
    assert after_joint_space(plan_cells([0], []))(Cell("unimodal", "image", None, 0)) == []

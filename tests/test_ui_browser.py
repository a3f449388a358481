"""What a reviewer sees, checked in a real browser (Debian's headless Chromium, driven by
Playwright): the MLflow UI on a finished run directory's store (`mmpipe run`, then `mmpipe
compare`), and the run directory's Prefect server with the flow runs of both. The pipeline run,
the comparison's parent, the runs table, the registered model, and in Prefect the pipeline's and
the comparison's flow runs. Screenshots are kept under $MMPIPE_TEST_ARTIFACTS (or
tests/artifacts/ui_browser/) for a person to look at."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest
from browser import artifacts_dir, chromium_page
from mlflow import MlflowClient
from servers import mlflow_server

from mmcore.config import STAGES
from tasks.tracking.run_summary import experiment_link
from tasks.tracking.run_summary import run_link as mlflow_run_route

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shots():
    return artifacts_dir("ui_browser")


@pytest.fixture(scope="module")
def store(finished_run):
    client = MlflowClient(finished_run.tracking_uri)
    experiment = client.get_experiment_by_name("default")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    first = parents[0]  # `mmpipe run`: every stage ran
    children = {r.data.tags["stage"]: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == first.info.run_id}
    compare = next(r for r in parents if r.data.tags.get("kind") == "compare")
    return {"client": client, "experiment": experiment, "parent": first, "children": children,
            "compare": compare}


@pytest.fixture(scope="module")
def mlflow_ui(finished_run, tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-ui"), finished_run.tracking_uri,
                       proxy_artifacts=False) as server:
        yield server.url


@pytest.fixture(scope="module")
def page(mlflow_ui):
    """The browser (closed before the servers it looked at stop)."""
    with chromium_page() as page:
        yield page


def table_link(page, run_id: str):
    """The runs table's link to one run."""
    return page.locator(f"a[href$='/runs/{run_id}']").first


def close_assistant(page) -> None:
    """MLflow 3.17 opens its Assistant beside every page; closed, the page has the width."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count() and close.first.is_visible():
        close.first.click()


@pytest.fixture(autouse=True)
def final_screenshot(request, page, shots):
    """Every test leaves a screenshot of where it ended, passed or failed."""
    yield
    page.screenshot(path=shots / f"{request.node.name}.png")


def test_mlflow_home_lists_only_the_experiment_mmpipe_made(page, mlflow_ui, store, shots):
    page.goto(f"{mlflow_ui}/#/?workflowType=machine_learning")
    page.get_by_role("link", name="default", exact=True).first.wait_for()
    assert page.get_by_role("link", name="Default", exact=True).count() == 0  # deleted, empty
    page.screenshot(path=shots / "mlflow_home.png")


def test_mlflow_experiment_opens_on_named_runs_with_their_stage_runs(page, mlflow_ui, store,
                                                                    shots):
    exp = store["experiment"].experiment_id
    # As the links mmpipe writes: the model-training view (MLflow 3.17 picks GenAI or
    # model-training views per browser) and the saved view with mmpipe's columns.
    page.goto(f"{mlflow_ui}/{experiment_link(exp)}")
    parent = store["parent"]
    assert parent.info.run_name == "default · multimodal late · image+text"
    link = table_link(page, parent.info.run_id)
    link.wait_for()
    assert link.inner_text() == parent.info.run_name
    close_assistant(page)
    headers = {h.strip() for h in page.locator("[role=columnheader]").all_inner_texts()}
    assert {"test.accuracy", "mode", "fusion"} <= headers, headers
    # The "+" beside the parent's name shows its stage runs nested under it.
    page.locator("[role=gridcell]", has=link).get_by_role("button").first.click()
    for stage, run in store["children"].items():
        child = table_link(page, run.info.run_id)
        child.wait_for()
        assert child.inner_text() == run.info.run_name == f"{STAGES.index(stage) + 1}-{stage}"
    page.screenshot(path=shots / "mlflow_runs.png")


def test_mlflow_parent_run_says_what_it_is_and_links_its_parts(page, mlflow_ui, store, shots):
    parent = store["parent"]
    tags = parent.data.tags
    assert {k: tags[k] for k in ("mode", "fusion", "train_modalities", "test_modalities",
                                 "data.source", "labels_used")} == {
        "mode": "multimodal", "fusion": "late", "train_modalities": "image+text",
        "test_modalities": "image+text", "data.source": "digits", "labels_used": "image+text"}
    assert tags["cache"] == "5 miss"
    exp = store["experiment"].experiment_id
    page.goto(f"{mlflow_ui}/{mlflow_run_route(exp, parent.info.run_id)}")
    page.get_by_role("heading", name=parent.info.run_name).first.wait_for()
    page.get_by_role("link", name="5-testing").first.wait_for()  # in the description
    page.get_by_role("link", name=re.compile(r"mmpipe-classifier version \d+")).wait_for()
    page.get_by_role("link", name=re.compile("flow-run")).wait_for()
    page.screenshot(path=shots / "mlflow_parent_run.png", full_page=True)


def image_artifact(page, mlflow_ui: str, store, stage: str, name: str, shot) -> None:
    """Open a stage run's PNG artifact and wait until the image has loaded."""
    exp, run = store["experiment"].experiment_id, store["children"][stage].info.run_id
    page.goto(f"{mlflow_ui}/#/experiments/{exp}/runs/{run}/artifacts/{name}"
              "?workflowType=machine_learning")
    image = page.locator(f"img[src^='blob:'], img[src*='{name}']").first
    image.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 100",
                           arg=image.element_handle())
    page.screenshot(path=shot)


def test_mlflow_stage_runs_show_their_plots(page, mlflow_ui, store, shots):
    image_artifact(page, mlflow_ui, store, "testing", "confusion.png", shots / "confusion.png")
    # The shared space belongs to the stage that learned it; curves overlay train and val.
    image_artifact(page, mlflow_ui, store, "shared_space", "shared_space.png",
                   shots / "shared_space.png")
    image_artifact(page, mlflow_ui, store, "training", "curves_training.png",
                   shots / "curves_training.png")
    artifacts = {a.path for a in store["client"].list_artifacts(
        store["children"]["testing"].info.run_id)}
    assert {"comparison.json", "per_class.json"} <= artifacts
    assert "summary/best_epoch" in store["children"]["training"].data.metrics
    assert {"summary/image.best_epoch", "summary/text.best_epoch"} <= \
        set(store["children"]["feature_extraction"].data.metrics)


def test_mlflow_stage_run_charts_show_the_curves_above_the_single_values(page, mlflow_ui, store,
                                                                         shots):
    """MLflow makes a chart section per key prefix (before the last "/"), unprefixed keys last:
    curves/ comes first, the single values' bar charts in summary/ below it."""
    exp, run = store["experiment"].experiment_id, store["children"]["training"]
    assert {"curves/train_expert_nll_sum", "curves/train_nll", "curves/val_nll",
            "summary/val_acc"} <= set(run.data.metrics)
    page.goto(f"{mlflow_ui}/#/experiments/{exp}/runs/{run.info.run_id}/model-metrics"
              "?workflowType=machine_learning")
    page.get_by_text("summary", exact=True).first.wait_for()
    headers = page.get_by_test_id("experiment-view-compare-runs-section-header")
    sections = [text.split("(")[0].strip() for text in headers.all_inner_texts()]
    assert sections[:2] == ["curves", "summary"], sections
    page.get_by_text("train_expert_nll_sum", exact=True).first.wait_for()
    page.screenshot(path=shots / "mlflow_training_charts.png")


def test_mlflow_compare_parent_explains_itself(page, mlflow_ui, store, shots):
    """Its description: what ran, the Prefect link, the headline table, links to every table
    and plot; one of the plots, opened from there."""
    compare = store["compare"]
    assert compare.info.run_name == "compare · default · seed 0 · late"
    exp = store["experiment"].experiment_id
    page.goto(f"{mlflow_ui}/{mlflow_run_route(exp, compare.info.run_id)}")
    page.get_by_role("heading", name=compare.info.run_name).first.wait_for()
    close_assistant(page)
    expand = page.get_by_label("Expand description")
    if expand.count():
        expand.first.click()
    page.get_by_text("on seed 0: 5 cells", exact=False).first.wait_for()
    page.get_by_role("link", name=re.compile("flow-run")).first.wait_for()
    page.get_by_role("heading", name="Test accuracy (mean ± std over seeds)").wait_for()
    for model in ("multimodal late · image+text", "unimodal · image", "unimodal · text"):
        page.get_by_role("cell", name=model).first.wait_for()
    page.get_by_role("heading", name=re.compile("Fused − best unimodal")).wait_for()
    page.get_by_role("columnheader", name="McNemar p").wait_for()
    page.screenshot(path=shots / "mlflow_compare_description.png")
    plot = page.get_by_role("link", name="robustness image", exact=True)
    page.goto(f"{mlflow_ui}/{plot.get_attribute('href')}")  # the UI opens it in a new tab
    image = page.locator("img[src^='blob:'], img[src*='robustness_image.png']").first
    image.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 100",
                           arg=image.element_handle())
    page.screenshot(path=shots / "mlflow_compare_robustness_image.png")


def test_registered_model_shows_its_champion_and_one_version(page, mlflow_ui, store, shots):
    """After `mmpipe run` and `mmpipe compare`: one version (the cells registered none), the
    champion, and a model that says what it is."""
    client = store["client"]
    versions = client.search_model_versions("name = 'mmpipe-classifier'")
    assert [str(v.version) for v in versions] == ["1"]
    champion = client.get_model_version_by_alias("mmpipe-classifier", "champion")
    assert (champion.tags["mode"], champion.tags["fusion"]) == ("multimodal", "late")
    # The few a reviewer filters on (the rest is in the description), and the accuracy the
    # champion was promoted with, which the nightly gate measures degradation from.
    assert set(champion.tags) == {"mode", "fusion", "registered_by", "data.digest",
                                  "content.digest", "test.accuracy", "champion.accuracy"}
    page.goto(f"{mlflow_ui}/#/models/mmpipe-classifier?workflowType=machine_learning")
    page.get_by_role("link", name=re.compile(r"Version \d+")).first.wait_for()
    close_assistant(page)
    assert page.get_by_role("link", name=re.compile(r"Version \d+")).count() == 1
    page.get_by_text("The mmpipe classifier").wait_for()
    page.get_by_title("champion", exact=True).first.wait_for()
    page.screenshot(path=shots / "mlflow_model.png", full_page=True)
    page.goto(f"{mlflow_ui}/#/models/mmpipe-classifier/versions/{champion.version}"
              "?workflowType=machine_learning")
    page.get_by_role("heading", name=f"Version {champion.version}").wait_for()
    for alias in ("champion", "candidate"):  # the alias tags beside "Aliases:"
        page.get_by_title(alias, exact=True).wait_for()
    page.get_by_text("multimodal · late fusion: trained on image+text").wait_for()
    page.get_by_text("champion decision: promoted: first champion").wait_for()
    page.screenshot(path=shots / "mlflow_model_version.png", full_page=True)


def test_prefect_ui_shows_the_named_flow_run_with_its_task_runs_and_artifact(page, finished_run,
                                                                            store, shots):
    server = finished_run.prefect
    with urllib.request.urlopen(f"{server['ui_url']}/ui-settings", timeout=10) as response:
        settings = json.loads(response.read())
    assert settings["api_url"] == server["api_url"]  # the UI talks to its own API
    flow_run = store["parent"].data.tags["prefect.flow_run_id"]
    page.goto(f"{server['ui_url']}/runs")
    page.get_by_text("default · multimodal late · image+text", exact=True).first.wait_for()
    page.get_by_text("cross_modal · image->text · seed 0", exact=True).first.wait_for()
    page.screenshot(path=shots / "prefect_runs.png")
    page.goto(f"{server['ui_url']}/runs/flow-run/{flow_run}")
    page.get_by_text("Task Runs", exact=True).click()
    for stage in store["children"]:
        page.get_by_text(stage, exact=True).first.wait_for()  # named after the stage
    page.screenshot(path=shots / "prefect_flow_run.png")
    page.get_by_text("Artifacts", exact=True).click()
    page.get_by_text("mmpipe-default").first.wait_for()
    page.screenshot(path=shots / "prefect_artifacts.png")


def test_prefect_compare_flow_run_is_named_tagged_and_publishes_the_headline(page, finished_run,
                                                                            store, shots):
    server, compare = finished_run.prefect, store["compare"]
    flow_run = compare.data.tags["prefect.flow_run_id"]
    page.goto(f"{server['ui_url']}/runs/flow-run/{flow_run}")
    page.get_by_text("compare · default · seed 0 · late", exact=True).first.wait_for()
    for tag in ("compare", "fusion:late", "seed:0"):
        page.get_by_text(tag, exact=True).first.wait_for()
    page.get_by_text("Subflow Runs", exact=True).click()
    page.get_by_text("unimodal · text · seed 0", exact=True).first.wait_for()
    page.screenshot(path=shots / "prefect_compare_flow_run.png")
    page.get_by_text("Artifacts", exact=True).click()
    page.get_by_text("mmpipe-compare-default").first.click()
    page.get_by_role("cell", name="multimodal late · image+text").first.wait_for()
    page.get_by_role("link", name=re.compile(compare.info.run_id)).wait_for()  # to MLflow
    page.screenshot(path=shots / "prefect_compare_artifact.png", full_page=True)

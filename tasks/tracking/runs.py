"""MLflow for the pipeline: one experiment per config name, a parent run per pipeline run, a child
run per stage (also on a cache hit).

Everything goes through `MlflowClient` with explicit run ids: MLflow's active run is per thread,
and Prefect may run a task in a worker thread.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.store.db.db_types import DATABASE_ENGINES
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE

from mmcore.config import STAGE_SECTION, STAGES, PipelineConfig, flatten
from mmcore.io import locks
from mmcore.uris import public_uri

# Without it, MLflow 3's UI opens an experiment on its GenAI views instead of the runs table.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# The runs table as a reviewer wants it first: test accuracy and macro F1, mode, fusion operator
# and seed beside each run's name. MLflow 3.17 keeps a table's columns per browser; a saved view
# (an experiment tag `mlflow.sharedViewState.<key>`, in the UI's "Views" menu) holds them, and a
# link opens it with `?viewStateShareKey=<key>`.
RUNS_VIEW_KEY = "mmpipe-runs"
RUNS_VIEW_NAME = "mmpipe: test accuracy, mode, fusion, seed"
RUNS_VIEW_STATE = {
    "searchFilter": "", "orderByKey": "attributes.start_time", "orderByAsc": False,
    "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [],
    "modelVersionFilter": "All Runs",
    "selectedColumns": ["attributes.`Models`", "metrics.`test.accuracy`",
                        "metrics.`test.macro_f1`", "tags.`mode`", "tags.`fusion`", "tags.`seed`"],
}

log = logging.getLogger(__name__)


def tracking_uri(run_dir: str | Path) -> str:
    """MLFLOW_TRACKING_URI if set, else a SQLite store inside the run directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (
        f"sqlite:///{(Path(run_dir) / 'mlflow.db').resolve()}")


def create_store(run_dir: str | Path) -> None:
    """Create the tracking URI's SQLite store and its tables once, one process at a time.

    MLflow creates a new store by running its schema migrations; two runs started together in a
    fresh run directory both did, and one failed ("table secrets already exists", or "Online
    migration expected to match one row"). So the first creates it under a lock next to the
    database (`locks/mlflow.db.lock`) and then leaves a `.ready` file, which spares later runs
    the lock and a query (~16 ms). Other stores (a tracking server, PostgreSQL) are their
    owner's business. Every flow calls this first (`tasks/engine/recovery.py:begin`)."""
    uri = tracking_uri(run_dir)
    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri.removeprefix("sqlite:///"))
    lock = database.parent / "locks" / f"{database.name}.lock"
    ready = lock.with_suffix(".ready")
    if database.exists() and ready.exists():
        return
    with locks.exclusive(lock):
        MlflowClient(uri).search_experiments(max_results=1)  # creates and migrates, or checks
        ready.write_text(str(database))


def client_for(cfg: PipelineConfig) -> MlflowClient:
    return MlflowClient(tracking_uri(cfg.run_dir))


@contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API pointed at `uri` for a block. `mlflow.set_tracking_uri` also sets
    MLFLOW_TRACKING_URI in the environment, which would otherwise outlive the block and steer
    every later run (in any run directory) to this store."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def has_artifact_store(uri: str) -> bool:
    """Whether the tracking URI names a service with an artifact store of its own (a tracking
    server at http(s)://, Databricks, ...), which every colleague reads. A database or folder
    that the client writes itself (sqlite:, postgresql+psycopg2:, file:, a plain path) has none.
    """
    scheme = urlparse(uri).scheme.split("+")[0].lower()
    if scheme in (*DATABASE_ENGINES, "file"):
        return False
    if scheme == "":  # a plain path, or a profile name such as `databricks`
        return uri.startswith("databricks")
    return True


def artifact_location(cfg: PipelineConfig) -> str | None:
    """Where a new experiment keeps its artifacts: the server's own store (None: the server
    decides, e.g. `mlflow-artifacts:/` proxied to its --artifacts-destination), or, for a store
    the client writes itself, `<run_dir>/mlartifacts/<name>` (MLflow's default would be
    `./mlruns` under whatever folder the command ran in)."""
    if has_artifact_store(tracking_uri(cfg.run_dir)):
        return None
    return (Path(cfg.run_dir) / "mlartifacts" / cfg.name).resolve().as_uri()


def experiment_id(client: MlflowClient, cfg: PipelineConfig) -> str:
    """The config's experiment, created on first use."""
    exp = client.get_experiment_by_name(cfg.name)
    if exp is None:
        try:
            created = client.create_experiment(cfg.name, artifact_location=artifact_location(cfg),
                                               tags=EXPERIMENT_KIND)
            _first_contact(client, cfg, created)
            return created
        except mlflow.exceptions.MlflowException:  # created meanwhile by another process
            exp = client.get_experiment_by_name(cfg.name)
    if "mlflow.experimentKind" not in exp.tags:  # made before the kind was set
        client.set_experiment_tag(exp.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
    if f"mlflow.sharedViewState.{RUNS_VIEW_KEY}" not in exp.tags:
        _first_contact(client, cfg, exp.experiment_id)
    if exp.artifact_location.startswith("file:") and \
            has_artifact_store(tracking_uri(cfg.run_dir)):
        log.warning("MLflow experiment %r keeps its artifacts at %s, on the disk of the machine "
                    "that created it: colleagues using %s cannot open its plots or models. "
                    "An experiment's artifact location cannot change; use another config name "
                    "for a new experiment in the server's artifact store.", cfg.name,
                    exp.artifact_location, public_uri(tracking_uri(cfg.run_dir)))
    return exp.experiment_id


def _first_contact(client: MlflowClient, cfg: PipelineConfig, experiment: str) -> None:
    """What MLflow's UI shows first: the runs table's columns (`RUNS_VIEW_STATE`), and on a
    store of this run folder only mmpipe's experiments: MLflow's own `Default` experiment is
    deleted (hidden; `mlflow experiments restore --experiment-id 0` brings it back) while it
    holds no run. A tracking server's `Default` is the team's: left alone."""
    now = int(time.time() * 1000)
    client.set_experiment_tag(experiment, f"mlflow.sharedViewState.{RUNS_VIEW_KEY}", json.dumps(
        {"name": RUNS_VIEW_NAME, "createdAt": now, "updatedAt": now,
         "state": json.dumps(RUNS_VIEW_STATE)}))
    client.set_experiment_tag(experiment, MLFLOW_RUN_NOTE, (
        f"mmpipe's runs of config `{cfg.name}`: each `mmpipe run`, and each `mmpipe compare` or "
        f"`sweep` with its cells below it. Runs → Views → \"{RUNS_VIEW_NAME}\" shows test "
        f"accuracy, mode, fusion and seed as columns ([open it](#/experiments/{experiment}/runs?"
        f"viewStateShareKey={RUNS_VIEW_KEY}&workflowType=machine_learning))."))
    if has_artifact_store(tracking_uri(cfg.run_dir)):
        return
    try:
        default = client.get_experiment("0")
        if default.lifecycle_stage == "active" and not client.search_runs(["0"], max_results=1):
            client.delete_experiment("0")
    except mlflow.exceptions.MlflowException:  # no Default, or another process deleted it
        pass


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_parent_run(cfg: PipelineConfig, flow_run_id: str | None, run_name: str,
                     tags: dict[str, str], parent: str | None = None,
                     params: dict[str, str] | None = None) -> str:
    """A top-level run (a pipeline run, a comparison, a sweep): the resolved config as params
    (or `params`: a comparison's, only what its cells share); flow-run id, commit, config
    digest, run folder and host as tags, beside `tags`. `parent`: the run it is nested under (a
    comparison's cell is a child of the comparison)."""
    client = client_for(cfg)
    tags = {
        "prefect.flow_run_id": flow_run_id or "",
        "git.commit": git_commit(),
        "config.digest": cfg.digest(),
        # Where the stage outputs (and the Parquet files recorded as datasets) are: a path on
        # this host, or on the shared folder that a team or a cluster uses as run folder.
        "mmpipe.run_dir": str(Path(cfg.run_dir).resolve()),
        "mmpipe.host": socket.gethostname(),
        **({MLFLOW_PARENT_RUN_ID: parent} if parent else {}),
        **tags,
    }
    run = client.create_run(experiment_id(client, cfg), run_name=run_name, tags=tags)
    log_params_and_metrics(client, run.info.run_id, cfg.flat() if params is None else params)
    return run.info.run_id


def log_params_and_metrics(client: MlflowClient, run_id: str, params: dict[str, Any],
                           metrics: list[Metric] | None = None) -> None:
    """Params in batches of 100 (MLflow's limit per call); `metrics` ride with the first.
    A value that is a URI with credentials (`dask.address`) is logged without them."""
    items = [Param(k, public_uri(str(v))[:6000]) for k, v in params.items()]
    for start in range(0, max(len(items), 1), 100):
        client.log_batch(run_id, params=items[start:start + 100],
                         metrics=(metrics or []) if start == 0 else [])


@functools.lru_cache(maxsize=64)
def _parent_facts(uri: str, parent_run_id: str) -> tuple[str, str]:
    """(experiment id, Prefect flow-run id) of a parent run; neither changes once written."""
    parent = MlflowClient(uri).get_run(parent_run_id)
    return parent.info.experiment_id, parent.data.tags.get("prefect.flow_run_id", "")


def start_child_run(cfg: PipelineConfig, parent_run_id: str, stage: str, key: str,
                    cache: str, tags: dict[str, str] | None = None,
                    metrics: dict[str, float] | None = None) -> str:
    """The stage's run under the parent: its config section as params, plus `tags` and
    `metrics` known at the start (a cache hit knows all of them: three store writes in all)."""
    client = client_for(cfg)
    experiment, flow_run_id = _parent_facts(tracking_uri(cfg.run_dir), parent_run_id)
    name = stage_run_name(stage)
    run = client.create_run(experiment, run_name=name, tags={
        MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: name,
        "stage": stage, "cache": cache, "cache.key": key,
        "config.digest": cfg.digest(),
        "prefect.flow_run_id": flow_run_id,
        **(tags or {}),
    })
    log_params_and_metrics(client, run.info.run_id, stage_params(cfg, stage),
                           _metrics(metrics or {}))
    return run.info.run_id


def stage_run_name(stage: str) -> str:
    """`1-preprocessing` … `5-testing`: sorted as they ran."""
    return f"{STAGES.index(stage) + 1}-{stage}"


def stage_params(cfg: PipelineConfig, stage: str) -> dict[str, Any]:
    """The stage's config section under the names the parent run uses (`training.epochs`), so
    that the runs table shows one column per setting."""
    values = cfg.section(stage)
    shared = {k: values.pop(k) for k in ("seed", "device")}
    return {**shared, **flatten({STAGE_SECTION[stage]: values})}


def produced_by_note(cfg: PipelineConfig, run_id: str | None) -> str:
    """A cache-hit run's description: a link to the run that produced the output it reuses."""
    try:
        experiment = client_for(cfg).get_run(run_id).info.experiment_id
    except (mlflow.exceptions.MlflowException, TypeError):
        return f"Cache hit: the output was produced by run `{run_id}`."
    return (f"Cache hit: the output was produced by run "
            f"[{run_id}](#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning);"
            f" its files are this run's "
            f"datasets.")


# Metric key prefixes: MLflow's charts group keys by what precedes the last "/" into sections,
# sorted by name, with unprefixed keys last ("Model metrics"). Per-step series (an epoch, a noise
# level) go under CURVES, and a stage's single values under SUMMARY, so the curves come first and
# the single values' bar charts sit in a section of their own below them.
CURVES = "curves/"
SUMMARY = "summary/"


def _metrics(metrics: dict[str, float], step: int = 0) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in metrics.items()
            if isinstance(v, int | float)]


def log_metrics(cfg: PipelineConfig, run_id: str, metrics: dict[str, float],
                step: int = 0) -> None:
    items = _metrics(metrics, step)
    if items:
        client_for(cfg).log_batch(run_id, metrics=items)


def log_series(cfg: PipelineConfig, run_id: str, series: dict[str, list[float]],
               prefix: str = CURVES) -> None:
    """Curves over something else than epochs (accuracy per corruption level), in one write:
    `<prefix><name>`, step = the value's index."""
    now = int(time.time() * 1000)
    items = [Metric(f"{prefix}{name}", float(v), now, step)
             for name, values in series.items() for step, v in enumerate(values)]
    if items:
        client_for(cfg).log_batch(run_id, metrics=items)


class EpochLogger:
    """Per-epoch metrics with `step=epoch`, named `curves/<prefix><name>`, sent in batches: one
    store write every `interval` seconds instead of one per epoch (a SQLite write costs ~10 ms
    here; fusion has 30 epochs)."""

    def __init__(self, cfg: PipelineConfig, run_id: str, prefix: str = "",
                 interval: float = 2.0):
        self.cfg, self.run_id, self.prefix, self.interval = cfg, run_id, prefix, interval
        self.pending: list[Metric] = []
        self.last_flush = time.monotonic()
        self.history: dict[str, list[dict[str, float]]] = {}  # per prefix: one record an epoch

    def __call__(self, epoch: int, record: dict[str, float], prefix: str | None = None) -> None:
        prefix = self.prefix if prefix is None else prefix
        self.history.setdefault(prefix, []).append(dict(record))
        now = int(time.time() * 1000)
        self.pending += [Metric(f"{CURVES}{prefix}{k}", float(v), now, epoch)
                         for k, v in record.items()]
        if time.monotonic() - self.last_flush > self.interval:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            client_for(self.cfg).log_batch(self.run_id, metrics=self.pending)
        self.pending, self.last_flush = [], time.monotonic()


def set_tags(cfg: PipelineConfig, run_id: str, tags: dict[str, str]) -> None:
    client_for(cfg).log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_parquet_inputs(cfg: PipelineConfig, run_id: str, files: list[Path], key: str,
                       context: str) -> None:
    """Record Parquet files as MLflow datasets (metadata only: the data stays where it is)."""
    inputs = []
    for path in files:
        stat = path.stat()
        digest = hashlib.sha256(f"{key}:{path.name}:{stat.st_size}".encode()).hexdigest()[:16]
        dataset = MetaDataset(LocalArtifactDatasetSource(str(path.resolve())),
                              name=f"{path.parent.parent.name}/{path.stem}", digest=digest)
        inputs.append(DatasetInput(dataset._to_mlflow_entity(),
                                   [InputTag("mlflow.data.context", context)]))
    if inputs:
        client_for(cfg).log_inputs(run_id, datasets=inputs)


def log_artifacts(cfg: PipelineConfig, run_id: str, paths: list[Path]) -> None:
    client = client_for(cfg)
    for path in paths:
        client.log_artifact(run_id, str(path))


def end_run(cfg: PipelineConfig, run_id: str, status: str = "FINISHED") -> None:
    client_for(cfg).set_terminated(run_id, status)


@contextmanager
def ended(cfg: PipelineConfig, run_id: str) -> Iterator[str]:
    """The MLflow run ends FINISHED when the block completes, FAILED when it raises (or is
    interrupted)."""
    try:
        yield run_id
    except BaseException:
        end_run(cfg, run_id, "FAILED")
        raise
    end_run(cfg, run_id)

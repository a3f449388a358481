"""What a crashed run leaves behind, found and cleaned up by the next run in the same run directory.

A run killed outright (SIGKILL, the OOM killer, a power cut) cannot clean up after itself. It
leaves its Prefect flow run and task runs Running, its MLflow parent and stage runs RUNNING, and
temporary files and folders. Its outputs are safe: a stage folder exists only once complete
(`tasks/engine/skeleton.py`), and the stage locks die with their process (`tasks/engine/locks.py`).

So every pipeline run starts with `begin`, which (after creating a new MLflow SQLite store,
`tasks/tracking/runs.py:create_store`)
1. looks at the records of runs in progress, `<run_dir>/running/<flow run id>.json`, and for
   each whose process is gone: sets its Prefect flow run and unfinished task runs to Crashed,
   and its RUNNING MLflow runs (tag `prefect.flow_run_id`) to KILLED, with a note saying why;
2. removes temporary stage folders (`stages/<stage>/.<key>.<pid>-<id>.tmp`) whose stage lock
   nobody holds, and loose `.<name>.<pid>-<id>.tmp` files whose writer is gone;
3. records this run as in progress; `end` removes the record when the run finishes.

Owners are (host, pid, process create time; `mmcore/io/processes.py`): a pid reused by another
process is not the owner. A record from another host is left alone (its process cannot be
checked from here).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from logging import Logger, LoggerAdapter
from pathlib import Path
from typing import Any

from mmcore.config import PipelineConfig
from mmcore.io import processes
from mmcore.io.parquet import write_json
from mmcore.uris import public_uri
from tasks.engine import locks
from tasks.tracking import runs

RECORDS = "running"
# `.<name>.<pid>-<8 hex>.tmp`; the stage folders' <name> is the cache key.
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")
# Temporary files without a pid (older versions): stale when this much older than the run.
_UNOWNED_AGE_S = 3600


def owner() -> dict[str, Any]:
    """This process, as recorded in a run record: host, pid and create time."""
    return {"host": socket.gethostname(), **processes.identity()}


def alive(who: dict[str, Any]) -> bool:
    """Whether the recorded process still runs (True when it cannot be told: another host, or a
    record without a create time)."""
    if who.get("host") != socket.gethostname():
        return True
    return processes.same_process(int(who["pid"]), who.get("create_time")) is not False


def _records(run_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted((run_dir / RECORDS).glob("*.json")):
        try:
            found.append((path, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue  # being written right now, or removed meanwhile
    return found


def _prefect_api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return public_uri(PREFECT_API_URL.value() or "")


def _store_uri(cfg: PipelineConfig, recorded: str) -> str:
    """The MLflow store a record names, to connect to: records hold URIs without credentials
    (`public_uri`), so the store this run uses, credentials and all, when it is the same one."""
    current = runs.tracking_uri(cfg.run_dir)
    return current if public_uri(current) == recorded else recorded


def _crash_prefect_runs(record: dict[str, Any], note: str) -> list[str]:
    """The crashed run's flow run and its unfinished task runs -> Crashed, on the server this
    run uses (the same one, or the run directory's local server restarted on another port)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    unfinished = [StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED]
    flow_run_id = UUID(record["flow_run_id"])
    done = []
    with get_client(sync_client=True) as client:
        try:
            flow_run = client.read_flow_run(flow_run_id)
        except ObjectNotFound:  # e.g. it ran on a temporary server, gone with its process
            where = record.get("prefect_api_url") or "a temporary server"
            return [f"Prefect flow run {flow_run_id}: not on this server (it ran on {where})"]
        if flow_run.state is not None and flow_run.state.type in unfinished:
            client.set_flow_run_state(flow_run_id, Crashed(message=note), force=True)
            done.append(f"Prefect flow run {flow_run.name} ({flow_run_id}): "
                        f"{flow_run.state.name} -> Crashed")
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(state=TaskRunFilterState(
                type=TaskRunFilterStateType(any_=unfinished))))
        for task_run in tasks:
            client.set_task_run_state(task_run.id, Crashed(message=note), force=True)
            done.append(f"Prefect task run {task_run.name}: {task_run.state.name} -> Crashed")
    return done


def _kill_mlflow_runs(record: dict[str, Any], note: str) -> list[str]:
    """The crashed run's RUNNING MLflow runs (parent and stages) -> KILLED, with the note."""
    from mlflow import MlflowClient

    client = MlflowClient(record["tracking_uri"])
    experiment = client.get_experiment_by_name(record["experiment"])
    if experiment is None:
        return []
    running = client.search_runs(
        [experiment.experiment_id],
        f"tags.prefect.flow_run_id = '{record['flow_run_id']}' "
        "and attributes.status = 'RUNNING'")
    done = []
    for run in running:
        client.set_tag(run.info.run_id, "mmpipe.recovery", note)
        client.set_terminated(run.info.run_id, "KILLED")
        done.append(f"MLflow run {run.info.run_name} ({run.info.run_id}): RUNNING -> KILLED")
    return done


def _stale_stage_folders(run_dir: Path) -> list[Path]:
    """Temporary stage folders whose key's lock is free: nobody is writing them."""
    removed = []
    for path in sorted((run_dir / "stages").glob("*/.*.tmp")):
        if not path.is_dir():
            continue
        match = _TMP.match(path.name)
        key = match["name"] if match else path.name[1:].split(".")[0]
        with locks.try_stage_lock(run_dir, path.parent.name, key) as free:
            if free:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _stale_files(run_dir: Path, started: float) -> list[Path]:
    """Temporary files older than this run whose writer is gone (or, without a pid in the
    name, older than an hour)."""
    removed = []
    for path in sorted((run_dir / "stages").glob("*/.*.tmp")) + sorted(run_dir.glob(".*.tmp")):
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            continue
        match = _TMP.match(path.name)
        stale = (not processes.started_before(int(match["pid"]), mtime) if match
                 else started - mtime > _UNOWNED_AGE_S)
        if path.is_file() and mtime < started and stale:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _stale_batch_cache(run_dir: Path, started: float) -> list[Path]:
    """Temporary folders and files of the per-batch cache (docs/batches.md) older than this run
    whose writer is gone: an entry is built or linked under such a name, then renamed."""
    removed = []
    for path in sorted((run_dir / "batch-cache").rglob(".*.tmp")):
        match = _TMP.match(path.name)
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            continue
        if match and mtime < started and not processes.started_before(int(match["pid"]),
                                                                      mtime):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def recover(cfg: PipelineConfig, flow_run_id: str, logger: Logger | LoggerAdapter,
            started: float | None = None) -> list[str]:
    """Clean up after crashed runs in cfg.run_dir (see the module docstring); log and return
    what was done, one line per thing."""
    run_dir = Path(cfg.run_dir)
    started = time.time() if started is None else started
    done = []
    for path, record in _records(run_dir):
        if alive(record["owner"]):
            continue
        who = record["owner"]
        note = (f"process {who['pid']} on {who['host']} died without finishing; marked by the "
                f"run that started at {time.strftime('%Y-%m-%d %H:%M:%S')} "
                f"(flow run {flow_run_id})")
        done += _crash_prefect_runs(record, note)
        uri = _store_uri(cfg, record["tracking_uri"])  # recorded without credentials
        done += _kill_mlflow_runs({**record, "tracking_uri": uri}, note)
        path.unlink(missing_ok=True)
    stale = (_stale_stage_folders(run_dir) + _stale_files(run_dir, started)
             + _stale_batch_cache(run_dir, started))
    done += [f"removed stale temporary {path.relative_to(run_dir)}" for path in stale]
    for line in done:
        logger.warning("recovery: %s", line)
    return done


def begin(cfg: PipelineConfig, flow_run_id: str, logger: Logger | LoggerAdapter) -> list[str]:
    """Create the MLflow store if new, recover from crashed runs, then record this run as in
    progress."""
    started = time.time()
    runs.create_store(cfg.run_dir)
    done = recover(cfg, flow_run_id, logger, started)
    write_json(Path(cfg.run_dir) / RECORDS / f"{flow_run_id}.json", {
        "flow_run_id": flow_run_id, "owner": owner(), "started": started,
        "prefect_api_url": _prefect_api_url(), "experiment": cfg.name,
        "tracking_uri": public_uri(runs.tracking_uri(cfg.run_dir))})
    return done


def end(cfg: PipelineConfig, flow_run_id: str) -> None:
    """This run finished (in any state its own process could record)."""
    (Path(cfg.run_dir) / RECORDS / f"{flow_run_id}.json").unlink(missing_ok=True)


@contextmanager
def recorded(cfg: PipelineConfig, flow_run_id: str, logger: Logger | LoggerAdapter,
             ) -> Iterator[None]:
    """`begin` (first: clean up after crashed runs), then `end` however the block ends."""
    begin(cfg, flow_run_id, logger)
    try:
        yield
    finally:
        end(cfg, flow_run_id)

"""prefect-dask: a flow's tasks on a 2-worker LocalCluster (processes, 127.0.0.1) import our
modules, write Parquet into one shared run folder, report to the flow's Prefect API (here the
test harness's temporary server, known to the workers only through Prefect's settings
context) and persist results there, so a second run is served from the shared cache."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect import flow, task
from prefect.cache_policies import INPUTS

from tasks.parallel.dask_cluster import dask_task_runner

PARTS = 4


@task(cache_policy=INPUTS, persist_result=True, result_serializer="json")  # no pickles
def write_part(run_dir: str, index: int, barrier: int) -> dict:
    """One part file; the first `barrier` parts wait for each other, so they must run at the
    same time, which single-threaded workers can only do in different processes."""
    from prefect.settings import get_current_settings

    from mmcore.io.parquet import embedding_table, write_table

    folder = Path(run_dir)
    (folder / "arrived").mkdir(exist_ok=True)
    (folder / "arrived" / str(index)).touch()
    deadline = time.monotonic() + 120
    while index < barrier and len(os.listdir(folder / "arrived")) < barrier:
        if time.monotonic() > deadline:
            raise TimeoutError(f"part {index}: no other part ran alongside it")
        time.sleep(0.05)
    rows = np.arange(3) + 10 * index
    path = write_table(folder / "parts" / f"part-{index:03d}.parquet", embedding_table(
        [f"row-{r}" for r in rows], ["train"] * 3, rows,
        np.outer(rows, np.ones(4)).astype(np.float32)), {"stage": "spike", "part": index})
    return {"path": str(path), "pid": os.getpid(),
            "api_url": str(get_current_settings().api.url)}


@flow(task_runner=dask_task_runner(workers=2))
def write_parts(run_dir: str, barrier: int) -> list[tuple[str, dict]]:
    storage = Path(run_dir) / "prefect-results"
    futures = write_part.with_options(result_storage=storage).map(
        run_dir, range(PARTS), barrier)
    results = [f.result() for f in futures]
    return [(f.state.name, result) for f, result in zip(futures, results, strict=True)]


@pytest.mark.slow
def test_tasks_on_two_dask_workers_share_the_run_folder_and_the_cache(tmp_path,
                                                                      prefect_harness):
    from prefect.settings import get_current_settings

    first = write_parts(str(tmp_path), barrier=2)
    assert [state for state, _ in first] == ["Completed"] * PARTS
    pids = {out["pid"] for _, out in first}
    assert len(pids) == 2 and os.getpid() not in pids
    assert {out["api_url"] for _, out in first} == {str(get_current_settings().api.url)}

    table = pa.concat_tables(pq.read_table(out["path"]) for _, out in first)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 4)
    assert table.column("label").to_pylist() == [0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32]
    assert pq.read_schema(first[3][1]["path"]).metadata[b"mmpipe"] == \
        b'{"part": 3, "stage": "spike"}'
    assert len(list((tmp_path / "prefect-results").iterdir())) >= PARTS

    # The same inputs again (the barrier would now time out if a part ran): all from cache.
    again = write_parts(str(tmp_path), barrier=2)
    assert [state for state, _ in again] == ["Cached"] * PARTS
    assert [out for _, out in again] == [out for _, out in first]

"""Where a pipeline's bookkeeping goes, and what each write costs: the figures behind
docs/scale.md.

(a) MLflow store writes: `log_batch` (10 metrics) and `create_run` against SQLite written
    directly, PostgreSQL written directly, and an `mlflow server` (one worker process) in front
    of each; one client, then 4 client processes at once (a sweep's cells logging together).
(b) The Prefect API: a round trip (read one flow), and a trivial flow of 100 tasks against a
    local Prefect server (per-task cost of the API writes that a task run makes).
(c) Parquet: writing and reading an embedding file (fixed_size_list<float32>[64]) and a
    samples file of 28x28 images, in MB/s of Arrow data.
(d) Dask: a 2-worker LocalCluster's start and close, and a flow of 40 trivial tasks on it
    through prefect-dask (tasks per second), against a local Prefect server.
(e) What one pipeline run asks of the tracking server: the REST calls of a small cold run and
    of a fully cached rerun, counted on the client, by endpoint.

PostgreSQL comes from Debian's packages (apt-get install postgresql) in a throwaway cluster
with fsync on, started by the same helper as the tests (tests/servers.py); without it, its rows
are skipped. All servers bind to 127.0.0.1 on free ports and are stopped at the end.

Usage: python benchmarks/stores.py [--calls 200] [--sections parquet prefect mlflow dask calls]
                                  [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the server helpers the tests use

from servers import mlflow_server, postgres_bin, postgres_cluster  # noqa: E402

CLIENTS = 4


def _log_batches(uri: str, experiment_id: str, calls: int) -> list[float]:
    """Seconds per `log_batch` of 10 metrics into one new run, `calls` times."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(uri)
    run_id = client.create_run(experiment_id).info.run_id
    times = []
    for step in range(calls):
        metrics = [Metric(f"m{i}", float(step * i), int(time.time() * 1000), step)
                   for i in range(10)]
        start = time.perf_counter()
        client.log_batch(run_id, metrics=metrics)
        times.append(time.perf_counter() - start)
    return times


def _create_runs(uri: str, experiment_id: str, count: int) -> list[float]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        client.create_run(experiment_id)
        times.append(time.perf_counter() - start)
    return times


def mlflow_store(name: str, uri: str, calls: int) -> dict:
    """One store: single-client latencies, then aggregate throughput of CLIENTS processes."""
    from mlflow import MlflowClient

    experiment = MlflowClient(uri).create_experiment(
        f"bench {name}", artifact_location=None if uri.startswith("http") else
        Path(tempfile.mkdtemp()).as_uri())
    _log_batches(uri, experiment, 5)  # warm: connections, caches
    batch = _log_batches(uri, experiment, calls)
    runs = _create_runs(uri, experiment, max(calls // 5, 10))
    # spawn: a forked child would share the parent's cached store and its connection pool
    with ProcessPoolExecutor(CLIENTS, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_log_batches, [uri] * CLIENTS, [experiment] * CLIENTS, [2] * CLIENTS))
        start = time.perf_counter()
        per_client = list(pool.map(_log_batches, [uri] * CLIENTS, [experiment] * CLIENTS,
                                   [calls // 2] * CLIENTS))
        wall = time.perf_counter() - start
    together = [t for times in per_client for t in times]
    return {"store": name, "log_batch_ms": 1000 * statistics.median(batch),
            "log_batch_per_s": 1 / statistics.median(batch),
            "create_run_ms": 1000 * statistics.median(runs),
            f"log_batch_ms_{CLIENTS}_clients": 1000 * statistics.median(together),
            f"log_batch_per_s_{CLIENTS}_clients": len(together) / wall}


def mlflow_figures(calls: int) -> list[dict]:
    rows = []
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        sqlite = f"sqlite:///{root / 'direct.db'}"
        rows.append(mlflow_store("SQLite, direct", sqlite, calls))
        server = stack.enter_context(mlflow_server(root / "server-sqlite"))
        rows.append(mlflow_store("mlflow server + SQLite", server.url, calls))
        bin_dir = postgres_bin()
        if bin_dir is None:
            print("PostgreSQL not installed: its rows are skipped", file=sys.stderr)
            return rows
        database = stack.enter_context(postgres_cluster(bin_dir, durable=True))
        rows.append(mlflow_store("PostgreSQL, direct", database, calls))
        pg_server = stack.enter_context(mlflow_server(root / "server-pg", database))
        rows.append(mlflow_store("mlflow server + PostgreSQL", pg_server.url, calls))
    return rows


@contextmanager
def _local_prefect_server() -> Iterator[None]:
    """A throwaway local Prefect server (as `mmpipe run` starts one) for the block, in a temporary
    PREFECT_HOME; stopped, and PREFECT_API_URL unset, however the block ends."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect")
        from flows.cli import environment
        from flows.server import local_server

        environment.prepare(tmp)
        info = local_server.start(Path(tmp))
        os.environ["PREFECT_API_URL"] = info["api_url"]
        from prefect.settings import PREFECT_API_URL, temporary_settings

        try:
            # Prefect reads its settings once per process: a second server needs them updated.
            with temporary_settings(updates={PREFECT_API_URL: info["api_url"]}):
                yield
        finally:
            local_server.stop(Path(tmp))
            os.environ.pop("PREFECT_API_URL", None)


def prefect_figures(tasks: int = 100, repeats: int = 9) -> dict:
    """Against a local Prefect server (as `mmpipe run` uses): API round trip, the wall time of
    an empty flow run, and of one task run inside a flow (median over `tasks` calls)."""
    with _local_prefect_server():
        from prefect import flow, get_client, task

        from flows.cli import environment

        @task
        def noop(i: int) -> int:
            return i

        @flow
        def empty() -> None:
            pass

        @flow
        def many() -> list[float]:
            times = []
            for i in range(tasks):
                start = time.perf_counter()
                noop(i)
                times.append(time.perf_counter() - start)
            return times

        with get_client(sync_client=True) as client:
            client.read_flows(limit=1)
            trips = []
            for _ in range(50):
                start = time.perf_counter()
                client.read_flows(limit=1)
                trips.append(time.perf_counter() - start)
        with environment.without_flow_heartbeats():
            empty()  # warm
            flows = []
            for _ in range(repeats):
                start = time.perf_counter()
                empty()
                flows.append(time.perf_counter() - start)
            task_times = many()
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=30)  # the task-run logs, before their server goes
    return {"api_round_trip_ms": 1000 * statistics.median(trips),
            "empty_flow_ms": 1000 * statistics.median(flows),
            "per_task_ms": 1000 * statistics.median(task_times)}


def parquet_figures(rows: int = 200_000, repeats: int = 3) -> list[dict]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmcore.io.parquet import embedding_array, embedding_table, write_table

    rng = np.random.default_rng(0)
    tables = {
        f"embeddings {rows:,} x 64 float32": embedding_table(
            [f"id-{i}" for i in range(rows)], ["train"] * rows, rng.integers(0, 10, rows),
            rng.standard_normal((rows, 64), dtype=np.float32)),
        f"images {rows // 4:,} x 28x28 float32": pa.table({
            "id": [f"id-{i}" for i in range(rows // 4)],
            "image": embedding_array(rng.random((rows // 4, 784), dtype=np.float32))}),
    }
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, table in tables.items():
            path = Path(tmp) / "bench.parquet"
            writes, reads = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                write_table(path, table, {"stage": "bench"}, row_group_size=8192)
                writes.append(time.perf_counter() - start)
                start = time.perf_counter()
                pq.read_table(path)
                reads.append(time.perf_counter() - start)
            mb = table.nbytes / 1e6
            out.append({"file": name, "arrow_mb": mb, "file_mb": path.stat().st_size / 1e6,
                        "write_mb_per_s": mb / statistics.median(writes),
                        "read_mb_per_s": mb / statistics.median(reads)})
    return out


def _noop(i: int) -> int:
    return i


def dask_figures(tasks: int = 40) -> dict:
    """LocalCluster(2) start and close; trivial Prefect tasks on it (after a warm-up flow)."""
    from distributed import LocalCluster

    start = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    started = time.perf_counter() - start
    start = time.perf_counter()
    cluster.close()
    closed = time.perf_counter() - start
    with _local_prefect_server():
        from prefect import flow, task

        from flows.cli import environment
        from tasks.parallel.dask_cluster import dask_task_runner

        noop = task(_noop)

        @flow(task_runner=dask_task_runner(workers=2))
        def on_dask(n: int) -> float:
            [f.result() for f in noop.map(range(2))]  # workers import Prefect first
            begin = time.perf_counter()
            [f.result() for f in noop.map(range(n))]
            return time.perf_counter() - begin

        with environment.without_flow_heartbeats():
            elapsed = on_dask(tasks)
    return {"cluster_start_s": started, "cluster_close_s": closed,
            "tasks_per_s": tasks / elapsed}


def _count_calls(counts: dict[str, int]):
    """Count every REST call the MLflow client makes (tracking, registry, artifacts)."""
    import mlflow.utils.rest_utils as rest

    original = rest.http_request

    def counted(host_creds, endpoint, method, *args, **kwargs):
        name = f"{method} {endpoint.split('/api/')[-1].split('/artifacts/')[0]}"
        counts[name] = counts.get(name, 0) + 1
        return original(host_creds, endpoint, method, *args, **kwargs)

    rest.http_request = counted
    return original


def pipeline_calls() -> dict:
    """REST calls of a small pipeline run against an `mlflow server`: cold, then all cached."""
    import mlflow.utils.rest_utils as rest

    tiny = ["data.limit=400", "features.image_epochs=1", "features.text_epochs=1",
            "shared_space.epochs=2", "training.epochs=2"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp, mlflow_server(Path(tmp) / "server") as server:
        os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect")
        os.environ["MLFLOW_TRACKING_URI"] = server.url
        from prefect.testing.utilities import prefect_test_harness

        from flows.cli import environment

        environment.prepare(tmp)
        with prefect_test_harness(server_startup_timeout=120), \
                environment.without_flow_heartbeats():
            from flows.pipeline import pipeline

            for name in ("cold", "cached"):
                counts: dict[str, int] = {}
                original = _count_calls(counts)
                try:
                    pipeline(overrides=[*tiny, f"run_dir={Path(tmp) / 'run'}"])
                finally:
                    rest.http_request = original
                out[name] = {"total": sum(counts.values()), "by_endpoint": counts}
        os.environ.pop("MLFLOW_TRACKING_URI")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--sections", nargs="+",
                        default=["parquet", "prefect", "mlflow", "dask", "calls"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    sections = {"parquet": parquet_figures, "prefect": prefect_figures,
                "mlflow": lambda: mlflow_figures(args.calls), "dask": dask_figures,
                "calls": pipeline_calls}
    results = {name: sections[name]() for name in args.sections}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    report(results)


def report(results: dict) -> None:
    for name, calls in results.get("calls", {}).items():
        print(f"\npipeline run, {name}: {calls['total']} MLflow REST calls")
        for endpoint, n in sorted(calls["by_endpoint"].items(), key=lambda kv: -kv[1]):
            print(f"  {n:>4}  {endpoint}")
    if "mlflow" in results:
        print(f"\n{'MLflow store':<28} {'log_batch ms':>12} {'per s':>7} {'create_run ms':>13} "
              f"{f'{CLIENTS} clients: ms':>16} {'per s':>7}")
        for r in results["mlflow"]:
            print(f"{r['store']:<28} {r['log_batch_ms']:>12.1f} {r['log_batch_per_s']:>7.0f} "
                  f"{r['create_run_ms']:>13.1f} {r[f'log_batch_ms_{CLIENTS}_clients']:>16.1f} "
                  f"{r[f'log_batch_per_s_{CLIENTS}_clients']:>7.0f}")
    if "prefect" in results:
        p = results["prefect"]
        print(f"\nPrefect API round trip {p['api_round_trip_ms']:.1f} ms; empty flow "
              f"{p['empty_flow_ms']:.0f} ms; per task {p['per_task_ms']:.1f} ms")
    if "dask" in results:
        d = results["dask"]
        print(f"\nDask LocalCluster(2): start {d['cluster_start_s']:.1f} s, close "
              f"{d['cluster_close_s']:.1f} s; Prefect tasks on it {d['tasks_per_s']:.1f} per s")
    if "parquet" in results:
        print(f"\n{'Parquet file':<34} {'Arrow MB':>8} {'file MB':>8} {'write MB/s':>10} "
              f"{'read MB/s':>10}")
        for r in results["parquet"]:
            print(f"{r['file']:<34} {r['arrow_mb']:>8.0f} {r['file_mb']:>8.0f} "
                  f"{r['write_mb_per_s']:>10.0f} {r['read_mb_per_s']:>10.0f}")


if __name__ == "__main__":
    main()

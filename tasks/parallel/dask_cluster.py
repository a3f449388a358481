"""Where parallel tasks run: a Dask cluster, through prefect-dask's DaskTaskRunner.

By default a LocalCluster on this machine: one single-threaded worker process per core, on
127.0.0.1 and without a dashboard. With an address (`tcp://host:8786`), an existing cluster
whose workers can import this project and read and write the run folder (a shared path).

Prefect 3 and Dask notes, checked by tests/test_dask_runner.py:
- Settings reach the workers with each task: prefect-dask serializes the caller's settings
  context (API URL, PREFECT_HOME, result settings) into every submission, so a worker reports
  to the flow's Prefect API, even to the test harness's temporary server, whose URL is only an
  in-process setting. Environment variables are not carried: a worker of a remote cluster keeps
  its own environment (MLFLOW_TRACKING_URI must be set there too).
- The flow object travels with each task, and a worker enters a copy of the flow's task runner;
  a task that submits tasks reaches the same cluster through the worker's client, and
  single-threaded workers all waiting on such subtasks deadlock: keep tasks flat.
- Task results come back through Dask, but persisted results and the stage cache are files:
  `result_storage` must be a folder that every worker and the flow reach (the run folder).
- A LocalCluster gives each worker process 4 s to exit when it closes, then kills it with a
  warning ("Worker process still alive after 4.0 seconds, killing"), and with it whatever
  Prefect had not yet sent. A worker that ran the pipeline has torch, MLflow and Prefect loaded,
  and Python's teardown spent 8-13 s here in the garbage collector's passes over those modules
  (gdb: `finalize_modules` -> `gc_collect_main`). So a closing worker freezes what it holds
  (`QuickExit`: `gc.freeze`, the collector then skips it; the process ends anyway), and the
  runner closes the workers of a cluster it made itself with `WORKER_EXIT_S` to spare.
- Dask's nanny starts workers with OMP_NUM_THREADS=1 (and MKL/OpenBLAS likewise): torch in a
  worker uses one thread, so N workers use N cores without oversubscription. It does so by
  setting them, and PYTHONHASHSEED, in the *calling* process's environment, for good;
  `EnvironmentKeepingDaskTaskRunner` puts them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import dask
import distributed
from distributed.diagnostics.plugin import WorkerPlugin
from prefect_dask import DaskTaskRunner
from prefect_dask.client import PrefectDaskClient


def _dask_environment_keys() -> list[str]:
    """Variables Dask's nanny writes into the environment of the process that starts workers."""
    return [*dask.config.get("distributed.nanny.pre-spawn-environ", {}), "PYTHONHASHSEED",
            "__DASK_PARENT_PID"]


class EnvironmentKeepingDaskTaskRunner(DaskTaskRunner):
    """A DaskTaskRunner that leaves the flow process's environment as it found it."""

    def __enter__(self):
        self._saved_environ = {k: os.environ.get(k) for k in _dask_environment_keys()}
        return super().__enter__()

    @property
    def client(self) -> PrefectDaskClient:
        """The Dask client; starting the cluster (spawning workers) happens here."""
        try:
            with _project_first_on_path():
                return DaskTaskRunner.client.fget(self)
        finally:
            self._restore_environment()

    def __exit__(self, *args) -> None:
        try:
            self._close_workers()
            super().__exit__(*args)
        finally:
            self._restore_environment()

    def _close_workers(self) -> None:
        """The workers of the LocalCluster this runner started, closed with time to exit (not
        the 4 s the cluster's own close gives them). An existing cluster's are left alone, as is
        everything on a Dask worker (where a copy of this runner only connects)."""
        cluster = getattr(self, "_cluster", None)
        if self.address or not isinstance(cluster, distributed.LocalCluster) or _on_worker():
            return
        nannies = [w for w in cluster.workers.values() if isinstance(w, distributed.Nanny)]
        if nannies:
            cluster.sync(_close_all, nannies)

    def _restore_environment(self) -> None:
        for key, value in getattr(self, "_saved_environ", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _project_first_on_path() -> Iterator[None]:
    """Spawned workers start with this process's `sys.path`. Loading a registered model in this
    process (an MLflow model from code) put the model's `code/` folder first on it, and that
    folder holds a partial copy of `mmcore`: workers would import it instead of the project's
    and fail to unpickle every cell, and the sweep would wait on them for ever. So the folder
    this project is imported from comes first while the workers start."""
    saved = sys.path[:]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    try:
        yield
    finally:
        sys.path[:] = saved


# Seconds a worker process gets to exit (drain Prefect's services, unload torch) before the
# nanny kills it.
WORKER_EXIT_S = 60


class QuickExit(WorkerPlugin):
    """On a worker that closes: `gc.freeze()`, so that the interpreter's teardown does not walk
    every object of torch, MLflow and Prefect again (0.7 s to exit instead of 8-13 s here).
    Prefect's services still drain at exit as usual."""

    def teardown(self, worker) -> None:
        gc.freeze()

    def __eq__(self, other: object) -> bool:  # runners with equal settings stay equal
        return isinstance(other, QuickExit)

    def __hash__(self) -> int:
        return hash(QuickExit)


def _on_worker() -> bool:
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


async def _close_all(nannies: list) -> None:
    await asyncio.gather(*(nanny.close(timeout=WORKER_EXIT_S) for nanny in nannies))


def local_workers() -> int:
    """One worker per core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def dask_task_runner(address: str | None = None, workers: int | None = None,
                     ) -> DaskTaskRunner:
    """A DaskTaskRunner on the cluster at `address`, or on a new LocalCluster of `workers`
    single-threaded processes (default: one per core) that lives as long as the flow run."""
    if address:
        return EnvironmentKeepingDaskTaskRunner(address=address)
    return EnvironmentKeepingDaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": workers or local_workers(), "threads_per_worker": 1,
                        "processes": True, "host": "127.0.0.1", "dashboard_address": None,
                        # Without a dashboard the scheduler still serves HTTP (health,
                        # metrics) on 8787, and warned "Port 8787 is already in use" whenever
                        # another cluster held it: any free port on 127.0.0.1 instead.
                        "scheduler_kwargs": {"dashboard": False,
                                             "dashboard_address": "127.0.0.1:0"},
                        "plugins": {QuickExit()}})

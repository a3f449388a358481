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
- Dask's nanny starts workers with OMP_NUM_THREADS=1 (and MKL/OpenBLAS likewise): torch in a
  worker uses one thread, so N workers use N cores without oversubscription. It does so by
  setting them, and PYTHONHASHSEED, in the *calling* process's environment, for good;
  `EnvironmentKeepingDaskTaskRunner` puts them back.
"""

from __future__ import annotations

import os

import dask
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
            return DaskTaskRunner.client.fget(self)
        finally:
            self._restore_environment()

    def __exit__(self, *args) -> None:
        try:
            super().__exit__(*args)
        finally:
            self._restore_environment()

    def _restore_environment(self) -> None:
        for key, value in getattr(self, "_saved_environ", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
                        "processes": True, "host": "127.0.0.1", "dashboard_address": None})

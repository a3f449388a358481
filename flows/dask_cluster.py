"""Moved to `tasks/dask_cluster.py`: a stage's partitions (a task-layer concern) run on it too,
and `tasks` may not import `flows`. Kept so that `flows.dask_cluster` imports keep working."""

from tasks.dask_cluster import (  # noqa: F401
    EnvironmentKeepingDaskTaskRunner,
    dask_task_runner,
    local_workers,
)

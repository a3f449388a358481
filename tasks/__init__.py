"""The Prefect side of the pipeline: the five stage tasks and the machinery they share.

- `stages/`: one thin task per stage (cache key extras, IO, MLflow logging; the work is in
  `mmcore`), the stage table that runs them in order, and `mmpipe verify`.
- `engine/`: what makes a stage cached and safe: keys and code fingerprints, the output folder's
  life (temporary, marker, verified), the task skeleton, the cache decision, locks, crash recovery.
- `parallel/`: partitioned outputs, inline or on a Dask cluster.
- `tracking/`: MLflow: runs, the model registry, run summaries, the logged model, comparison and
  sweep parent runs.
- `faults.py`: fault injection for the crash tests.

May import `mmcore`, prefect and mlflow, never `flows`; inside, each package imports only those
listed after it (stages -> engine -> parallel | tracking -> faults; pyproject.toml's contracts).
"""

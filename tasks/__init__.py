"""One thin Prefect task module per stage: cache key, IO, MLflow logging; the work is in mmcore."""

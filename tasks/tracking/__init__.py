"""MLflow: runs and their metrics (`runs`), the Model Registry and its aliases
(`model_registry`), what a pipeline run's parent says (`run_summary`), the logged inference chain
(`logged_model`) and the parent runs of comparisons and sweeps (`experiment_runs`). May import
`mmcore` only (a `StageRef` annotation aside)."""

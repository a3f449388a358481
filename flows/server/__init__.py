"""The local Prefect server of a run folder: started on first use (`local_server`), stopped when
idle (`watchdog`)."""

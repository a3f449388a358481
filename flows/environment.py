"""Quiet, self-contained state: Prefect's home and MLflow's store inside the run directory.

Must run before prefect is imported (its settings are read from the environment). Variables the
user already set win.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULTS = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # Without this, every temporary-server run printed a "database is locked" traceback here.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # A fresh temporary server took 19-21 s to start here; Prefect's default limit is 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_LOG_PRINTS": "true",
    "GIT_PYTHON_REFRESH": "quiet",
    "TOKENIZERS_PARALLELISM": "false",
}


def prepare(run_dir: str | Path) -> Path:
    """Create the run directory and point Prefect's home into it; return its absolute path."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("PREFECT_HOME", str(run_dir / "prefect"))
    return run_dir

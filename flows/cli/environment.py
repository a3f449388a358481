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
    # MLflow prints "View run ... at: <tracking URI>/#/..." as each run ends, credentials in the
    # URI and all; mmpipe prints its own link, without them (mmcore/uris.py).
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # A night's checks download the champion's model: one progress-bar line per file otherwise.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # Without this, every temporary-server run printed a "database is locked" traceback here.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # A fresh temporary server took 19-21 s to start here; Prefect's default limit is 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_LOG_PRINTS": "true",
    "GIT_PYTHON_REFRESH": "quiet",
    "TOKENIZERS_PARALLELISM": "false",
}


def quiet() -> None:
    """No telemetry, no analytics, quiet libraries (variables the user set win)."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)


def prepare(run_dir: str | Path) -> Path:
    """Create the run directory and point Prefect's home into it; return its absolute path."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    quiet()
    os.environ.setdefault("PREFECT_HOME", str(run_dir / "prefect"))
    return run_dir


def without_flow_heartbeats():
    """Prefect settings for flow runs someone waits on (the CLI, the tests), as a context manager.

    Prefect 3.9 starts a heartbeat thread per flow run (every 180 s by default; they let an
    automation mark crashed deployment runs) and joins it when the run ends. The thread sleeps in
    1 s steps, so the join added up to 1 s to every flow run: a trivial flow took 1.11 s against
    the local server, 0.16 s without heartbeats, and a cached rerun of the pipeline was mostly this
    wait. Served deployments (`mmpipe serve`) keep their heartbeats. An environment variable can
    only set another frequency, which does not help; `None` turns them off.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})

"""Test-wide set-up: quiet, self-contained Prefect and MLflow state, never the user's stores."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Before prefect is imported anywhere: its settings come from the environment.
_HOME = tempfile.mkdtemp(prefix="mmpipe-tests-prefect-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = _HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)
from flows import environment  # noqa: E402

environment.prepare(_HOME)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test harness for the session (starting one costs ~20 s here)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120), \
            environment.without_flow_heartbeats():  # as under the CLI: ~1 s less per flow run
        yield


# Set by pytest and Prefect while running, or by sklearn/torch once, on their first import.
LIBRARY_SET = {"PYTEST_CURRENT_TEST", "PREFECT__FLOW_RUN_ID", "KMP_DUPLICATE_LIB_OK",
               "KMP_INIT_AT_FORK", "TORCHINDUCTOR_CACHE_DIR"}


@pytest.fixture(autouse=True)
def _no_leaked_environment():
    """Fail a test that leaves environment variables changed (Lightning's hygiene)."""
    before = dict(os.environ)
    yield
    after = dict(os.environ)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    changed -= LIBRARY_SET
    assert not changed, f"test leaked environment changes: {sorted(changed)}"

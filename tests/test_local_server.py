"""The local Prefect server the CLI keeps running: reused, and always stoppable."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from flows import local_server

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self"), reason="reads /proc")


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for this process to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_server_is_reused_then_stopped_even_when_it_no_longer_answers(tmp_path):
    info = local_server.start(tmp_path)
    try:
        assert info["api_url"].startswith("http://127.0.0.1:")
        assert local_server.start(tmp_path) == info  # reused, not a second server
        assert local_server.running(tmp_path) == info
        # A server that stopped answering (here: a record pointing at the wrong port) must
        # still be stopped, not forgotten while it runs on.
        record = tmp_path / "prefect-server.json"
        record.write_text(json.dumps({**info, "api_url": "http://127.0.0.1:9/api"}))
        assert local_server.running(tmp_path) is None
        assert local_server.stop(tmp_path) is True
        os.waitpid(info["pid"], 0)  # our child: reap it, or it stays a zombie
        assert not _alive(info["pid"])
        assert not record.exists()
        assert local_server.stop(tmp_path) is False
    finally:
        if _alive(info["pid"]):
            os.killpg(info["pid"], 9)


def test_stop_never_kills_a_process_that_reused_the_recorded_pid(tmp_path):
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        (tmp_path / "prefect-server.json").write_text(json.dumps(
            {"pid": other.pid, "api_url": "http://127.0.0.1:9/api", "ui_url": ""}))
        assert local_server.stop(tmp_path) is False
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()

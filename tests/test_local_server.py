"""The local Prefect server the CLI keeps per run directory: its UI talks to its own API, it is
reused, two commands started together share one, it stops when idle, and it is always
stoppable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from servers import MMPIPE, service_env, wait_for

from flows.errors import UsageError
from flows.server import local_server
from mmcore.io import processes

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self"), reason="reads /proc")


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _group(pgid: int) -> list[int]:
    """Live processes in a process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split(")")[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _started(argv: list[str]) -> subprocess.Popen:
    """`argv` in its own process group, returned once /proc shows its command line.

    Popen returns when the child's exec has closed its error pipe, but the kernel fills in the
    new command line a moment later: read before that, /proc/<pid>/cmdline is empty (a loaded
    machine widens the window), and `local_server.is_ours` rightly says "not ours"."""
    process = subprocess.Popen(argv, start_new_session=True)
    expected = "\0".join(argv).encode()
    wait_for(f"{argv[0]}'s command line in /proc",
             lambda: Path(f"/proc/{process.pid}/cmdline").read_bytes().startswith(expected),
             timeout=30, interval=0.01)
    return process


def _stand_in() -> subprocess.Popen:
    """A process that looks like a server that stopped answering (its command line says
    prefect) in its own process group."""
    return _started([sys.executable, "-c", "import time; time.sleep(60)",
                     "prefect-server-stand-in"])


def _record(run_dir: Path, pid: int, create_time: float | None) -> Path:
    """A server record naming `pid`, created at `create_time`, that does not answer."""
    record = local_server.info_path(run_dir)
    record.write_text(json.dumps({"pid": pid, "create_time": create_time,
                                  "api_url": "http://127.0.0.1:9/api", "ui_url": ""}))
    return record


def test_a_recorded_server_that_no_longer_answers_is_still_stopped(tmp_path):
    server = _stand_in()
    try:
        record = _record(tmp_path, server.pid, processes.create_time(server.pid))
        assert local_server.running(tmp_path) is None
        assert local_server.stop(tmp_path) is True
        assert server.wait(10) == -signal.SIGTERM
        assert not record.exists()
        assert local_server.stop(tmp_path) is False
    finally:
        server.kill()
        server.wait()


def test_stop_never_kills_a_process_that_reused_the_recorded_pid(tmp_path, caplog):
    """Only the recorded pid with its recorded create time is signalled: not the same pid
    created at another time (a reused pid, an edited record), not a record without a create
    time, not another of our processes whose command line is no server's."""
    other = _started(["sleep", "30"])
    server = _stand_in()
    try:
        born = processes.create_time(server.pid)
        for pid, create_time in [(other.pid, None), (other.pid, born),
                                 (other.pid, processes.create_time(other.pid)),
                                 (server.pid, born - 5), (server.pid, None)]:
            _record(tmp_path, pid, create_time)
            assert local_server.stop(tmp_path) is False, (pid, create_time)
            assert other.poll() is None and server.poll() is None
        assert "left alone" in caplog.text
        _record(tmp_path, server.pid, born)  # the real one
        assert local_server.stop(tmp_path) is True
        assert server.wait(10) == -signal.SIGTERM and other.poll() is None
    finally:
        for process in (other, server):
            process.kill()
            process.wait()


def test_idle_time_comes_from_the_environment_and_bad_values_are_usage_errors(monkeypatch):
    monkeypatch.delenv(local_server.IDLE_ENV, raising=False)
    assert local_server.idle_minutes() == local_server.DEFAULT_IDLE_MINUTES
    monkeypatch.setenv(local_server.IDLE_ENV, "0.5")
    assert local_server.idle_minutes() == 0.5
    for bad in ("soon", "-1"):
        monkeypatch.setenv(local_server.IDLE_ENV, bad)
        with pytest.raises(UsageError, match=local_server.IDLE_ENV):
            local_server.idle_minutes()


@pytest.mark.slow
def test_server_ui_uses_its_own_api_is_reused_and_stops_when_idle(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("PREFECT_API_URL", "")  # unset for use(), which sets it; restored after
    idle_s = 6
    monkeypatch.setenv(local_server.IDLE_ENV, str(idle_s / 60))
    info = local_server.use(tmp_path)  # starts the server and uses it, as `mmpipe run` does
    try:
        assert os.environ["PREFECT_API_URL"] == info["api_url"]
        settings = httpx.get(f"{info['ui_url']}/ui-settings", timeout=10).json()
        assert settings["api_url"] == info["api_url"]  # not http://127.0.0.1:4200/api
        assert local_server.start(tmp_path) == info  # reused, not a second server
        processes = _group(info["pid"])
        assert len(processes) >= 2  # the watchdog and the server

        time.sleep(1.5 * idle_s)
        assert local_server.running(tmp_path) == info  # in use: still running
        local_server.release(tmp_path)  # as at the end of the command

        wait_for("the idle server to stop", lambda: local_server.recorded(tmp_path) is None,
                 timeout=10 * idle_s)
        os.waitpid(info["pid"], 0)  # our child: reap it
        wait_for("every server process to exit",
                 lambda: not any(_alive(pid) for pid in processes), timeout=30)
        assert "stopping the server" in local_server.log_path(tmp_path).read_text()
    finally:
        local_server.release(tmp_path)
        if _group(info["pid"]):
            os.killpg(info["pid"], signal.SIGKILL)


@pytest.mark.slow
def test_two_runs_started_together_in_a_fresh_folder_share_one_server(tmp_path):
    run_dir = tmp_path / "runs"
    env = service_env(tmp_path / "home")
    runs = [subprocess.Popen([MMPIPE, "run", "--stages", "preprocessing", "--set",
                              f"run_dir={run_dir}", "--set", "data.limit=120", "--set",
                              f"seed={seed}"], cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for seed in (1, 2)]
    try:
        outputs = [run.communicate(timeout=400)[0] for run in runs]
        for run, output in zip(runs, outputs, strict=True):
            assert run.returncode == 0, output[-3000:]
        urls = {line.split()[2] for output in outputs for line in output.splitlines()
                if line.startswith("Prefect server:")}
        assert len(urls) == 1  # both runs used the one server
        log = local_server.log_path(run_dir).read_text()
        assert log.count("Check out the dashboard") == 1  # and only one was started
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
        info = local_server.recorded(run_dir)
        if info:
            local_server.stop(run_dir)
            wait_for("the server to exit", lambda: not _group(info["pid"]), timeout=30)

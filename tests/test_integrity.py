"""Verified outputs, stage locks, fault points and crash recovery, part by part (the whole
pipeline under faults and concurrency: tests/test_crash_and_concurrency.py)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmcore.config import load_config
from mmcore.io import integrity
from mmcore.io.parquet import MARKER, mark_complete, read_marker, verify_folder, write_json
from tasks import faults
from tasks.engine import locks, recovery

ROOT = Path(__file__).resolve().parent.parent
LOG = logging.getLogger("test")


def _folder(tmp_path: Path, big: int = 0) -> Path:
    """A complete stage folder: a small file, a nested file and, when `big`, a large one."""
    folder = tmp_path / "stage"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.parquet").write_bytes(bytes(range(256)) * 40)  # 10,240 bytes
    (folder / "sub" / "b.json").write_text('{"b": 1}')
    if big:
        (folder / "big.bin").write_bytes(os.urandom(big))
    mark_complete(folder, {"key": "k"})
    return folder


def _problems(folder: Path, **kwargs) -> list[str]:
    marker = read_marker(folder)
    return [str(p) for p in integrity.check(folder, marker["files"], skip={MARKER}, **kwargs)]


def test_a_fresh_folder_verifies_and_its_content_digest_ignores_where_and_when(tmp_path):
    folder = _folder(tmp_path)
    assert _problems(folder) == [] and _problems(folder, full=True) == []
    assert sorted(read_marker(folder)["files"]) == ["a.parquet", "sub/b.json"]
    time.sleep(0.01)
    copy = _folder(tmp_path / "elsewhere")  # same bytes, other place and time
    assert read_marker(copy)["content"] == read_marker(folder)["content"]


def test_truncated_grown_missing_and_added_files_are_named(tmp_path):
    folder = _folder(tmp_path)
    os.truncate(folder / "a.parquet", 5_120)
    assert _problems(folder) == [
        "a.parquet is 5,120 bytes, the marker says 10,240 (truncated)"]
    (folder / "a.parquet").write_bytes(b"x" * 20_480)
    assert _problems(folder) == ["a.parquet is 20,480 bytes, the marker says 10,240 (grown)"]
    (folder / "a.parquet").unlink()
    (folder / "extra.parquet").write_bytes(b"1")
    assert _problems(folder) == ["a.parquet is missing",
                                 "extra.parquet is not in the marker (added after the stage "
                                 "finished)"]


def test_flipped_bytes_of_the_same_size_are_found_on_every_run(tmp_path):
    """Size unchanged: a small file is always hashed; a large one is hashed because writing it
    changed its ctime."""
    folder = _folder(tmp_path, big=64 << 10)
    for name in ("a.parquet", "big.bin"):
        data = bytearray((folder / name).read_bytes())
        data[100] ^= 0xFF
        (folder / name).write_bytes(bytes(data))
    assert _problems(folder, digest_below=32 << 10) == [
        "a.parquet has the marker's size (10,240 bytes) but not its content (altered)",
        "big.bin has the marker's size (65,536 bytes) but not its content (altered)"]


def test_a_large_file_with_its_stamps_intact_is_trusted_until_verify(tmp_path):
    """What the policy lets through (bytes changed under unchanged size, mtime and ctime, as by
    bit rot) `full=True` -- `mmpipe verify` -- finds. Simulated by recording the new stamps."""
    folder = _folder(tmp_path, big=64 << 10)
    data = bytearray((folder / "big.bin").read_bytes())
    data[7] ^= 0x01
    (folder / "big.bin").write_bytes(bytes(data))
    marker = read_marker(folder)
    stat = (folder / "big.bin").stat()
    marker["files"]["big.bin"] |= {"mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}
    write_json(folder / MARKER, marker)
    assert _problems(folder, digest_below=32 << 10) == []
    assert _problems(folder, digest_below=32 << 10, full=True) == [
        "big.bin has the marker's size (65,536 bytes) but not its content (altered)"]


def test_verify_folder_says_incomplete_and_unverifiable(tmp_path):
    assert verify_folder(tmp_path / "none") == (None, [])
    folder = _folder(tmp_path)
    marker = read_marker(folder)
    del marker["files"]
    write_json(folder / MARKER, marker)
    assert [str(p) for p in verify_folder(folder)[1]] == [
        "its marker lists no files (written by an older mmpipe), so it cannot be verified"]


def _python(code: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, text=True,
                            env={**os.environ, **(env or {})}, **kwargs)


def test_a_fault_point_kills_the_process_on_its_nth_visit_only():
    code = ("from tasks import faults\n"
            "faults.point('shared_space', 'epoch'); print('first', flush=True)\n"
            "faults.point('training', 'epoch'); print('other stage', flush=True)\n"
            "faults.point('shared_space', 'epoch'); print('second', flush=True)\n")
    proc = _python(code, {"MMPIPE_FAULT": "shared_space:epoch@2"}, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert out.split() == ["first", "other", "stage"]
    assert "killing process" in err and "shared_space:epoch" in err


def test_a_malformed_fault_is_an_error_not_a_no_op(monkeypatch):
    monkeypatch.setenv("MMPIPE_FAULT", "shared_space:nosuch")
    with pytest.raises(ValueError, match="expected <stage>:<point>"):
        faults.point("shared_space", "epoch")


def test_a_stage_lock_waits_for_its_holder_and_dies_with_it(tmp_path):
    holder = _python("import time\nfrom tasks.engine.locks import stage_lock\n"
                     f"with stage_lock({str(tmp_path)!r}, 'shared_space', 'k1'):\n"
                     "    print('held', flush=True); time.sleep(120)\n",
                     stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "held"
        with locks.try_stage_lock(tmp_path, "shared_space", "k1") as free:
            assert not free
        with locks.try_stage_lock(tmp_path, "shared_space", "k2") as free:
            assert free  # another key: never waits
        waited = []
        os.kill(holder.pid, signal.SIGKILL)  # the kernel releases the lock with the process
        with locks.stage_lock(tmp_path, "shared_space", "k1", on_wait=waited.append):
            assert locks.lock_path(tmp_path, "shared_space", "k1").read_text().startswith(
                f"pid {os.getpid()} ")
        assert not waited or f"pid {holder.pid} " in waited[0]
    finally:
        holder.kill()
        holder.wait()


def test_runs_starting_together_in_a_fresh_folder_create_one_mlflow_store(tmp_path):
    """Three processes create the run directory's MLflow store at the same moment: MLflow's
    migrations run once (without the lock, most of them failed: "table ... already exists"),
    and every process then uses the store. ~15 s: creating a store runs MLflow's migrations."""
    import sqlite3
    from contextlib import closing

    go = tmp_path / "go"
    code = ("import time\nfrom pathlib import Path\nfrom tasks.tracking import runs\n"
            "print('ready', flush=True)\n"
            f"while not Path({str(go)!r}).exists(): time.sleep(0.005)\n"
            f"runs.create_store({str(tmp_path)!r})\n"
            f"runs.MlflowClient(runs.tracking_uri({str(tmp_path)!r})).search_experiments()\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    try:
        assert [proc.stdout.readline().strip() for proc in procs] == ["ready"] * 3
        go.touch()  # all at once
        errors = [proc.communicate(timeout=300)[1] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0, 0], errors
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    with closing(sqlite3.connect(tmp_path / "mlflow.db")) as db:
        assert len(db.execute("select version_num from alembic_version").fetchall()) == 1
    assert (tmp_path / "locks" / "mlflow.db.ready").read_text() == str(
        (tmp_path / "mlflow.db").resolve())


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_owner_liveness_sees_dead_reused_and_foreign_processes():
    me = recovery.owner()
    assert set(me) == {"host", "pid", "create_time"} and recovery.alive(me)
    assert not recovery.alive({**me, "pid": _dead_pid()})
    # our pid, another process's create time: the pid was reused
    assert not recovery.alive({**me, "create_time": me["create_time"] - 3600})
    assert recovery.alive({**me, "host": "elsewhere", "pid": _dead_pid()})  # cannot tell
    assert recovery.alive({"host": me["host"], "pid": me["pid"]})  # no create time: cannot tell


def test_stale_temporaries_go_and_live_ones_stay(tmp_path):
    cfg = load_config(overrides=[f"run_dir={tmp_path}"])
    stages = tmp_path / "stages" / "shared_space"
    dead, old = _dead_pid(), time.time() - 60
    crashed = stages / f".k1.{dead}-0123abcd.tmp"
    busy = stages / f".k2.{dead}-0123abcd.tmp"
    for folder in (crashed, busy):
        folder.mkdir(parents=True)
        (folder / "shared_image.parquet").write_bytes(b"half")
    loose = {name: stages / name for name in (f".latest.json.{dead}-0123abcd.tmp",
                                              f".latest.json.{os.getpid()}-0123abcd.tmp")}
    loose["digests"] = tmp_path / f".code-digests.json.{dead}-0123abcd.tmp"
    for path in loose.values():
        path.write_text("{")
        stamp = time.time() - 0.2 if str(os.getpid()) in path.name else old
        os.utime(path, (stamp, stamp))
    with locks.stage_lock(tmp_path, "shared_space", "k2"):  # someone computes k2 right now
        done = recovery.recover(cfg, "flow-run-id", LOG)
    assert sorted(done) == sorted([
        f"removed stale temporary stages/shared_space/.k1.{dead}-0123abcd.tmp",
        f"removed stale temporary stages/shared_space/.latest.json.{dead}-0123abcd.tmp",
        f"removed stale temporary .code-digests.json.{dead}-0123abcd.tmp"])
    assert not crashed.exists() and busy.exists()
    assert loose[f".latest.json.{os.getpid()}-0123abcd.tmp"].exists()


def test_stale_batch_cache_temporaries_go(tmp_path):
    """A per-batch cache entry (docs/batches.md) left half-built by a killed writer is removed
    by the next run; one a live process writes stays."""
    cfg = load_config(overrides=[f"run_dir={tmp_path}"])
    cache = tmp_path / "batch-cache" / "preprocessing" / "c0de" / "batches"
    dead, old = _dead_pid(), time.time() - 60
    crashed = cache / f".b1.{dead}-0123abcd.tmp"
    crashed.mkdir(parents=True)
    (crashed / "train.parquet").write_bytes(b"half")
    live = cache / f".b2.{os.getpid()}-0123abcd.tmp"
    live.mkdir()
    for path in (crashed, live):
        os.utime(path, (old, old) if path == crashed else None)
    done = recovery.recover(cfg, "flow-run-id", LOG)
    assert done == [f"removed stale temporary {crashed.relative_to(tmp_path)}"]
    assert not crashed.exists() and live.exists()


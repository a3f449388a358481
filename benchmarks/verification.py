"""What verifying stage outputs costs, measured in one run of this script.

(a) hash throughput of SHA-256 and BLAKE2b on this machine;
(b) a fully cached rerun of the default pipeline (in one warm process, against a local Prefect
    server, heartbeats off as under `mmpipe run`), and the time spent inside it verifying the
    five stage folders against their markers (`verify_folder` timed in place), medians;
(c) the same five folders checked in a fresh process under the run policy and fully hashed
    (`mmpipe verify`);
(d) a large stage folder (--large-mb of random bytes, like MNIST's samples): the run policy
    (size and stamps) against a full hash, which is what hashing every file on every run would
    add to each cached rerun;
(e) the other per-run costs of trusting the cache: crash recovery at the flow's start (nothing
    to recover) inside the reruns, and taking and releasing one stage lock.

Usage: python benchmarks/verification.py [--repeats 5] [--large-mb 256]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def hash_rate(path: Path, algorithm: str, repeats: int) -> float:
    """MB/s, median of `repeats`, file in the page cache."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with open(path, "rb") as file:
            hashlib.file_digest(file, algorithm)
        times.append(time.perf_counter() - start)
    return path.stat().st_size / 1e6 / statistics.median(times)


def check_time(folders: list[Path], full: bool, repeats: int) -> float:
    """Seconds to check `folders` as a fresh process would (nothing hashed before)."""
    from mmcore.io import integrity
    from mmcore.io.parquet import verify_folder

    times = []
    for _ in range(repeats):
        integrity._hashed.clear()
        start = time.perf_counter()
        for folder in folders:
            _, problems = verify_folder(folder, full=full)
            assert not problems, problems
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _timing(spent: list[float], real):
    """`real`, adding the seconds each call takes to `spent`."""
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)
    return timed


def lock_time(work: Path, repeats: int = 200) -> float:
    from tasks.engine.locks import stage_lock

    start = time.perf_counter()
    for _ in range(repeats):
        with stage_lock(work, "bench", "key"):
            pass
    return (time.perf_counter() - start) / repeats


def cached_rerun(work: Path, repeats: int) -> tuple[float, float, float, list[Path]]:
    """(median cached rerun s, median verification s inside it, median recovery s inside it,
    the five stage folders)."""
    from flows.cli import environment
    from flows.server import local_server

    run_dir = environment.prepare(work / "runs")
    local_server.use(run_dir)
    from flows.pipeline import pipeline
    from tasks.engine import recovery, skeleton

    spent: list[float] = []
    recovering: list[float] = []
    real, real_begin = skeleton.verify_folder, recovery.begin

    overrides = [f"run_dir={run_dir}"]
    try:
        with environment.without_flow_heartbeats():
            cold = pipeline(overrides=overrides)
            skeleton.verify_folder = _timing(spent, real)
            recovery.begin = _timing(recovering, real_begin)
            totals, verifying = [], []
            for _ in range(repeats):
                from mmcore.io import integrity

                integrity._hashed.clear()  # as a fresh `mmpipe run` process
                spent.clear()
                start = time.perf_counter()
                summary = pipeline(overrides=overrides)
                totals.append(time.perf_counter() - start)
                verifying.append(sum(spent))
                assert {s["state"] for s in summary["stages"].values()} == {"hit"}
    finally:
        skeleton.verify_folder, recovery.begin = real, real_begin
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()
        local_server.stop(run_dir)
    folders = [Path(info["path"]) for info in cold["stages"].values()]
    return (statistics.median(totals), statistics.median(verifying),
            statistics.median(recovering), folders)


def large_folder(work: Path, megabytes: int) -> Path:
    from mmcore.io.parquet import mark_complete

    folder = work / "large"
    folder.mkdir()
    with open(folder / "train.parquet", "wb") as file:
        for _ in range(megabytes):
            file.write(os.urandom(1 << 20))
    mark_complete(folder, {"stage": "preprocessing"})
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--large-mb", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmpipe-verify-bench-") as tmp:
        work = Path(tmp)
        large = large_folder(work, args.large_mb)
        data = large / "train.parquet"
        for algorithm in ("sha256", "blake2b"):
            print(f"(a) {algorithm}: {hash_rate(data, algorithm, args.repeats):.0f} MB/s")

        total, verifying, recovering, folders = cached_rerun(work, args.repeats)
        size = sum(f.stat().st_size for d in folders for f in d.rglob("*") if f.is_file())
        print(f"(b) default pipeline, cached rerun in-process: {total:.3f} s; verifying its "
              f"5 folders ({size / 1e6:.2f} MB) inside it: {verifying * 1000:.1f} ms "
              f"= {verifying / total:.1%} of the rerun (target <= 5%)")
        policy = check_time(folders, False, args.repeats)
        full = check_time(folders, True, args.repeats)
        print(f"(c) same folders, fresh: run policy {policy * 1000:.1f} ms, full hash "
              f"(mmpipe verify) {full * 1000:.1f} ms")

        policy = check_time([large], False, args.repeats)
        full = check_time([large], True, args.repeats)
        print(f"(d) one {args.large_mb} MB file: run policy (size + stamps) "
              f"{policy * 1000:.2f} ms = {policy / total:.2%} of the cached rerun; "
              f"full hash {full * 1000:.0f} ms = {full / total:.0%} of it")
        lock = lock_time(work)
        print(f"(e) recovery at the start of a rerun: {recovering * 1000:.1f} ms = "
              f"{recovering / total:.1%}; one stage lock: {lock * 1e6:.0f} us")


if __name__ == "__main__":
    main()

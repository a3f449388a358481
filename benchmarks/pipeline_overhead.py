"""What orchestration and tracking cost, measured in one run of this script.

(a) the cold default pipeline, (b) the same compute as a plain script (benchmarks/
plain_pipeline.py: no Prefect, no MLflow), (c) a fully cached rerun; medians over --repeats.

Two settings, because they differ a lot:
- in-process: flows called in one warm Python process, as under `mmpipe serve` or a scheduled
  deployment (imports and server start paid once, reported apart), with Prefect's flow-run
  heartbeats on (as served deployments have them) and off (as `mmpipe run` and the tests);
- per-process: `mmpipe run` as a user types it, a fresh process each time, against the local
  Prefect server the CLI keeps running, and against a temporary server per process (the
  before-remedy figure).

Usage: python benchmarks/pipeline_overhead.py [--repeats 3] [--skip-cli]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def in_process(repeats: int, work: Path) -> dict[str, dict[str, float]]:
    """Both heartbeat settings in one warm process against one local server (a process can
    not point an imported Prefect at a second server); returns {"on": ..., "off": ...}."""
    from flows.cli import environment
    from flows.server import local_server

    run_root = environment.prepare(work / "inproc")
    t0 = time.perf_counter()
    local_server.use(run_root)
    server_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    from plain_pipeline import run_plain

    from flows.pipeline import pipeline

    imports = time.perf_counter() - t0
    results = {}
    try:
        # Warm-up, not timed: creates the MLflow store and imports torch, sklearn, matplotlib
        # (which both the pipeline and the plain script need).
        pipeline(overrides=[f"run_dir={run_root}", "seed=999"])
        run_plain(work / "plain-warmup", ["seed=999"])
        for setting in ("on", "off"):
            cold, plain, cached = [], [], []
            with (contextlib.nullcontext() if setting == "on"
                  else environment.without_flow_heartbeats()):
                for i in range(repeats):
                    # A new seed misses every stage's cache: a cold run in a used run dir.
                    seed = f"seed={i if setting == 'on' else 100 + i}"
                    args = {"overrides": [f"run_dir={run_root}", seed]}
                    plain.append(timed(run_plain, work / f"plain-{setting}{i}", [seed]))
                    cold.append(timed(pipeline, **args))
                    cached.append(timed(pipeline, **args))
            results[setting] = {"server_start_s": server_start, "imports_s": imports,
                                "cold_s": median(cold), "plain_s": median(plain),
                                "cached_s": median(cached), "runs": repeats}
    finally:
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()  # send the last logs before their server goes
        local_server.stop(run_root)
    return results


def cli(repeats: int, work: Path, temporary_server: bool) -> dict[str, float]:
    mmpipe = str(Path(sys.executable).with_name("mmpipe"))
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    if temporary_server:
        env["MMPIPE_TEMPORARY_SERVER"] = "1"
    tag = "temp" if temporary_server else "server"
    cold, cached = [], []
    root = work / f"cli-{tag}"
    server_start = None
    if not temporary_server:  # started once, as the CLI does on a user's first run
        server_start = timed(subprocess.run, [mmpipe, "server", "start", "--set",
                                              f"run_dir={root}"], env=env, check=True,
                             capture_output=True)
    try:
        for i in range(repeats):
            cmd = [mmpipe, "run", "--set", f"run_dir={root}", "--set", f"name=cli{tag}{i}",
                   "--set", f"seed={100 + i}"]  # a new seed: a cold run in the same run dir
            quiet = {"env": env, "check": True, "capture_output": True}
            cold.append(timed(subprocess.run, cmd, **quiet))
            cached.append(timed(subprocess.run, cmd, **quiet))
    finally:
        if not temporary_server:
            subprocess.run([mmpipe, "server", "stop", "--set", f"run_dir={root}"], env=env,
                           capture_output=True)
    plain = [timed(subprocess.run, [sys.executable, str(ROOT / "benchmarks/plain_pipeline.py")],
                   check=True, capture_output=True) for _ in range(repeats)]
    result = {"cold_s": median(cold), "plain_s": median(plain), "cached_s": median(cached),
              "runs": repeats}
    if server_start is not None:
        result["server_start_s"] = server_start
    return result


def report(name: str, r: dict[str, float]) -> None:
    extra = "".join(f", {k} {r[k]:.2f}" for k in ("server_start_s", "imports_s") if k in r)
    print(f"{name}: cold {r['cold_s']:.2f} s, plain {r['plain_s']:.2f} s, "
          f"cached {r['cached_s']:.2f} s (medians of {r['runs']}{extra})")
    print(f"    cold / plain   = {r['cold_s'] / r['plain_s']:.2f}   (target <= 1.5)")
    print(f"    cached / cold  = {r['cached_s'] / r['cold_s']:.3f}  (target <= 0.15)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmpipe-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_cli:
            report("per-process, local server kept running", cli(args.repeats, work, False))
            report("per-process, temporary server each run", cli(args.repeats, work, True))
        warm = in_process(args.repeats, work)
        report("in-process, flow heartbeats on (as under serve)", warm["on"])
        report("in-process, flow heartbeats off (as the CLI and the tests run flows)",
               warm["off"])


if __name__ == "__main__":
    main()

"""Peak memory of preprocessing + feature extraction on generated MNIST-format data.

For each size N (default 70,000 and 140,000 images, split like MNIST: 6/7 train, 1/7 t10k) this
writes four real IDX files of class-dependent blobs plus noise (28x28 grey, 10 classes; written
in chunks, so the generator stays small), then runs, in a FRESH Python process per size,
`run_preprocessing` + `run_feature_extraction` image-only (data.text=none,
features.image_epochs=1). That process reports its own peak RSS (`getrusage(RUSAGE_SELF)
.ru_maxrss`), the wall time per stage, and RSS sampled by a thread every --interval seconds
(VmRSS, split into anonymous and file-backed pages, from /proc/self/status; psutil's rss where
/proc is missing), so the table shows in which phase the peak occurs.

Targets: peak <= 1.5 GB at 70k, and < 20 % growth when the data doubles.

Usage: python benchmarks/memory.py [--sizes 70000 140000] [--keep DIR] [--format plain|gz]
                                   [--interval 0.05] [--tracemalloc]

--keep DIR keeps the generated data and stage outputs in DIR (data is reused by a later run with
the same size, seed and format); without it everything goes in a temporary folder.
--tracemalloc also lists, per phase, the Python-level allocations (numpy included; Arrow and
torch allocate outside Python's allocator and are not seen) that grew most; it slows the run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SIDE, CLASSES, CHUNK = 28, 10, 4096
GB = 1024**3


# --------------------------------------------------------------------------- data generation

def _templates(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: 3 blob centres (y, x) and widths, fixed by the seed."""
    rng = np.random.default_rng([seed, 12345])
    centres = rng.uniform(7, 21, size=(CLASSES, 3, 2)).astype(np.float32)
    widths = rng.uniform(1.8, 3.5, size=(CLASSES, 3)).astype(np.float32)
    return centres, widths


def _chunk(rng: np.random.Generator, n: int, centres: np.ndarray, widths: np.ndarray,
           ) -> tuple[np.ndarray, np.ndarray]:
    """n images (uint8, n x 28 x 28) and labels: the class's blobs, shifted, scaled, noisy."""
    labels = rng.integers(0, CLASSES, size=n).astype(np.uint8)
    grid = np.arange(SIDE, dtype=np.float32)
    shift = rng.uniform(-3, 3, size=(n, 1, 2)).astype(np.float32)
    c = centres[labels] + shift  # (n, 3, 2)
    amp = rng.uniform(0.5, 1.0, size=(n, 3)).astype(np.float32)
    img = np.zeros((n, SIDE, SIDE), dtype=np.float32)
    for k in range(3):
        w2 = 2 * widths[labels, k] ** 2
        gy = np.exp(-((grid[None, :] - c[:, k, 0:1]) ** 2) / w2[:, None])  # (n, 28)
        gx = np.exp(-((grid[None, :] - c[:, k, 1:2]) ** 2) / w2[:, None])
        img += amp[:, k, None, None] * gy[:, :, None] * gx[:, None, :]
    img += rng.normal(0, 0.25, size=img.shape).astype(np.float32)
    return np.clip(img * 255, 0, 255).astype(np.uint8), labels


def _open_out(path: Path, gz: bool):
    return gzip.GzipFile(path, "wb", compresslevel=6, mtime=0) if gz else open(path, "wb")


def write_split(folder: Path, split: str, n: int, seed: int, gz: bool) -> None:
    """Both IDX files of a split, CHUNK rows at a time, each under a temporary name first."""
    centres, widths = _templates(seed)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    suffix = ".gz" if gz else ""
    final = [folder / (name + suffix) for name in IDX_NAMES[split]]
    tmp = [p.with_name(f".{p.name}.tmp") for p in final]
    with _open_out(tmp[0], gz) as images, _open_out(tmp[1], gz) as labels:
        images.write(np.array([0x0803, n, SIDE, SIDE], dtype=">u4").tobytes())
        labels.write(np.array([0x0801, n], dtype=">u4").tobytes())
        for start in range(0, n, CHUNK):
            x, y = _chunk(rng, min(CHUNK, n - start), centres, widths)
            images.write(x.tobytes())
            labels.write(y.tobytes())
    for t, f in zip(tmp, final, strict=True):
        os.replace(t, f)


def generate(folder: Path, n_total: int, seed: int, gz: bool) -> tuple[Path, float]:
    """IDX files for n_total images (6/7 train, 1/7 test) in folder; reused if already there."""
    n_test = n_total // 7
    want = {"n_train": n_total - n_test, "n_test": n_test, "seed": seed, "gz": gz, "v": 1}
    stamp = folder / "generated.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return folder, 0.0
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    write_split(folder, "train", want["n_train"], seed, gz)
    write_split(folder, "test", want["n_test"], seed, gz)
    stamp.write_text(json.dumps(want))
    return folder, time.perf_counter() - start


# --------------------------------------------------------------------------- measurement (child)

def _status_kb() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def _rss_reader():
    if Path("/proc/self/status").is_file():
        return _status_kb
    try:
        import psutil
    except ImportError:
        return lambda: {}
    proc = psutil.Process()
    return lambda: {"VmRSS": proc.memory_info().rss // 1024}


class Sampler(threading.Thread):
    """RSS every `interval` seconds, tagged with the phase the main thread says it is in."""

    def __init__(self, interval: float, phase: str):
        super().__init__(daemon=True)
        self.interval, self.read = interval, _rss_reader()
        self.phase, self.samples, self.t0 = phase, [], time.perf_counter()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.take()
            self._halt.wait(self.interval)

    def take(self) -> None:
        self.samples.append((time.perf_counter() - self.t0, self.phase, self.read()))

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.take()


def maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux


def child(args: argparse.Namespace) -> None:
    sampler = Sampler(args.interval, "imports")
    sampler.start()
    tracer = None
    snapshots: dict[str, object] = {}
    marks: dict[str, int] = {}
    times: dict[str, float] = {}

    traced: dict[str, dict[str, int]] = {}

    def phase(name: str) -> None:
        if tracer is not None:  # Python-level (numpy included) peak of the phase that ends
            current, peak = tracer.get_traced_memory()
            traced.setdefault(sampler.phase, {"peak_kb": 0})
            traced[sampler.phase]["peak_kb"] = max(traced[sampler.phase]["peak_kb"], peak // 1024)
            traced[sampler.phase]["end_kb"] = current // 1024
            tracer.reset_peak()
            snapshots[name] = tracer.take_snapshot()
        sampler.phase = name
        sampler.take()

    t = time.perf_counter()
    phase("imports")
    from mmcore.config import load_config
    from mmcore.data.sources import open_source
    from mmcore.stages.feature_extraction import run_feature_extraction
    from mmcore.stages.preprocessing import run_preprocessing

    times["imports"] = time.perf_counter() - t
    if args.tracemalloc:  # started after the imports: their allocations are not of interest
        import tracemalloc

        tracemalloc.start(1)
        tracer = tracemalloc
    marks["after_imports"] = maxrss_kb()
    cfg = load_config(overrides=["data.source=mnist", f"data.path={args.data}",
                                 "data.text=none", f"features.image_epochs={args.epochs}",
                                 f"seed={args.seed}"])
    samples, features = Path(args.out) / "samples", Path(args.out) / "features"
    samples.mkdir(parents=True, exist_ok=True)
    features.mkdir(parents=True, exist_ok=True)

    phase("preprocessing")
    t = time.perf_counter()
    quality = run_preprocessing(open_source(cfg.data, cfg.seed), cfg.data, cfg.seed, samples, {})
    times["preprocessing"] = time.perf_counter() - t
    marks["after_preprocessing"] = maxrss_kb()

    phase("fe.train")
    t = time.perf_counter()
    epoch_ends: list[float] = []

    def on_epoch(modality: str, epoch: int, record: dict) -> None:
        epoch_ends.append(time.perf_counter())
        phase("fe.embed" if epoch == cfg.features.image_epochs - 1 else "fe.train")

    result = run_feature_extraction(samples, cfg.features, cfg.seed, features, {}, on_epoch)
    end = time.perf_counter()
    times["feature_extraction"] = end - t
    times["fe.train"] = (epoch_ends[-1] if epoch_ends else end) - t
    times["fe.embed+save"] = end - (epoch_ends[-1] if epoch_ends else t)
    marks["after_feature_extraction"] = maxrss_kb()
    phase("end")
    sampler.stop()

    by_phase: dict[str, dict[str, int]] = {}
    for _, name, kb in sampler.samples:
        peak = by_phase.setdefault(name, {})
        for key, value in kb.items():
            peak[key] = max(peak.get(key, 0), value)
    growth = []
    if tracer is not None:
        names = list(snapshots)
        for a, b in zip(names, names[1:], strict=False):
            stats = [s for s in snapshots[b].compare_to(snapshots[a], "lineno")
                     if "<frozen" not in str(s)][:8]
            growth.append({"phase": a, "top": [str(s) for s in stats]})
    result_out = {
        "n": quality["rows_in"], "splits": quality["splits"],
        "ru_maxrss_kb": maxrss_kb(), "marks_kb": marks, "times_s": times,
        "phase_peaks_kb": by_phase, "samples": len(sampler.samples),
        "timeline": [(round(t, 2), p, kb.get("VmRSS", 0), kb.get("RssAnon", 0),
                      kb.get("RssFile", 0)) for t, p, kb in sampler.samples],
        "scores": result["scores"], "tracemalloc": growth, "traced_kb": traced,
    }
    Path(args.result).write_text(json.dumps(result_out))


# --------------------------------------------------------------------------- driver (parent)

def run_size(n: int, work: Path, args: argparse.Namespace) -> dict:
    data, gen_s = generate(work / f"data-{n}-{args.format}-s{args.seed}", n, args.seed,
                           args.format == "gz")
    out = work / f"out-{n}-{args.format}"
    result = out / "memory.json"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--data", str(data),
           "--out", str(out), "--result", str(result), "--epochs", str(args.epochs),
           "--seed", str(args.seed), "--interval", str(args.interval)]
    if args.tracemalloc:
        cmd.append("--tracemalloc")
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    r = json.loads(result.read_text())
    r["process_s"], r["generate_s"] = time.perf_counter() - start, gen_s
    return r


def _mb(kb: int) -> str:
    return f"{kb / 1024:7.0f}"


def report(results: list[dict], args: argparse.Namespace) -> None:
    print(f"\nfiles: {args.format}; features.image_epochs={args.epochs}; "
          f"torch threads: default; RSS sampled every {args.interval} s\n")
    print(f"{'images':>8} {'peak RSS MB':>11} {'after imports':>13} {'after preproc':>13} "
          f"{'preproc s':>9} {'fe train s':>10} {'fe embed s':>10} {'total s':>8} "
          f"{'image test acc':>14}")
    for r in results:
        m, t = r["marks_kb"], r["times_s"]
        print(f"{r['n']:>8} {_mb(r['ru_maxrss_kb']):>11} {_mb(m['after_imports']):>13} "
              f"{_mb(m['after_preprocessing']):>13} {t['preprocessing']:>9.1f} "
              f"{t['fe.train']:>10.1f} {t['fe.embed+save']:>10.1f} {r['process_s']:>8.1f} "
              f"{r['scores']['image']['test_acc']:>14.4f}")
    print("\npeak sampled RSS per phase, MB (VmRSS = RssAnon + RssFile + RssShmem):")
    for r in results:
        for name, kb in r["phase_peaks_kb"].items():
            print(f"  {r['n']:>8} {name:<14} VmRSS {_mb(kb.get('VmRSS', 0))}  "
                  f"anon {_mb(kb.get('RssAnon', 0))}  file {_mb(kb.get('RssFile', 0))}")
    if len(results) >= 2:
        a, b = results[0], results[-1]
        ratio = b["ru_maxrss_kb"] / a["ru_maxrss_kb"]
        print(f"\ngrowth {a['n']} -> {b['n']} images: x{ratio:.3f} ({(ratio - 1) * 100:+.1f} %; "
              f"target < +20 %)")
        for phase in a["phase_peaks_kb"]:
            if phase in b["phase_peaks_kb"]:
                pa_, pb = (x["phase_peaks_kb"][phase].get("VmRSS", 0) for x in (a, b))
                if pa_:
                    change = (pb / pa_ - 1) * 100
                    print(f"  {phase:<14} {_mb(pa_)} -> {_mb(pb)} MB ({change:+.1f} %)")
    first = results[0]
    ok70 = first["ru_maxrss_kb"] * 1024 <= 1.5 * GB
    print(f"peak at {first['n']} images: {first['ru_maxrss_kb'] / 1024**2:.2f} GB "
          f"({'meets' if ok70 else 'MISSES'} the <= 1.5 GB target)")
    for r in results:
        for name, kb in r.get("traced_kb", {}).items():
            print(f"tracemalloc, {r['n']} images, {name:<14} Python-level peak "
                  f"{kb['peak_kb'] / 1024:7.1f} MB, left at its end {kb['end_kb'] / 1024:7.1f} MB")
        for g in r["tracemalloc"]:
            print(f"\ntracemalloc, {r['n']} images, growth over phase {g['phase']}:")
            for line in g["top"]:
                print("   ", line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[70000, 140000])
    parser.add_argument("--keep", type=Path, help="keep data and outputs in this folder")
    parser.add_argument("--format", choices=["plain", "gz"], default="plain")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--json", type=Path, help="also write all results to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="mmpipe-mem-") as tmp:
        work = args.keep or Path(tmp)
        results = []
        for n in args.sizes:
            r = run_size(n, work, args)
            print(f"{n} images: peak RSS {r['ru_maxrss_kb'] / 1024:.0f} MB, "
                  f"{r['process_s']:.0f} s (data generated in {r['generate_s']:.1f} s)",
                  flush=True)
            results.append(r)
        print(f"(driver process peak RSS, data generation included: {maxrss_kb() / 1024:.0f} MB)")
        report(results, args)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

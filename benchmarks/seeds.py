"""Accuracy over seeds: each encoder alone vs. the fused model, with the plain stage functions.

Usage: python benchmarks/seeds.py [--seeds 0 1 2 3 4] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_pipeline import run_plain  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    rows = []
    print(f"{'seed':>4} {'image':>7} {'text':>7} {'fused':>7}")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            result = run_plain(Path(tmp), [f"seed={seed}", *args.overrides])
        row = (result["image_test_acc"], result["text_test_acc"], result["accuracy"])
        rows.append(row)
        print(f"{seed:>4} {row[0]:>7.4f} {row[1]:>7.4f} {row[2]:>7.4f}", flush=True)
    means = [statistics.mean(col) for col in zip(*rows, strict=True)]
    print(f"{'mean':>4} {means[0]:>7.4f} {means[1]:>7.4f} {means[2]:>7.4f}")


if __name__ == "__main__":
    main()

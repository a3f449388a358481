"""The learning-mode targets of issues 7 and 19 on the built-in data, from one `mmpipe compare`.

Usage:
  python benchmarks/modes.py [--seeds 0 1 2 3 4] [--fusions all] [--run-dir DIR] [--set k=v ...]
                             [--baseline run|REPORT]
  python benchmarks/modes.py --report runs/compare/<run id>/report.json   # check a finished one
  # every target of issues 7 and 19, the graceful-fusion ones for all 8 operators:
  python benchmarks/modes.py --seeds 0 1 2 --fusions all --baseline run

Runs `mmpipe compare` as a user would (a fresh process, the local Prefect server), reads its
report.json and checks, with means over the seeds:
  1. the fused model (the config's fusion operator) beats the best unimodal model by >= 0.03,
     and McNemar's test on the pooled paired predictions says p < 0.05;
  2. label-free cross-modal image -> text reaches >= 0.9 x text-only supervised accuracy;
  3. label-free cross-modal text -> image reaches >= 0.9 x image-only supervised (issue 19);
  4. graceful fusion (issue 19), per operator: at every corruption level of every corruption,
     accuracy >= the best single modality's - 0.02 (mean curves over the seeds);
  5. each operator's clean test accuracy drops by <= 0.01 against the same compare without
     graceful fusion (`GRACEFUL_OFF`): `--baseline run` runs that compare first (robustness
     curves off: only its clean accuracy is read), `--baseline REPORT` reads a finished one.
Prints the comparison table, the wall time, and a targets table: each target beside its figure
and MET / NOT MET (exit code 1 if any is not met). The graceful-fusion figures are means over
the seeds of each level's accuracy (the curves `mmpipe compare` draws), then the worst level:
the target is about the model's expected accuracy at a level, and one seed's test split is
too small (one row is about 0.3 points) to judge a 2-point margin on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The pre-graceful defaults: the baseline of the clean-accuracy target
GRACEFUL_OFF = ["training.missing_embedding=false", "training.modality_dropout=0",
                "training.corruption_copies=0", "training.confidence_gates=false"]


def run_compare(run_dir: Path, seeds: list[int], fusions: str, overrides: list[str]) -> Path:
    """Run `mmpipe compare`; return the path of its report.json."""
    cmd = [str(ROOT / ".venv" / "bin" / "mmpipe"), "compare", "--seeds", *map(str, seeds),
           "--fusions", fusions, "--set", f"run_dir={run_dir}"]
    for item in overrides:
        cmd += ["--set", item]
    subprocess.run(cmd, check=True, cwd=ROOT)
    reports = sorted((run_dir / "compare").glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    return reports[-1]


def _mean(report: dict, mode: str, train: str, test: str, fusion: str = "-") -> float:
    for row in report["summary"]:
        if (row["mode"], row["train"], row["test"], row["fusion"]) == (mode, train, test, fusion):
            return row["test_accuracy_mean"]
    raise KeyError(f"no {mode} {train}->{test} {fusion} cells in the report")


def targets(report: dict, fusion: str) -> list[tuple[str, bool, str]]:
    """(target, met?, figures) per target."""
    image = _mean(report, "unimodal", "image", "image")
    text = _mean(report, "unimodal", "text", "text")
    fused = _mean(report, "multimodal", "image+text", "image+text", fusion)
    sig = next(s for s in report["significance"] if s["fusion"] == fusion)
    best = max(image, text)
    image_to_text = _mean(report, "cross_modal", "image", "text")
    text_to_image = _mean(report, "cross_modal", "text", "image")
    return [
        (f"fused ({fusion}) - best unimodal >= 0.03, McNemar p < 0.05",
         fused - best >= 0.03 and sig["p_value"] < 0.05,
         f"{fused:.4f} - {best:.4f} = {fused - best:+.4f}, p = {sig['p_value']:.2g} "
         f"({sig['only_fused_right']} vs {sig['only_unimodal_right']} discordant, "
         f"{len(sig['seeds'])} seeds pooled)"),
        ("cross-modal image -> text >= 0.9 x text-only", image_to_text >= 0.9 * text,
         f"{image_to_text:.4f} vs 0.9 x {text:.4f} = {0.9 * text:.4f} "
         f"(ratio {image_to_text / text:.3f})"),
        ("cross-modal text -> image >= 0.9 x image-only", text_to_image >= 0.9 * image,
         f"{text_to_image:.4f} vs 0.9 x {image:.4f} = {0.9 * image:.4f} "
         f"(ratio {text_to_image / image:.3f})"),
    ]


def graceful_targets(report: dict, baseline: dict | None,
                     ) -> list[tuple[str, bool | None, str]]:
    """Per operator: its worst gap to the best single modality; and, against `baseline`, its
    clean accuracy drop (None: not checked, without a baseline)."""
    out = []
    for fusion in dict.fromkeys(row["fusion"] for row in report["graceful"]):
        rows = [r for r in report["graceful"] if r["fusion"] == fusion]
        worst = min(rows, key=lambda r: r["worst_gap"])
        out.append((f"graceful {fusion}: every level >= best single modality - 0.02",
                    all(r["met"] for r in rows),
                    f"worst {worst['worst_gap']:+.4f} ({worst['corrupted']} "
                    f"{worst['corruption']} at {worst['at_level']:.1f}: {worst['accuracy']:.4f} "
                    f"vs {worst['best_unimodal_model']} {worst['best_unimodal']:.4f})"))
        name = f"graceful {fusion}: clean accuracy drop <= 0.01"
        if baseline is None:
            out.append((name, None, "no baseline (--baseline run)"))
            continue
        now = _mean(report, "multimodal", "image+text", "image+text", fusion)
        before = _mean(baseline, "multimodal", "image+text", "image+text", fusion)
        out.append((name, before - now <= 0.01,
                    f"{now:.4f} vs {before:.4f} without ({now - before:+.4f})"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--fusions", default="all")
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "bench-modes"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--report", help="check an existing report.json instead of running")
    parser.add_argument("--baseline", help="'run' (run it first), or the report.json of the "
                                           "same compare without graceful fusion: check the "
                                           "clean accuracy drop against it")
    args = parser.parse_args()
    baseline = None
    if args.baseline == "run":
        off = run_compare(Path(args.run_dir).resolve(), args.seeds, args.fusions,
                          [*args.overrides, *GRACEFUL_OFF, "testing.robustness=false"])
        print(f"baseline (graceful fusion off): {off}")
        baseline = json.loads(off.read_text())
    elif args.baseline:
        baseline = json.loads(Path(args.baseline).read_text())
    start = time.perf_counter()
    path = Path(args.report) if args.report else run_compare(
        Path(args.run_dir).resolve(), args.seeds, args.fusions, args.overrides)
    wall = time.perf_counter() - start
    report = json.loads(path.read_text())
    fusion = report["transfer_matrix"]["fusion"]
    print(report["table"])
    print(f"\nreport: {path}")
    if not args.report:
        print(f"wall time: {wall:.0f} s for {len(report['cells'])} cells")
    rows = [*targets(report, fusion), *graceful_targets(report, baseline)]
    print(f"\ntargets ({len(report['cells'])} cells, seeds "
          f"{sorted({c['seed'] for c in report['cells']})}, means over the seeds):")
    print(targets_table(rows))
    sys.exit(1 if any(met is False for _, met, _ in rows) else 0)


def targets_table(rows: list[tuple[str, bool | None, str]]) -> str:
    """A Markdown table: target, figure, MET / NOT MET (NOT CHECKED: None)."""
    verdicts = {True: "MET", False: "NOT MET", None: "NOT CHECKED"}
    lines = ["| target | figure | verdict |", "|---|---|---|"]
    lines += [f"| {name} | {figures} | {verdicts[met]} |" for name, met, figures in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

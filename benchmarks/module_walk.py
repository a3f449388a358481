"""How often a cached `mmpipe run` switches between the project's modules (docs/architecture.md,
"How the house measures").

A cold run of a tiny config fills a fresh run folder; a second, fully cached run of the same
config is traced in a child process with `sys.setprofile` and `threading.setprofile`. After each
Python call or return, the current module is the innermost frame whose file lies under the
checkout's `mmcore/`, `tasks/` or `flows/` (Prefect, MLflow and the standard library are
transparent). The walk is that sequence with repeats collapsed; a step between two modules is
one switch. Reported for the whole run and for the training stage alone (from the stage table's
`run(stage="training", ...)` to its return): switches, modules visited, the module pairs with
most switches between them, and the modules entered most often. Then the run folder's local
Prefect server is stopped.

Any checkout can be measured, so that two layouts compare by the same method:

    python benchmarks/module_walk.py --run-dir /tmp/walk-now
    git archive 972be2c | tar -x -C /tmp/old
    python benchmarks/module_walk.py --root /tmp/old --main flows.cli --section fusion \\
        --run-dir /tmp/walk-old

`--main` is the module holding the checkout's `main(argv)` (`flows.cli` before the restructure),
`--section` the config section of the shared-space stage (`fusion` before the rename).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE_TABLES = ("tasks/registry.py", "tasks/stages/table.py")  # before and after the restructure


def tiny(section: str) -> list[str]:
    """`--set` options of a run that takes seconds: few rows, one epoch per learned part."""
    sets = ["data.limit=300", "features.image_epochs=1", "features.text_epochs=1",
            f"{section}.epochs=1", "training.epochs=1", "testing.robustness=false"]
    return [arg for item in sets for arg in ("--set", item)]


class Walk:
    """The sequence of project modules a thread is in, repeats collapsed."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.project = tuple(os.path.join(self.root, p) + os.sep
                             for p in ("mmcore", "tasks", "flows"))
        self.tables = {os.path.join(self.root, t) for t in STAGE_TABLES}
        self.walks: dict[int, list[str]] = collections.defaultdict(list)
        self.training: dict[int, list[int]] = {}  # thread -> [start, end] in its walk
        self.frames: set[int] = set()

    def module_of(self, frame) -> str | None:
        while frame is not None:
            name = frame.f_code.co_filename
            if name.startswith(self.project):
                return os.path.relpath(name, self.root)
            frame = frame.f_back
        return None

    def __call__(self, frame, event, arg):
        if event not in ("call", "return"):
            return
        tid = threading.get_ident()
        walk = self.walks[tid]
        code = frame.f_code
        if code.co_filename in self.tables and code.co_name == "run":
            if event == "call" and frame.f_locals.get("stage") == "training":
                self.frames.add(id(frame))
                self.training[tid] = [len(walk)]
            elif event == "return" and id(frame) in self.frames:
                self.frames.discard(id(frame))
                self.training[tid].append(len(walk))
        here = self.module_of(frame if event == "call" else frame.f_back)
        if here is not None and (not walk or walk[-1] != here):
            walk.append(here)


def summarise(walk: list[str]) -> dict:
    pairs: collections.Counter = collections.Counter()
    entries: collections.Counter = collections.Counter()
    for a, b in zip(walk, walk[1:], strict=False):
        pairs[" <-> ".join(sorted((a, b)))] += 1
        entries[b] += 1
    return {"switches": len(walk) - 1, "modules": len(set(walk)),
            "most_switched_pairs": pairs.most_common(8), "most_entered": entries.most_common(8)}


def trace(args: argparse.Namespace) -> None:
    """In this process: the cached run, traced; the figures as JSON on `args.out`."""
    sys.path.insert(0, str(args.root))
    cli = importlib.import_module(args.main)
    walk = Walk(args.root)
    argv = ["run", "--set", f"run_dir={args.run_dir}", *tiny(args.section)]
    sys.setprofile(walk)
    threading.setprofile(walk)
    try:
        rc = cli.main(argv)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    tid, main_walk = max(walk.walks.items(), key=lambda item: len(item[1]))
    result = {"rc": rc, "argv": argv, "whole_run": summarise(main_walk)}
    if len(walk.training.get(tid, [])) == 2:
        start, end = walk.training[tid]
        result["training_stage"] = summarise(main_walk[start:end + 1])
        result["training_walk"] = main_walk[start:end + 1]
    Path(args.out).write_text(json.dumps(result, indent=1))


def child(args: argparse.Namespace, *argv: str) -> subprocess.CompletedProcess:
    """This checkout's CLI (or this script) in a child process, in the measured checkout and with
    it first on the path (the local Prefect server it starts imports it too)."""
    env = {**os.environ, "PYTHONPATH": str(args.root)}
    return subprocess.run([sys.executable, *argv], env=env, cwd=args.root, text=True,
                          capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to measure")
    parser.add_argument("--main", default="flows.cli.commands", help="module with main(argv)")
    parser.add_argument("--section", default="shared_space", help="the shared space's section")
    parser.add_argument("--run-dir", type=Path, required=True, help="a fresh folder")
    parser.add_argument("--out", type=Path, help="JSON figures (default: RUN_DIR/walk.json)")
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.root, args.run_dir = args.root.resolve(), args.run_dir.resolve()
    args.out = args.out or args.run_dir / "walk.json"
    if args.trace:
        return trace(args)
    cli = ["-c", f"import sys, {args.main} as m; sys.exit(m.main(sys.argv[1:]))"]
    try:
        cold = child(args, *cli, "run", "--set", f"run_dir={args.run_dir}", *tiny(args.section))
        if cold.returncode:
            sys.exit(f"the cold run failed:\n{cold.stderr[-2000:]}")
        traced = child(args, str(Path(__file__).resolve()), "--trace", "--root", str(args.root),
                       "--main", args.main, "--section", args.section,
                       "--run-dir", str(args.run_dir), "--out", str(args.out))
        if traced.returncode or "miss" in traced.stdout.split("stages:")[-1]:
            sys.exit(f"the traced run failed or was not fully cached:\n{traced.stdout[-2000:]}"
                     f"{traced.stderr[-2000:]}")
    finally:
        child(args, *cli, "server", "stop", "--set", f"run_dir={args.run_dir}")
    result = json.loads(args.out.read_text())
    for part in ("training_stage", "whole_run"):
        figures = result.get(part, {})
        print(f"{part}: {figures.get('switches')} switches, {figures.get('modules')} modules")
        for pair, n in figures.get("most_switched_pairs", [])[:4]:
            print(f"  {n:4d}  {pair}")
        for module, n in figures.get("most_entered", [])[:3]:
            print(f"  {n:4d}  entries into {module}")
    print(f"figures: {args.out}")


if __name__ == "__main__":
    main()

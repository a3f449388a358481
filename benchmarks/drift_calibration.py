"""Calibration of the drift checks (mmcore.drift): false-alarm rate and detection rate.

On the built-in digits (scikit-learn's 1,797 scans with the project's noise model and generated
texts, `mmcore.data.digits` / `mmcore.data.digit_texts`):

- the scans are split once: half train the champion, the other half is the *population* that
  references and batches are drawn from. A row = a scan drawn uniformly (with replacement),
  corrupted with fresh noise (`corrupt_digits`, the source's defaults: gaussian 0.2 and
  occlusion 0.2) and given a fresh generated text (default text noise). So references and null
  batches are i.i.d. from one distribution, and each batch is new data for the champion;
- champion: logistic regression on the raw pixels + bag of words (vocabulary of its training
  texts), temperature-scaled on the labelled rows of each reference;
- embeddings (`--embeddings shared`, the default): a stand-in for the pipeline's shared space,
  which is too slow to train and run over thousands of batches on 2 cores: per modality, the
  class probabilities of a logistic regression on that modality alone (fitted on the champion's
  training rows), so both modalities land in one 10-d space where a row's image and text agree
  when the text describes the image; "fused" = both side by side. `--embeddings pca`: PCA of the
  pixels (16 dims) and of the bag of words (8 dims), fitted on the training rows (no shared
  space, so no alignment test);
- false alarms: batches from the reference distribution, spread over several independent
  references (one reference's own sampling noise moves the rate conditional on it; the spread
  over references is printed): each test's rate of p <= alpha (its own calibration) and of
  p <= alpha/m (its corrected threshold), and the whole report's rate (any test flagged), with
  Clopper–Pearson 95% intervals;
- detection: shifts at stated sizes and batch sizes 100/250/500, and per kind the size that costs
  the champion 5 points of accuracy (interpolated on an accuracy-vs-size curve measured with the
  same rows at every size), where the target is detection >= 0.9 on batches of 500 rows. Cells
  of one kind share their batches' random draws (common random numbers).

Usage: python benchmarks/drift_calibration.py [--small] [--alpha 0.05] [--embeddings shared|pca]
           [--references N] [--null-batches N] [--shift-batches N] [--target-batches N]
           [--batch-sizes 100 250 500] [--json FILE] [--plots DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mmcore.config import ImageNoise  # noqa: E402
from mmcore.data.digit_texts import generate_digit_texts  # noqa: E402
from mmcore.data.digits import corrupt_digits  # noqa: E402
from mmcore.data.tokenizer import split_words  # noqa: E402
from mmcore.drift import check_batch, plot_report, profile  # noqa: E402
from mmcore.drift.check import Profile, planned_tests  # noqa: E402
from mmcore.drift.predictions import fit_temperature, softmax  # noqa: E402

BASE_GAUSSIAN, BASE_OCCLUSION = 0.2, 0.2  # the digits source's default image noise
TEXT_NOISE = {"uninformative": 0.15, "ambiguous": 0.15, "wrong": 0.10}
HARD_CLASSES = 3  # the balance shift over-samples the champion's this-many hardest classes
TARGET_DROP = 0.05  # "a shift that costs the champion 5 points of accuracy"
TARGET_DETECTION = 0.9
TARGET_ROWS = 500
# Stated shift sizes; per kind also the size with a TARGET_DROP accuracy drop (found below).
STATED = {"gaussian": (0.05, 0.1, 0.2, 0.3), "occlusion": (0.05, 0.1, 0.2, 0.3),
          "oov": (0.02, 0.05, 0.1, 0.2), "balance": (0.4, 0.45, 0.6, 0.75),
          "wrong_texts": (0.05, 0.1, 0.2, 0.3)}
# Sizes on which the accuracy-vs-size curve is measured, to find the TARGET_DROP size.
CURVE = {"gaussian": np.round(np.arange(0, 0.61, 0.025), 3),
         "occlusion": np.round(np.arange(0, 0.61, 0.025), 3),
         "oov": np.round(np.arange(0, 1.001, 0.05), 3),
         "balance": np.round(np.arange(0.3, 1.001, 0.05), 3),
         "wrong_texts": np.round(np.arange(0, 0.601, 0.025), 3)}
UNITS = {"gaussian": "pixel-noise std +", "occlusion": "occluded share +",
         "oov": "share of tokens unseen", "balance": "share from 3 hardest classes",
         "wrong_texts": "share of texts naming another digit +"}


@dataclass(frozen=True)
class Shift:
    """One shift of the reference distribution; size 0 (balance: None) is no shift."""

    kind: str = "none"
    size: float = 0.0

    def label(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind} {self.size:g}"


@dataclass(frozen=True)
class Rows:
    images: np.ndarray  # (n, 8, 8) in [0, 1]
    tokens: list[list[str]]
    labels: np.ndarray


class World:
    """The digits, the population, the champion and its embedding maps."""

    def __init__(self, seed: int, embedding: str = "shared"):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        self.scans = bunch.images.astype(np.float32) / 16.0
        self.labels = bunch.target.astype(np.int64)
        order = np.random.default_rng([seed, 1]).permutation(len(self.labels))
        half = len(order) // 2
        self.train_scans, self.pool = np.sort(order[:half]), np.sort(order[half:])
        self.seed, self.embedding = seed, embedding
        self.hard: np.ndarray = np.arange(HARD_CLASSES)  # replaced after the champion is fitted

    def draw(self, n: int, shift: Shift, seed: int, scans: np.ndarray | None = None) -> Rows:
        """n i.i.d. rows of the population (or of `scans`) under `shift`."""
        rng = np.random.default_rng(seed)
        pool = self.pool if scans is None else scans
        if shift.kind == "balance":
            hard = np.isin(self.labels[pool], self.hard)
            from_hard = rng.random(n) < shift.size
            idx = np.where(from_hard, rng.choice(pool[hard], n), rng.choice(pool[~hard], n))
        else:
            idx = rng.choice(pool, n)
        noise = ImageNoise(
            gaussian=BASE_GAUSSIAN + (shift.size if shift.kind == "gaussian" else 0.0),
            occlusion=BASE_OCCLUSION + (shift.size if shift.kind == "occlusion" else 0.0))
        images = corrupt_digits(self.scans[idx], noise, int(rng.integers(2**31)))
        text_noise = dict(TEXT_NOISE)
        if shift.kind == "wrong_texts":  # informative texts turned into wrong ones
            text_noise["wrong"] += shift.size
        texts, _ = generate_digit_texts(self.labels[idx], seed=int(rng.integers(2**31)),
                                        **text_noise)
        tokens = [split_words(t) for t in texts]
        if shift.kind == "oov":
            tokens = _unseen_words(tokens, shift.size, rng)
        return Rows(images, tokens, self.labels[idx])

    def fit(self, rows_per_scan: int = 3) -> None:
        """The champion (pixels + bag of words -> logistic regression) and the PCA embeddings,
        on the training scans, each drawn `rows_per_scan` times with fresh noise."""
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression

        train = self.draw(len(self.train_scans) * rows_per_scan, Shift(),
                          seed=self.seed + 101, scans=self.train_scans)
        self.vocab = sorted({w for t in train.tokens for w in t})
        self.index = {w: i for i, w in enumerate(self.vocab)}
        pixels, bow = self._inputs(train)
        self.champion = LogisticRegression(max_iter=2000).fit(np.hstack([pixels, bow]),
                                                              train.labels)
        if self.embedding == "shared":
            self.image_model = LogisticRegression(max_iter=2000).fit(pixels, train.labels)
            self.text_model = LogisticRegression(max_iter=2000).fit(bow, train.labels)
        else:
            self.pca_image = PCA(16, random_state=0).fit(pixels)
            self.pca_text = PCA(8, random_state=0).fit(bow)
            self.scale = (np.sqrt(self.pca_image.explained_variance_.sum()),
                          np.sqrt(self.pca_text.explained_variance_.sum()))

    def _inputs(self, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
        bow = np.zeros((len(rows.tokens), len(self.vocab)))
        for i, words in enumerate(rows.tokens):
            for w in words:
                j = self.index.get(w)
                if j is not None:
                    bow[i, j] += 1
        return rows.images.reshape(len(rows.images), -1).astype(np.float64), bow

    def logits(self, rows: Rows) -> np.ndarray:
        return self.champion.decision_function(np.hstack(self._inputs(rows)))

    def profile(self, rows: Rows, temperature: float) -> Profile:
        pixels, bow = self._inputs(rows)
        if self.embedding == "shared":
            image = self.image_model.predict_proba(pixels)
            text = self.text_model.predict_proba(bow)
            fused = np.hstack([image, text])
        else:
            image, text = self.pca_image.transform(pixels), self.pca_text.transform(bow)
            fused = np.hstack([image / self.scale[0], text / self.scale[1]])
        probs = softmax(self.logits(rows), temperature)
        return profile(embeddings={"image": image, "text": text, "fused": fused},
                       images=rows.images, tokens=rows.tokens, vocab=set(self.vocab),
                       probs=probs)

    def accuracy(self, rows: Rows) -> float:
        return float(np.mean(self.logits(rows).argmax(axis=1) == rows.labels))


def _unseen_words(tokens: list[list[str]], share: float, rng: np.random.Generator,
                  ) -> list[list[str]]:
    """Each token replaced, with probability `share`, by a word of another vocabulary."""
    flat = [w for t in tokens for w in t]
    swap = rng.random(len(flat)) < share
    codes = rng.integers(0, 5000, len(flat))
    out, k = [], 0
    for t in tokens:
        out.append([f"qz{codes[k + j]}" if swap[k + j] else w for j, w in enumerate(t)])
        k += len(t)
    return out


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return float(ci.low), float(ci.high)


def target_size(world: World, kind: str, acc0: float, n_eval: int, seed: int,
                ) -> tuple[float | None, float | None, list[tuple[float, float]]]:
    """The size of `kind` that costs the champion TARGET_DROP accuracy, its measured drop, and
    the accuracy curve over CURVE[kind] (the same rows and noise draws at every size).

    The size is interpolated linearly between the two grid sizes around a TARGET_DROP drop, then
    measured. If the measured drop is more than a point off (a step function: the occluding
    patch grows by whole pixels, `mmcore.robustness.occlusion_patch`), the first grid size whose
    drop is at least TARGET_DROP is taken instead. None if no size reaches it.
    """
    def accuracy(size: float) -> float:
        return world.accuracy(world.draw(n_eval, Shift(kind, size), seed))

    curve = [(float(s), accuracy(float(s))) for s in CURVE[kind]]
    for (s0, a0), (s1, a1) in zip(curve, curve[1:], strict=False):
        d0, d1 = acc0 - a0, acc0 - a1
        if d1 >= TARGET_DROP > d0 - 1e-12:
            size = round(s0 + (TARGET_DROP - d0) / (d1 - d0) * (s1 - s0), 4)
            drop = acc0 - accuracy(size)
            if abs(drop - TARGET_DROP) > 0.01:
                size, drop = s1, d1
            return size, drop, curve
    return None, None, curve


def run_batches(world: World, references: list[tuple[Profile, float]], shift: Shift, rows: int,
                batches: int, args: argparse.Namespace, stream: int,
                on_report: Callable | None = None) -> dict:
    """`batches` batches of `rows` under `shift`; batch b is checked against reference
    b mod len(references) (each reference: its profile and the champion's temperature on it)."""
    p_values: dict[str, list[float]] = {}
    drifted, est, true, which = [], [], [], []
    for b in range(batches):
        seed = int(np.random.SeedSequence([args.seed, stream, rows, b]).generate_state(1)[0])
        reference, temperature = references[b % len(references)]
        batch = world.draw(rows, shift, seed)
        report = check_batch(reference, world.profile(batch, temperature), alpha=args.alpha,
                             seed=seed, max_reference=args.max_reference)
        for t in report.tests:
            p_values.setdefault(t.result.name, []).append(t.result.p_value)
        drifted.append(report.drifted)
        which.append(b % len(references))
        est.append(report.estimated_accuracy)
        true.append(world.accuracy(batch))
        if on_report is not None and b == 0:
            on_report(report)
    k = int(np.sum(drifted))
    threshold = args.alpha / len(p_values)
    flagged = {name: float(np.mean(np.asarray(ps) <= threshold)) for name, ps in p_values.items()}
    per_ref = [float(np.mean([d for d, r in zip(drifted, which, strict=True) if r == i]))
               for i in range(min(len(references), batches))]
    return {"shift": shift.label(), "kind": shift.kind, "size": shift.size, "rows": rows,
            "batches": batches, "detected": k, "rate": k / batches,
            "ci95": clopper_pearson(k, batches), "rate_per_reference": per_ref,
            "rate_per_test": flagged,
            "true_accuracy": float(np.mean(true)), "estimated_accuracy": float(np.mean(est)),
            "p_values": {name: [float(p) for p in ps] for name, ps in p_values.items()}}


def false_alarms(null: dict, alpha: float) -> list[dict]:
    """Per test and for the whole report: rates of p <= alpha and p <= alpha/m on null batches."""
    m = len(null["p_values"])
    out = []
    for name, ps in null["p_values"].items():
        arr = np.asarray(ps)
        k_raw, k_cor = int(np.sum(arr <= alpha)), int(np.sum(arr <= alpha / m))
        out.append({"test": name, "n": len(arr), "rate_at_alpha": k_raw / len(arr),
                    "ci_at_alpha": clopper_pearson(k_raw, len(arr)),
                    "rate_corrected": k_cor / len(arr),
                    "ci_corrected": clopper_pearson(k_cor, len(arr))})
    out.append({"test": "REPORT (any test)", "n": null["batches"], "rate_at_alpha": None,
                "ci_at_alpha": None, "rate_corrected": null["rate"],
                "ci_corrected": null["ci95"]})
    return out


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_false_alarms(rows: list[dict], alpha: float, m: int) -> bool:
    print(f"\nFalse alarms on {rows[0]['n']} batches of {TARGET_ROWS} rows from the reference "
          f"distribution (alpha {alpha}, {m} tests, corrected threshold alpha/m = {alpha / m:.4g})")
    print(f"{'test':30} {'p<=alpha':>9} {'95% CI':>15} {'p<=alpha/m':>11} {'95% CI':>15}  "
          f"target")
    ok_all = True
    for r in rows:
        lo, hi = r["ci_corrected"]
        if r["rate_at_alpha"] is None:
            ok = r["rate_corrected"] <= alpha
            target = f"<= {alpha} (estimate): {_verdict(ok)}"
            raw = " " * 25
        else:
            a_lo, a_hi = r["ci_at_alpha"]
            ok = a_lo <= alpha and lo <= alpha / m
            target = (f"p<=alpha rate and corrected rate consistent with <= {alpha} / "
                      f"{alpha / m:.3g} (CI low): {_verdict(ok)}")
            raw = f"{r['rate_at_alpha']:>9.3f} [{a_lo:.3f}, {a_hi:.3f}]"
        ok_all &= ok
        print(f"{r['test']:30} {raw} {r['rate_corrected']:>11.3f} [{lo:.3f}, {hi:.3f}]  {target}")
    return ok_all


def print_detection(cells: list[dict], targets: dict[str, float | None]) -> bool:
    print("\nDetection (report flags the batch) per shift and batch size; champion accuracy on "
          "the same batches (true, and estimated without labels)")
    print(f"{'shift':22} {'rows':>5} {'detected':>9} {'95% CI':>15} {'acc true':>9} "
          f"{'acc est':>8}  {'target':34} tests flagging most often")
    ok_all = True
    for c in cells:
        lo, hi = c["ci95"]
        target = ""
        if c["kind"] in targets and targets[c["kind"]] == c["size"] and c["rows"] == TARGET_ROWS:
            ok = c["rate"] >= TARGET_DETECTION
            ok_all &= ok
            target = f">= {TARGET_DETECTION} (5-point shift): {_verdict(ok)}"
        top = sorted(c["rate_per_test"].items(), key=lambda kv: -kv[1])[:3]
        most = ", ".join(f"{name.split(':')[1]} {rate:.2f}" for name, rate in top if rate > 0)
        print(f"{c['shift']:22} {c['rows']:>5} {c['rate']:>9.3f} [{lo:.3f}, {hi:.3f}] "
              f"{c['true_accuracy']:>9.3f} {c['estimated_accuracy']:>8.3f}  {target:34} "
              f"{most}")
    return ok_all


def plot_null(null: dict, alpha: float, path: Path) -> None:
    """ECDF of each test's p-values on null batches against the uniform diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for name, ps in null["p_values"].items():
        x = np.sort(ps)
        ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", label=name, lw=1)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="uniform")
    ax.axvline(alpha / len(null["p_values"]), color="#c44e52", lw=0.8, label="alpha/m")
    ax.set(xlabel="p-value", ylabel="share of null batches with p <= x",
           title=f"p-values on {null['batches']} null batches of {null['rows']} rows")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true",
                        help="quick settings (CI, about a minute): fewer batches and rows")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embeddings", choices=("shared", "pca"), default="shared",
                        help="what the MMD tests see (module docstring)")
    parser.add_argument("--references", type=int,
                        help="independent reference samples the null batches are spread over "
                             "(full 10, small 3)")
    parser.add_argument("--null-batches", type=int, help="null batches (full 300, small 30)")
    parser.add_argument("--shift-batches", type=int,
                        help="batches per stated shift and size (full 10, small 1)")
    parser.add_argument("--target-batches", type=int,
                        help="batches at each 5-point shift, 500 rows (full 60, small 10)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 250, 500])
    parser.add_argument("--reference-rows", type=int, help="rows per reference (3000; small 2000)")
    parser.add_argument("--max-reference", type=int,
                        help="reference rows each MMD test subsamples (1000; small 500)")
    parser.add_argument("--eval-rows", type=int,
                        help="rows per point of the accuracy curves (6000; small 2000)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--plots", type=Path, help="write the p-value ECDF and example reports")
    args = parser.parse_args(argv)
    full = {"references": 10, "null_batches": 300, "shift_batches": 10, "target_batches": 60,
            "reference_rows": 3000, "max_reference": 1000, "eval_rows": 6000}
    small = {"references": 3, "null_batches": 30, "shift_batches": 1, "target_batches": 10,
             "reference_rows": 2000, "max_reference": 500, "eval_rows": 2000}
    for key, value in (small if args.small else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def build(args: argparse.Namespace) -> tuple[World, list[tuple[Profile, float]], float]:
    """The world and champion, the references (profile, temperature) and the champion's
    accuracy on the reference distribution; prints what was built."""
    world = World(args.seed, args.embeddings)
    world.fit()
    evaluation = world.draw(args.eval_rows, Shift(), args.seed + 303)
    correct = world.logits(evaluation).argmax(axis=1) == evaluation.labels
    acc0 = float(correct.mean())
    per_class = [correct[evaluation.labels == c].mean() for c in range(10)]
    world.hard = np.sort(np.argsort(per_class)[:HARD_CLASSES])
    references = []
    for r in range(args.references):
        rows = world.draw(args.reference_rows, Shift(), seed=args.seed + 1000 + r)
        temperature = fit_temperature(world.logits(rows), rows.labels)
        references.append((world.profile(rows, temperature), temperature))
    temps = [t for _, t in references]
    print(f"champion: logistic regression on pixels + bag of words, {len(world.train_scans)} "
          f"training scans x 3 noise draws; accuracy on the reference distribution {acc0:.3f} "
          f"({args.eval_rows} rows); hardest classes {world.hard.tolist()} (natural share "
          f"{np.isin(world.labels[world.pool], world.hard).mean():.3f})")
    print(f"references: {args.references} x {args.reference_rows} rows, temperature "
          f"{min(temps):.3f}..{max(temps):.3f}; MMD subsamples {args.max_reference} reference "
          f"rows; {args.embeddings} embeddings; "
          f"{len(planned_tests(references[0][0], references[0][0]))} tests per report")
    return world, references, acc0


def find_targets(world: World, acc0: float, args: argparse.Namespace,
                 ) -> tuple[dict[str, float | None], dict[str, float | None], dict[str, list]]:
    """Per shift kind, the size that costs TARGET_DROP accuracy (None: not reached), the drop
    measured there, and the accuracy curve."""
    targets, drops, curves = {}, {}, {}
    for kind in STATED:
        targets[kind], drops[kind], curves[kind] = target_size(
            world, kind, acc0, args.eval_rows, args.seed + 404)
        where = ("not reached" if targets[kind] is None
                 else f"{UNITS[kind]} {targets[kind]:g}, measured drop {drops[kind]:.3f}")
        worst = min(a for _, a in curves[kind])
        print(f"5-point shift, {kind}: {where} (accuracy over the sizes measured "
              f"{curves[kind][0][1]:.3f} .. {worst:.3f})")
    return targets, drops, curves


def detection_cells(world: World, reference: tuple[Profile, float],
                    targets: dict[str, float | None], args: argparse.Namespace, start: float,
                    ) -> list[dict]:
    """Every (shift, size, batch size) cell, against the first reference."""
    cells = []
    for s, (kind, sizes) in enumerate(STATED.items()):
        extra = () if targets[kind] is None else (targets[kind],)
        for size in (*sizes, *extra):
            for rows in args.batch_sizes:
                is_target = size in extra and rows == TARGET_ROWS
                hook = None
                if args.plots and is_target:
                    def hook(r, kind=kind):
                        plot_report(r, args.plots / f"report_{kind}_5pt.png")
                cells.append(run_batches(
                    world, [reference], Shift(kind, size), rows,
                    args.target_batches if is_target else args.shift_batches, args,
                    stream=100 + s, on_report=hook))
                print(f"  {cells[-1]['shift']:22} rows {rows:>4}: {cells[-1]['rate']:.3f} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
    return cells


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start, cpu = time.perf_counter(), time.process_time()
    world, references, acc0 = build(args)
    m = len(planned_tests(references[0][0], references[0][0]))
    targets, drops, curves = find_targets(world, acc0, args)
    if args.plots:
        args.plots.mkdir(parents=True, exist_ok=True)
    null = run_batches(world, references, Shift(), TARGET_ROWS, args.null_batches, args,
                       stream=1, on_report=(lambda r: plot_report(
                           r, args.plots / "report_null.png")) if args.plots else None)
    print(f"  null: {null['rate']:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    cells = detection_cells(world, references[0], targets, args, start)
    fa = false_alarms(null, args.alpha)
    ok_fa = print_false_alarms(fa, args.alpha, m)
    per_ref = null["rate_per_reference"]
    print(f"report-level false-alarm rate per reference ({len(per_ref)} references, "
          f"{args.null_batches // len(per_ref)} batches each): {min(per_ref):.3f} .. "
          f"{max(per_ref):.3f}")
    ok_det = print_detection(cells, targets)
    missing = [k for k, v in targets.items() if v is None]
    if missing:
        print(f"\nno 5-point shift within the measured sizes for: {', '.join(missing)}")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"\noverall: false alarms {_verdict(ok_fa)}, detection at 5-point shifts "
          f"{_verdict(ok_det)}; wall time {wall:.0f} s, CPU time {cpu:.0f} s "
          f"({'small' if args.small else 'full'} "
          f"settings: {args.null_batches} null batches over {args.references} references, "
          f"{args.shift_batches} per stated shift and size, {args.target_batches} per 5-point "
          f"shift at {TARGET_ROWS} rows)")
    if args.plots:
        plot_null(null, args.alpha, args.plots / "null_p_values.png")
    if args.json:
        summary = {"settings": {k: (str(v) if isinstance(v, Path) else v)
                                for k, v in vars(args).items()},
                   "champion_accuracy": acc0, "temperatures": [t for _, t in references],
                   "hard_classes": world.hard.tolist(), "n_tests": m, "targets": targets,
                   "target_drops": drops, "curves": curves, "false_alarms": fa, "null": null,
                   "detection": cells,
                   "wall_s": wall, "cpu_s": cpu,
                   "pass": {"false_alarms": ok_fa, "detection": ok_det}}
        args.json.write_text(json.dumps(summary, indent=1))
    return 0 if ok_fa and ok_det else 1


if __name__ == "__main__":
    sys.exit(main())

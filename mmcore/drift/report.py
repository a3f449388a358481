"""One drift report per batch: every test, its Bonferroni threshold, and the overall verdict.

A report of m tests at family-wise level alpha flags a test when its p-value is at most
alpha / m (Bonferroni), so the chance that a batch from the reference distribution raises any
alarm is at most alpha whatever the dependence between the tests. `drifted` is "any test
flagged". The report is JSON-ready (`to_dict`, `from_dict`) and can be drawn (`plot_report`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TestResult:
    """One two-sample test before the report's correction: what was compared and how far apart.

    `reference` / `batch` keep the compared values for plots (never serialised): per-row values,
    predicted-class counts, or for MMD the permutation null (in `reference`).
    """

    __test__ = False  # not a pytest class

    name: str  # e.g. "property:brightness", "embedding:image", "prediction:confidence"
    method: str  # "ks", "mannwhitney", "chi2", "mmd2-rbf-permutation"
    statistic: float
    p_value: float
    n_reference: int
    n_batch: int
    details: dict[str, float | int | str] = field(default_factory=dict)
    reference: np.ndarray | None = field(default=None, repr=False, compare=False)
    batch: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class DriftTest:
    """A test as the report states it: its result, the corrected threshold and the verdict."""

    __test__ = False

    result: TestResult
    threshold: float  # alpha / number of tests in the report
    detected: bool  # p_value <= threshold

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {"name": r.name, "method": r.method, "statistic": r.statistic,
                "p_value": r.p_value, "threshold": self.threshold, "detected": self.detected,
                "n_reference": r.n_reference, "n_batch": r.n_batch, "details": dict(r.details)}


@dataclass(frozen=True)
class DriftReport:
    """Every test on one batch against the reference, corrected for their number."""

    alpha: float  # family-wise false-alarm rate
    tests: tuple[DriftTest, ...]
    drifted: bool  # any test detected
    n_batch: int  # rows in the batch
    # The champion's accuracy on the batch, estimated without labels (mean calibrated
    # confidence), with how it was estimated; None without predictions.
    estimated_accuracy: float | None = None
    estimate_method: str | None = None

    @property
    def detected(self) -> list[str]:
        """Names of the tests that flagged drift."""
        return [t.result.name for t in self.tests if t.detected]

    def test(self, name: str) -> DriftTest:
        """The test called `name`; KeyError listing the names otherwise."""
        for t in self.tests:
            if t.result.name == name:
                return t
        raise KeyError(f"no test {name!r} in this report: {[t.result.name for t in self.tests]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain floats, ints, bools, strings, lists and dicts."""
        return {"alpha": self.alpha, "n_tests": len(self.tests),
                "threshold": self.alpha / len(self.tests) if self.tests else None,
                "drifted": self.drifted, "detected": self.detected, "n_batch": self.n_batch,
                "estimated_accuracy": self.estimated_accuracy,
                "estimate_method": self.estimate_method,
                "tests": [t.to_dict() for t in self.tests]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftReport:
        """The report `to_dict` wrote (without the plotted values)."""
        tests = tuple(
            DriftTest(TestResult(t["name"], t["method"], t["statistic"], t["p_value"],
                                 t["n_reference"], t["n_batch"], dict(t["details"])),
                      t["threshold"], t["detected"])
            for t in data["tests"])
        return cls(data["alpha"], tests, data["drifted"], data["n_batch"],
                   data.get("estimated_accuracy"), data.get("estimate_method"))

    def save_json(self, path: str | Path) -> Path:
        """Write `to_dict()` as JSON, whole or not at all (temp file + rename)."""
        return _atomic_write(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True)
                             .encode())


def build_report(results: list[TestResult], alpha: float, n_batch: int,
                 estimated_accuracy: float | None = None,
                 estimate_method: str | None = None) -> DriftReport:
    """Flag each result at alpha / len(results) (Bonferroni); `drifted` if any is flagged."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not results:
        raise ValueError("a drift report needs at least one test")
    names = [r.name for r in results]
    if len(set(names)) != len(names):
        raise ValueError(f"test names must be unique, got {names}")
    threshold = alpha / len(results)
    tests = tuple(DriftTest(r, threshold, bool(r.p_value <= threshold)) for r in results)
    return DriftReport(alpha, tests, any(t.detected for t in tests), n_batch,
                       estimated_accuracy, estimate_method)


def _atomic_write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _draw_test(ax: Any, test: DriftTest) -> None:
    """One panel: the null and the statistic for MMD, class frequencies for the class balance,
    the two distributions otherwise."""
    r = test.result
    verdict = "DRIFT" if test.detected else "ok"
    ax.set_title(f"{r.name}\np={r.p_value:.3g} (thr {test.threshold:.2g}) {verdict}", fontsize=8,
                 color="#c44e52" if test.detected else "black")
    if r.reference is None or r.batch is None:
        ax.text(0.5, 0.5, "no values kept", ha="center", va="center", transform=ax.transAxes)
    elif r.method.startswith("mmd"):
        ax.hist(r.reference, bins=30, color="#8c8c8c", label="permutation null")
        ax.axvline(r.statistic, color="#c44e52", label="MMD² of batch")
        ax.set_xlabel("MMD²", fontsize=7)
    elif r.method == "chi2":
        k = np.arange(len(r.reference))
        ax.bar(k - 0.2, r.reference / max(r.reference.sum(), 1), 0.4, label="reference")
        ax.bar(k + 0.2, r.batch / max(r.batch.sum(), 1), 0.4, label="batch")
        ax.set_xlabel("predicted class", fontsize=7)
    else:
        lo = float(min(r.reference.min(), r.batch.min()))
        hi = float(max(r.reference.max(), r.batch.max()))
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
        ax.hist(r.reference, bins=bins, density=True, alpha=0.5, label="reference")
        ax.hist(r.batch, bins=bins, density=True, alpha=0.5, label="batch")
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)


def plot_report(report: DriftReport, path: str | Path) -> Path:
    """A PNG with one panel per test (needs the values of a report built in this process)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(report.tests))
    rows = math.ceil(len(report.tests) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, test in zip(axes.flat, report.tests, strict=False):
        _draw_test(ax, test)
    for ax in list(axes.flat)[len(report.tests):]:
        ax.set_visible(False)
    fig.suptitle(f"drift report: {'DRIFTED' if report.drifted else 'no drift'} "
                 f"(alpha {report.alpha}, {len(report.tests)} tests, {report.n_batch} rows)",
                 fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def report_json(report: DriftReport) -> str:
    """`to_dict()` as a JSON string (sorted keys)."""
    return json.dumps(report.to_dict(), sort_keys=True)


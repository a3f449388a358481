"""Figures of a comparison (`mmcore.experiments.comparison.report`): the transfer matrix as a
heatmap, fusion operators side by side, robustness curves per corrupted modality. Models are
named by `mmcore.learning_plan.mode_label`, as in every table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmcore.experiments.comparison import GRACE, kind_label
from mmcore.plotting import pyplot, save_figure


def plot_transfer_matrix(matrix: dict[str, Any], path: Path) -> Path:
    """Mean test accuracy, trained on (rows) x tested on (columns); empty cells grey."""
    plt = pyplot()
    values = np.array([[np.nan if v is None else v for v in row] for row in matrix["accuracy"]])
    fig, ax = plt.subplots(figsize=(5, 4))
    image = ax.imshow(np.ma.masked_invalid(values), vmin=0, vmax=1, cmap="viridis")
    ax.set_facecolor("#dddddd")
    ax.set_xticks(range(len(matrix["columns"])), matrix["columns"])
    ax.set_yticks(range(len(matrix["rows"])), matrix["rows"])
    ax.set(xlabel="tested on", ylabel="trained on",
           title=f"transfer matrix (both: {matrix['fusion']} fusion)")
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center",
                    color="white" if v < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="test accuracy (mean over seeds)")
    return save_figure(fig, path)


def plot_fusions(summary: pd.DataFrame, path: Path) -> Path:
    """Each fusion operator's accuracy (mean ± std over seeds) beside the best unimodal model."""
    plt = pyplot()
    fused = summary[summary["mode"] == "multimodal"]
    uni = summary[summary["mode"] == "unimodal"]
    fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(fused) + 2), 3.6))
    ax.bar(fused["fusion"], fused["test_accuracy_mean"], yerr=fused["test_accuracy_std"],
           capsize=3, color="#4c72b0")
    if not uni.empty:
        best = uni.loc[uni["test_accuracy_mean"].idxmax()]
        ax.axhline(best["test_accuracy_mean"], color="#c44e52", ls="--",
                   label=f"best unimodal: {kind_label(best.to_dict())}")
        ax.legend(loc="lower right", fontsize=8)
    low = min(fused["test_accuracy_mean"].min(), uni["test_accuracy_mean"].max()
              if not uni.empty else 1.0)
    ax.set(ylabel="test accuracy", ylim=(max(0.0, low - 0.1), 1.0),
           title="fusion operators (mean ± std over seeds)")
    ax.tick_params(axis="x", rotation=30)
    return save_figure(fig, path)


def plot_comparison_robustness(curves: pd.DataFrame, modality: str, path: Path,
                               best: pd.DataFrame | None = None) -> Path:
    """One panel per corruption of `modality`: every kind of model tested on it, mean accuracy
    over seeds against the corruption level; dashed, the best single-modality model at each level
    (`comparison.best_unimodal_curves`), and dotted `GRACE` below it: where graceful fusion's
    target says a fused model should stay above."""
    plt = pyplot()
    mine = curves[curves["modality"] == modality]
    names = list(dict.fromkeys(mine["corruption"]))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for kind, curve in mine[mine["corruption"] == name].groupby(
                ["mode", "train", "test", "fusion"], sort=False):
            label = kind_label(dict(zip(["mode", "train", "test", "fusion"], kind, strict=True)))
            curve = curve.sort_values("level")
            ax.plot(curve["level"], curve["accuracy"], marker="o", ms=2.5, lw=1.2, label=label)
        if best is not None and not best.empty:
            line = best[(best["modality"] == modality) & (best["corruption"] == name)]
            line = line.sort_values("level")
            ax.plot(line["level"], line["best_unimodal"], color="#222222", ls="--", lw=1.6,
                    label="best single modality")
            ax.plot(line["level"], line["best_unimodal"] - GRACE, color="#222222", ls=":",
                    lw=1, label=f"best single modality - {GRACE}")
        ax.set(title=f"{modality} corrupted: {name}", xlabel="corruption level",
               ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (mean over seeds)")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return save_figure(fig, path)

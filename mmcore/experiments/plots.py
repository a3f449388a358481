"""Figures of a comparison (`mmcore.comparison.report`): the transfer matrix as a heatmap,
fusion operators side by side, robustness curves per corrupted modality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_transfer_matrix(matrix: dict[str, Any], path: Path) -> Path:
    """Mean test accuracy, trained on (rows) x tested on (columns); empty cells grey."""
    plt = _pyplot()
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_fusions(summary: pd.DataFrame, path: Path) -> Path:
    """Each fusion operator's accuracy (mean ± std over seeds) beside the best unimodal model."""
    plt = _pyplot()
    fused = summary[summary["mode"] == "multimodal"]
    uni = summary[summary["mode"] == "unimodal"]
    fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(fused) + 2), 3.6))
    ax.bar(fused["fusion"], fused["test_accuracy_mean"], yerr=fused["test_accuracy_std"],
           capsize=3, color="#4c72b0")
    if not uni.empty:
        best = uni.loc[uni["test_accuracy_mean"].idxmax()]
        ax.axhline(best["test_accuracy_mean"], color="#c44e52", ls="--",
                   label=f"best unimodal ({best['train']})")
        ax.legend(loc="lower right", fontsize=8)
    low = min(fused["test_accuracy_mean"].min(), uni["test_accuracy_mean"].max()
              if not uni.empty else 1.0)
    ax.set(ylabel="test accuracy", ylim=(max(0.0, low - 0.1), 1.0),
           title="fusion operators (mean ± std over seeds)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_robustness(curves: pd.DataFrame, modality: str, path: Path) -> Path:
    """One panel per corruption of `modality`: every kind of model tested on it, mean accuracy
    over seeds against the corruption level."""
    plt = _pyplot()
    mine = curves[curves["modality"] == modality]
    names = list(dict.fromkeys(mine["corruption"]))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for (mode, train, test, fusion), curve in mine[mine["corruption"] == name].groupby(
                ["mode", "train", "test", "fusion"], sort=False):
            label = (f"multimodal {fusion}" if mode == "multimodal"
                     else f"{mode.replace('_', '-')} {train} -> {test}")
            curve = curve.sort_values("level")
            ax.plot(curve["level"], curve["accuracy"], marker="o", ms=2.5, lw=1.2, label=label)
        ax.set(title=f"{modality}: {name}", xlabel="level", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (mean over seeds)")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

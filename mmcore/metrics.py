"""Evaluation metrics and plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmcore.plotting import pyplot, save_figure


def classification_metrics(labels: np.ndarray, preds: np.ndarray, n_classes: int
                           ) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score  # 1.3 s to import: only when used

    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, average="macro",
                                   labels=list(range(n_classes)), zero_division=0)),
    }


def per_class_table(labels: np.ndarray, preds: np.ndarray, class_names: list[str]):
    """One row per class: precision, recall, F1 and support (a pandas DataFrame)."""
    import pandas as pd
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, n = precision_recall_fscore_support(labels, preds,
                                                 labels=list(range(len(class_names))),
                                                 zero_division=0)
    return pd.DataFrame({"class": class_names, "precision": p, "recall": r, "f1": f,
                         "support": n.astype(int)})


def paired_distances(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Mean L2 distance of true pairs vs. shuffled pairs: aligned when paired << random."""
    paired = np.linalg.norm(a - b, axis=1).mean()
    shuffled = np.linalg.norm(a - b[np.random.default_rng(seed).permutation(len(b))], axis=1)
    return {"mean_paired_distance": float(paired), "mean_random_distance": float(shuffled.mean())}


def retrieval_at_1(a: np.ndarray, b: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows of `a` whose nearest row of `b` has the same label (class-level retrieval)."""
    d = (a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None, :]
    return float((labels[d.argmin(axis=1)] == labels).mean())


def plot_confusion(labels: np.ndarray, preds: np.ndarray, class_names: list[str], path: Path,
                   title: str) -> Path:
    plt = pyplot()
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(labels, preds, labels=list(range(len(class_names))))
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    for (i, j), n in np.ndenumerate(cm):
        ax.text(j, i, str(n), ha="center", va="center",
                color="white" if n > cm.max() / 2 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return save_figure(fig, path, dpi=100)


def plot_shared_space(points: dict[str, np.ndarray], labels: np.ndarray, path: Path,
                      class_names: list[str] | None = None) -> Path:
    """2-D PCA of the shared space, one marker per modality, coloured by class; two legends
    (modality markers, class colours) and the principal axes named."""
    plt = pyplot()

    stacked = np.concatenate(list(points.values()))
    centred = stacked - stacked.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    cmap = plt.get_cmap("tab10")
    for (name, pts), marker in zip(points.items(), "ox^", strict=False):
        xy = (pts - stacked.mean(0)) @ vt[:2].T
        ax.scatter(xy[:, 0], xy[:, 1], c=cmap(labels % 10), s=10, marker=marker, alpha=0.6)
        ax.scatter([], [], c="grey", marker=marker, label=name)
    modality_legend = ax.legend(title="modality", loc="upper left", fontsize=8)
    ax.add_artist(modality_legend)
    names = class_names or [str(c) for c in range(int(labels.max()) + 1)]
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=cmap(c % 10), label=n)
               for c, n in enumerate(names)]
    ax.legend(handles=handles, title="class", loc="center left", bbox_to_anchor=(1.01, 0.5),
              fontsize=8)
    ax.set_xlabel("first principal component")
    ax.set_ylabel("second principal component")
    ax.set_title("shared space (PCA of the validation split)")
    return save_figure(fig, path, dpi=100)


def best_epoch(history: list[dict[str, float]]) -> int | None:
    """The epoch a reader should look at, counted from 1 as the curves' steps and the terminal
    count them: highest `val_acc`, else highest `val_pair_score`, else lowest `val_nll` (the
    first such epoch: the one `fit` keeps when it selects on that value)."""
    for key, pick in (("val_acc", max), ("val_pair_score", max), ("val_nll", min)):
        values = [r[key] for r in history if key in r]
        if len(values) == len(history) and values:
            return values.index(pick(values)) + 1
    return None


def curve_names(history: list[dict[str, float]]) -> list[str]:
    """The quantities with a train or val curve (`train_nll` and `val_nll` -> `nll`)."""
    return sorted({k.split("_", 1)[1] for r in history for k in r
                   if k.startswith(("train_", "val_")) and "_" in k})


def plot_learning_curves(history: list[dict[str, float]], path: Path, title: str) -> Path:
    """One panel per quantity (loss, accuracy, ...), train and val overlaid, the best epoch
    marked: what a per-metric chart grid cannot show side by side. Epochs counted from 1."""
    names = curve_names(history)
    if not names:
        raise ValueError(f"{path.name}: no train_ or val_ values to plot")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    best = best_epoch(history)
    for ax, name in zip(axes[0], names, strict=True):
        for split, style in (("train", "-"), ("val", "--")):
            points = [(e, r[f"{split}_{name}"]) for e, r in enumerate(history, start=1)
                      if f"{split}_{name}" in r]
            if points:
                ax.plot(*zip(*points, strict=True), style, marker=".", label=split)
        if best is not None:
            ax.axvline(best, color="grey", linewidth=0.8, linestyle=":",
                       label=f"best epoch {best}")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
        ax.set_ylabel(name)
        ax.legend()
    fig.suptitle(title)
    return save_figure(fig, path, dpi=90)

"""Evaluation metrics and plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def classification_metrics(labels: np.ndarray, preds: np.ndarray, n_classes: int
                           ) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score  # 1.3 s to import: only when used

    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, average="macro",
                                   labels=list(range(n_classes)), zero_division=0)),
    }


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_shared_space(points: dict[str, np.ndarray], labels: np.ndarray, path: Path) -> Path:
    """2-D PCA of the shared space, one marker per modality, coloured by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stacked = np.concatenate(list(points.values()))
    centred = stacked - stacked.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    fig, ax = plt.subplots(figsize=(6, 5))
    for (name, pts), marker in zip(points.items(), "ox^", strict=False):
        xy = (pts - stacked.mean(0)) @ vt[:2].T
        ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=8, marker=marker, label=name,
                   alpha=0.6)
    ax.legend()
    ax.set_title("shared space (PCA)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

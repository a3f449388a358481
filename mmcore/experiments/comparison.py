"""The comparison of learning modes, from the cells' results: one table per question.

A cell is one (mode, train modalities, test modalities, fusion operator, seed) run of the
pipeline. Its result holds `test_accuracy`, `macro_f1`, `labels_used` and the paths of its
`predictions.parquet` and `robustness.parquet`. From the cells:

- `summary`: mean ± std over seeds per kind of cell (one name per measure);
- `transfer_matrix`: trained on image / text / both x tested on image / text / both;
- `significance`: each fused model against the best unimodal model, McNemar's test on the
  paired test predictions, pooled over seeds (each seed has its own test split);
- `robustness`: mean curves over seeds, with MultiBench's relative and effective robustness
  (effective: against multimodal late fusion under the same corruption).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from mmcore.experiments.stats import mcnemar, mean_std
from mmcore.robustness import effective_robustness, relative_robustness

KIND = ["mode", "train", "test", "fusion"]
REFERENCE_FUSION = "late"  # MultiBench's effective robustness is relative to late fusion
GROUPS = ["image", "text", "image+text"]


def _joined(modalities: list[str]) -> str:
    return "+".join(sorted(modalities))


def cells_frame(cells: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per cell: its kind (mode, train, test, fusion), seed and measures."""
    return pd.DataFrame([{
        "mode": c["mode"], "train": _joined(c["train_modalities"]),
        "test": _joined(c["test_modalities"]), "fusion": c["fusion"] or "-", "seed": c["seed"],
        "labels_used": _joined(c["labels_used"]), "test_accuracy": c["test_accuracy"],
        "macro_f1": c["macro_f1"]} for c in cells])


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std over seeds of each measure, per kind of cell."""
    rows = []
    for kind, group in frame.groupby(KIND, sort=False):
        row = dict(zip(KIND, kind, strict=True))
        row["labels_used"] = group["labels_used"].iloc[0]
        row["seeds"] = len(group)
        for measure in ("test_accuracy", "macro_f1"):
            row[f"{measure}_mean"], row[f"{measure}_std"] = mean_std(group[measure].tolist())
        rows.append(row)
    return pd.DataFrame(rows)


def best_unimodal(table: pd.DataFrame) -> pd.Series | None:
    """The unimodal kind with the highest mean accuracy (the bar fusion has to clear)."""
    uni = table[table["mode"] == "unimodal"]
    return None if uni.empty else uni.loc[uni["test_accuracy_mean"].idxmax()]


def _correct(path: str | Path) -> pd.Series:
    """Per test id: was the prediction right."""
    table = pq.read_table(path, columns=["id", "label", "pred"]).to_pandas()
    return pd.Series((table["label"] == table["pred"]).to_numpy(), index=table["id"])


def significance(cells: list[dict[str, Any]], table: pd.DataFrame) -> list[dict[str, Any]]:
    """Each multimodal kind against the best unimodal kind: mean difference and McNemar's test
    on the paired predictions of each seed, pooled."""
    best = best_unimodal(table)
    if best is None:
        return []
    out = []
    uni = {c["seed"]: c for c in cells if c["mode"] == "unimodal"
           and _joined(c["train_modalities"]) == best["train"]}
    for fusion in table.loc[table["mode"] == "multimodal", "fusion"]:
        fused = {c["seed"]: c for c in cells if c["mode"] == "multimodal" and c["fusion"] == fusion}
        seeds = sorted(set(fused) & set(uni))
        a, b = [], []
        for seed in seeds:
            fa, ub = _correct(fused[seed]["predictions"]), _correct(uni[seed]["predictions"])
            a.append(fa.to_numpy())
            b.append(ub.loc[fa.index].to_numpy())
        if not seeds:
            continue
        test = mcnemar(np.concatenate(a), np.concatenate(b))
        diffs = [fused[s]["test_accuracy"] - uni[s]["test_accuracy"] for s in seeds]
        out.append({"fusion": fusion, "against": f"unimodal {best['train']}", "seeds": seeds,
                    "difference_mean": float(np.mean(diffs)),
                    "only_fused_right": test.only_a, "only_unimodal_right": test.only_b,
                    "mcnemar_statistic": test.statistic, "p_value": test.p_value,
                    "test": test.method})
    return out


def robustness_frame(cells: list[dict[str, Any]]) -> pd.DataFrame:
    """Every cell's curves, with its kind and seed."""
    parts = []
    for c in cells:
        if not c.get("robustness"):
            continue
        curves = pq.read_table(c["robustness"]).to_pandas()
        curves["mode"], curves["train"] = c["mode"], _joined(c["train_modalities"])
        curves["test"], curves["fusion"] = _joined(c["test_modalities"]), c["fusion"] or "-"
        curves["seed"] = c["seed"]
        parts.append(curves)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def robustness(curves: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mean curve per kind, corrupted modality, corruption and level; figures per kind and
    corruption: relative and effective robustness, means over seeds)."""
    if curves.empty:
        return pd.DataFrame(), pd.DataFrame()
    keys = [*KIND, "modality", "corruption"]
    mean = (curves.groupby([*keys, "level_index", "level"], sort=False)["accuracy"].mean()
            .reset_index())
    reference = {
        (seed, modality, name): group.sort_values("level_index")["accuracy"].to_numpy()
        for (seed, modality, name), group in curves[
            (curves["mode"] == "multimodal") & (curves["fusion"] == REFERENCE_FUSION)
        ].groupby(["seed", "modality", "corruption"])}
    rows = []
    for kind, group in curves.groupby(keys, sort=False):
        relative, effective = [], []
        for seed, curve in group.groupby("seed"):
            acc = curve.sort_values("level_index")["accuracy"].to_numpy()
            relative.append(relative_robustness(acc))
            ref = reference.get((seed, kind[-2], kind[-1]))
            if ref is not None:
                effective.append(effective_robustness(acc, ref))
        rows.append({**dict(zip(keys, kind, strict=True)),
                     "relative_robustness": float(np.mean(relative)),
                     "effective_robustness": float(np.mean(effective)) if effective else None})
    return mean, pd.DataFrame(rows)


def transfer_matrix(table: pd.DataFrame, curves: pd.DataFrame, fusion: str) -> pd.DataFrame:
    """Mean test accuracy, trained on (rows) x tested on (columns) image / text / both.

    Trained on both and tested on one: the multimodal model (`fusion`) with the other modality
    missing for every test row (its robustness curve at level 1). Trained on one and tested on
    both is not a model anyone trains: left empty."""
    matrix = pd.DataFrame(np.nan, index=GROUPS, columns=GROUPS)
    matrix.index.name, matrix.columns.name = "trained on", "tested on"
    for _, row in table.iterrows():
        if row["mode"] != "multimodal" or row["fusion"] == fusion:
            matrix.loc[row["train"], row["test"]] = row["test_accuracy_mean"]
    if not curves.empty:
        gone = curves[(curves["mode"] == "multimodal") & (curves["fusion"] == fusion)
                      & (curves["corruption"] == "missing") & (curves["level_index"] == 10)]
        for _, row in gone.iterrows():
            kept = "text" if row["modality"] == "image" else "image"
            matrix.loc["image+text", kept] = row["accuracy"]
    return matrix


def report(cells: list[dict[str, Any]], fusion: str) -> dict[str, Any]:
    """Everything the comparison says, as JSON-ready tables (`fusion`: the operator the
    transfer matrix shows for 'trained on both')."""
    table = summary(cells_frame(cells))
    all_curves = robustness_frame(cells)
    mean_curves, figures = robustness(all_curves)
    matrix = transfer_matrix(table, mean_curves, fusion)
    keep = ["mode", "train_modalities", "test_modalities", "fusion", "seed", "test_accuracy",
            "macro_f1", "labels_used", "run_id"]
    return {
        "cells": [{k: c.get(k) for k in keep} for c in cells],
        "summary": table.to_dict(orient="records"),
        "significance": significance(cells, table),
        "transfer_matrix": {"fusion": fusion, "rows": matrix.index.tolist(),
                            "columns": matrix.columns.tolist(),
                            "accuracy": [[None if np.isnan(v) else float(v) for v in row]
                                         for row in matrix.to_numpy()]},
        "robustness": figures.to_dict(orient="records"),
        "robustness_curves": mean_curves.to_dict(orient="records"),
    }


def _kind_label(row: dict[str, Any]) -> str:
    if row["mode"] == "multimodal":
        return f"multimodal {row['fusion']}"
    if row["mode"] == "cross_modal":
        return f"cross-modal {row['train']} -> {row['test']}"
    return f"unimodal {row['train']}"


def render(rep: dict[str, Any]) -> str:
    """The terminal table: mean ± std over seeds per kind, then fused vs best unimodal."""
    from mmcore.experiments.stats import format_mean_std

    lines = [f"{'model':<32} {'labels used':<12} {'seeds':>5}  {'test accuracy':<15} "
             f"{'macro F1':<15}"]
    frame = pd.DataFrame(rep["cells"])
    frame["train"] = frame["train_modalities"].map(_joined)
    frame["test"] = frame["test_modalities"].map(_joined)
    for row in rep["summary"]:
        kind = frame[(frame["mode"] == row["mode"]) & (frame["train"] == row["train"])
                     & (frame["test"] == row["test"])
                     & (frame["fusion"].fillna("-") == row["fusion"])]
        lines.append(f"{_kind_label(row):<32} {row['labels_used']:<12} {row['seeds']:>5}  "
                     f"{format_mean_std(kind['test_accuracy'].tolist()):<15} "
                     f"{format_mean_std(kind['macro_f1'].tolist()):<15}")
    for sig in rep["significance"]:
        lines.append(f"multimodal {sig['fusion']} vs {sig['against']}: "
                     f"{sig['difference_mean']:+.3f} accuracy, McNemar p = {sig['p_value']:.2g} "
                     f"({sig['only_fused_right']} vs {sig['only_unimodal_right']} test samples "
                     f"only one model got right, {len(sig['seeds'])} seeds pooled)")
    return "\n".join(lines)

"""The comparison of learning modes, from the cells' results: one table per question.

A cell is one (mode, train modalities, test modalities, fusion operator, seed) run of the
pipeline. Its result holds `test_accuracy`, `macro_f1`, `labels_used` and the paths of its
`predictions.parquet` and `robustness.parquet`. From the cells:

- `summary`: mean ± std over seeds per kind of cell (one name per measure);
- `transfer_matrix`: trained on image / text / both x tested on image / text / both;
- `significance`: each fused model against the best unimodal model, McNemar's test on the
  paired test predictions, pooled over seeds (each seed has its own test split);
- `robustness`: mean curves over seeds, with MultiBench's relative and effective robustness
  (effective: against multimodal late fusion under the same corruption), each column named for
  what it is (`ROBUSTNESS_COLUMNS`);
- `fully_corrupted`: each fused model with one modality fully corrupted (level 1) beside the
  unimodal model of the modality left intact, which that corruption cannot touch: where fusing
  does worse than ignoring the corrupted modality, this table shows it;
- `best_unimodal_curves` and `graceful`: at each corruption level, the best single-modality
  model (the corrupted modality's own unimodal model at that level, or an intact modality's
  unimodal model), and each fused model's worst gap to it (graceful fusion: >= -`GRACE`).

Every kind of model is named by `mmcore.learning_plan.mode_label`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from mmcore.experiments.stats import mcnemar, mean_std
from mmcore.learning_plan import mode_label
from mmcore.robustness import LEVELS, effective_robustness, relative_robustness

KIND = ["mode", "train", "test", "fusion"]
REFERENCE_FUSION = "late"  # MultiBench's effective robustness is relative to late fusion
GROUPS = ["image", "text", "image+text"]
# The robustness figures, named for what they are (the README says the same):
RELATIVE = "relative_robustness_area_levels_0_to_1"  # area under accuracy vs level: 0..1
EFFECTIVE = f"effective_robustness_sum_over_{len(LEVELS)}_levels"  # vs late fusion, 0 = same
FULLY = "accuracy_at_level_1"  # the modality fully corrupted
GRACE = 0.02  # graceful fusion: never more than this below the best single modality
ROBUSTNESS_COLUMNS = {
    RELATIVE: "area under the mean accuracy-vs-level curve, levels 0 to 1 (MultiBench's "
              "relative robustness; on the accuracy scale, 1 = perfect at every level)",
    EFFECTIVE: f"sum over the {len(LEVELS)} levels of the accuracy kept beyond late fusion's "
               "once both start from the same clean accuracy (MultiBench's effective "
               f"robustness; 0 = as late fusion, -{len(LEVELS) / 10:.1f} = 0.1 below it at "
               "every level on average)",
    FULLY: "accuracy with the modality fully corrupted (level 1), mean over seeds",
}


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
        row["model"] = kind_label(row)
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
    for _, kind in table[table["mode"] == "multimodal"].iterrows():
        fusion = kind["fusion"]
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
        out.append({"model": kind["model"], "fusion": fusion, "against": best["model"],
                    "seeds": seeds,
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
        relative, effective, fully = [], [], []
        for seed, curve in group.groupby("seed"):
            acc = curve.sort_values("level_index")["accuracy"].to_numpy()
            relative.append(relative_robustness(acc))
            fully.append(float(acc[-1]))
            ref = reference.get((seed, kind[-2], kind[-1]))
            if ref is not None:
                effective.append(effective_robustness(acc, ref))
        rows.append({**dict(zip(keys, kind, strict=True)),
                     "model": kind_label(dict(zip(keys, kind, strict=True))),
                     RELATIVE: float(np.mean(relative)),
                     EFFECTIVE: float(np.mean(effective)) if effective else None,
                     FULLY: float(np.mean(fully))})
    return mean, pd.DataFrame(rows)


def fully_corrupted(table: pd.DataFrame, figures: pd.DataFrame) -> list[dict[str, Any]]:
    """Per fused model and fully corrupted modality and corruption: its accuracy, beside the
    best unimodal model of a modality left intact (which that corruption cannot touch) and the
    difference. Negative: fusing did worse than ignoring the corrupted modality."""
    if figures.empty:
        return []
    uni = table[table["mode"] == "unimodal"]
    out = []
    fused = figures[figures["mode"] == "multimodal"]
    for _, row in fused.iterrows():
        intact = uni[uni["train"] != row["modality"]]
        if intact.empty:
            continue
        best = intact.loc[intact["test_accuracy_mean"].idxmax()]
        out.append({"model": row["model"], "fusion": row["fusion"],
                    "corrupted": row["modality"], "corruption": row["corruption"],
                    FULLY: row[FULLY], "intact_unimodal": best["model"],
                    "intact_unimodal_accuracy": float(best["test_accuracy_mean"]),
                    "difference": float(row[FULLY] - best["test_accuracy_mean"])})
    return out


def best_unimodal_curves(curves: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Per corrupted modality, corruption and level: the best single-modality model's mean
    accuracy (`best_unimodal`, and which one it is, `best_unimodal_model`): the unimodal model
    of the corrupted modality at that level, or the clean accuracy of a unimodal model of a
    modality the corruption cannot touch."""
    if curves.empty:
        return pd.DataFrame()
    uni = table[table["mode"] == "unimodal"]
    own = curves[curves["mode"] == "unimodal"]
    rows = []
    for (modality, name, index, level), _ in curves.groupby(
            ["modality", "corruption", "level_index", "level"], sort=False):
        candidates = {kind_label(r): float(r["test_accuracy_mean"])
                      for r in uni[uni["train"] != modality].to_dict(orient="records")}
        mine = own[(own["modality"] == modality) & (own["corruption"] == name)
                   & (own["level_index"] == index)]
        candidates |= {kind_label(r): float(r["accuracy"]) for r in mine.to_dict(orient="records")}
        if candidates:
            best = max(candidates, key=candidates.get)
            rows.append({"modality": modality, "corruption": name, "level_index": index,
                         "level": level, "best_unimodal": candidates[best],
                         "best_unimodal_model": best})
    return pd.DataFrame(rows)


def graceful(curves: pd.DataFrame, best: pd.DataFrame) -> list[dict[str, Any]]:
    """Per fused model and corruption: its worst gap to the best single-modality model over the
    levels (mean curves over seeds), the level of that gap, and whether it is >= -GRACE."""
    if curves.empty or best.empty:
        return []
    keys = ["modality", "corruption", "level_index"]
    fused = curves[curves["mode"] == "multimodal"].merge(best, on=[*keys, "level"])
    out = []
    for (fusion, modality, name), group in fused.groupby(["fusion", "modality", "corruption"],
                                                          sort=False):
        gaps = group["accuracy"] - group["best_unimodal"]
        worst = group.loc[gaps.idxmin()]
        out.append({"fusion": fusion, "corrupted": modality, "corruption": name,
                    "worst_gap": float(gaps.min()), "at_level": float(worst["level"]),
                    "accuracy": float(worst["accuracy"]),
                    "best_unimodal": float(worst["best_unimodal"]),
                    "best_unimodal_model": worst["best_unimodal_model"],
                    "met": bool(gaps.min() >= -GRACE - 1e-9)})
    return out


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
    best = best_unimodal_curves(mean_curves, table)
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
        "robustness_columns": ROBUSTNESS_COLUMNS,
        "fully_corrupted": fully_corrupted(table, figures),
        "robustness_curves": mean_curves.to_dict(orient="records"),
        "best_unimodal_curves": best.to_dict(orient="records"),
        "graceful": graceful(mean_curves, best),
    }


def kind_label(row: dict[str, Any]) -> str:
    """A kind of cell (mode, train, test, fusion as in `summary`'s rows) by
    `mmcore.learning_plan.mode_label`."""
    fusion = row.get("fusion")
    return mode_label(row["mode"], row["train"].split("+"), row["test"].split("+"),
                      fusion if fusion not in (None, "-") else None)


def _model_rows(rep: dict[str, Any]) -> list[dict[str, str]]:
    """Per kind of model: its name, labels used, seeds, and test accuracy and macro F1 as
    mean ± std over seeds (3 digits)."""
    from mmcore.experiments.stats import format_mean_std

    frame = pd.DataFrame(rep["cells"])
    frame["train"] = frame["train_modalities"].map(_joined)
    frame["test"] = frame["test_modalities"].map(_joined)
    rows = []
    for row in rep["summary"]:
        kind = frame[(frame["mode"] == row["mode"]) & (frame["train"] == row["train"])
                     & (frame["test"] == row["test"])
                     & (frame["fusion"].fillna("-") == row["fusion"])]
        rows.append({"model": kind_label(row), "labels used": row["labels_used"],
                     "seeds": str(row["seeds"]),
                     "test accuracy": format_mean_std(kind["test_accuracy"].tolist()),
                     "macro F1": format_mean_std(kind["macro_f1"].tolist())})
    return rows


def _worst_fully_corrupted(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """Per fused model, its fully corrupted case furthest below the intact unimodal model
    (only those below it)."""
    worst: dict[str, dict[str, Any]] = {}
    for row in rep.get("fully_corrupted", []):
        if row["difference"] < 0 and (row["model"] not in worst
                                      or row["difference"] < worst[row["model"]]["difference"]):
            worst[row["model"]] = row
    return list(worst.values())


def render(rep: dict[str, Any]) -> str:
    """The terminal table: mean ± std over seeds per kind, then fused vs best unimodal, then
    where a fused model falls below the unimodal model of an intact modality."""
    lines = [f"{'model':<32} {'labels used':<12} {'seeds':>5}  {'test accuracy':<15} "
             f"{'macro F1':<15}"]
    for row in _model_rows(rep):
        lines.append(f"{row['model']:<32} {row['labels used']:<12} {row['seeds']:>5}  "
                     f"{row['test accuracy']:<15} {row['macro F1']:<15}")
    for sig in rep["significance"]:
        lines.append(f"{sig['model']} vs {sig['against']}: "
                     f"{sig['difference_mean']:+.3f} accuracy, McNemar p = {sig['p_value']:.2g} "
                     f"({sig['only_fused_right']} vs {sig['only_unimodal_right']} test samples "
                     "only one model got right"
                     + (f", {len(sig['seeds'])} seeds pooled)" if len(sig["seeds"]) > 1 else ")"))
    for row in _worst_fully_corrupted(rep):
        lines.append(f"{row['model']} with {row['corrupted']} fully corrupted "
                     f"({row['corruption']}): {row[FULLY]:.3f}, below "
                     f"{row['intact_unimodal']} ({row['intact_unimodal_accuracy']:.3f})")
    return "\n".join(lines)


# MLflow's description renders Markdown tables without cell padding ("labels usedseeds"): an
# em space after each cell keeps the columns apart there (Prefect's artifacts show it as text).
CELL_GAP = "&emsp;"


def markdown_table(header: list[str], rows: list[list[str]], gap: str = "") -> list[str]:
    """A Markdown table; `gap` after each cell (`CELL_GAP` for MLflow's descriptions)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(f"{c}{gap}" for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


def p_value(p: float) -> str:
    """A p-value in 2 significant digits; below 0.001 as `< 0.001`."""
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def headline_markdown(rep: dict[str, Any], gap: str = "") -> str:
    """The comparison's headline in Markdown (the MLflow parent run's description, the Prefect
    flow run's artifact): test accuracy per model, fused - best unimodal with McNemar's p, and
    the fused models that fall below an intact modality's unimodal model when the other
    modality is fully corrupted. `gap`: see `markdown_table`."""
    rows = _model_rows(rep)
    lines = ["#### **Test accuracy** (mean ± std over seeds)", "",
             *markdown_table(list(rows[0]) if rows else ["model"],
                             [list(r.values()) for r in rows], gap)]
    if rep["significance"]:
        against = rep["significance"][0]["against"]
        lines += ["", f"#### **Fused − best unimodal** ({against})", "",
                  "McNemar's test on the paired test predictions, seeds pooled:", "",
                  *markdown_table(["fused model", "Δ accuracy", "only fused right",
                                   "only unimodal right", "McNemar p"],
                                  [[s["model"], f"{s['difference_mean']:+.3f}",
                                    str(s["only_fused_right"]), str(s["only_unimodal_right"]),
                                    p_value(s["p_value"])] for s in rep["significance"]], gap)]
    worst = _worst_fully_corrupted(rep)
    if worst:
        lines += ["", "#### **Below a single modality when the other is fully corrupted**", "",
                  "Level 1, the worst case per fused model; the intact modality's unimodal "
                  "model cannot be touched by that corruption:", "",
                  *markdown_table(["fused model", "fully corrupted", "accuracy",
                                   "intact unimodal", "its accuracy", "Δ"],
                                  [[r["model"], f"{r['corrupted']} ({r['corruption']})",
                                    f"{r[FULLY]:.3f}", r["intact_unimodal"],
                                    f"{r['intact_unimodal_accuracy']:.3f}",
                                    f"{r['difference']:+.3f}"] for r in worst], gap)]
    return "\n".join(lines)

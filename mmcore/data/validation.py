"""Row validation shared by every source, and the quality report that counts what it finds.

Each row is checked in a fixed order and rejected for the first reason that applies; with
`on_bad_row=fail` that first bad row raises a `DataError` naming its file, row and field.
Invariant, asserted in tests: rows_in == rows_kept + rows_rejected.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from mmcore.data.source import DataError, SourceInfo

SPLITS = ("train", "val", "test")
MAX_EXAMPLES = 3  # rejected rows quoted per reason in the report


@dataclass
class QualityReport:
    source: str
    rows_in: int = 0
    rows_kept: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> rows
    modified: Counter = field(default_factory=Counter)  # kept rows that were changed, by how
    examples: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    classes: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> rows
    notes: dict[str, str] = field(default_factory=dict)  # what the source reports of itself
    # texts: the length they were cut to, how it was chosen, and how much was cut
    text: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    def reject(self, reason: str, field_name: str, origin: str) -> None:
        self.rejected[reason] += 1
        quoted = self.examples.setdefault(reason, [])
        if len(quoted) < MAX_EXAMPLES:
            quoted.append({"origin": origin, "field": field_name})

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows_in": self.rows_in,
            "rows_kept": self.rows_kept,
            "rows_rejected": self.rows_rejected,
            "rejected": dict(sorted(self.rejected.items())),
            "modified": dict(sorted(self.modified.items())),
            "examples": self.examples,
            "splits": self.splits,
            "classes": self.classes,
            "source_notes": self.notes,
            **({"text": self.text} if self.text else {}),
        }

    def summary(self) -> str:
        parts = [f"{self.rows_in} rows in, {self.rows_kept} kept, {self.rows_rejected} rejected"]
        parts += [f"{reason}: {n}" for reason, n in sorted(self.rejected.items())]
        parts += [f"{how}: {n}" for how, n in sorted(self.modified.items())]
        return "; ".join(parts)


def row_error(reason: str, field_name: str, origin: str) -> DataError:
    file, _, row = origin.rpartition(":")
    if not file or not row.isdigit():
        file, row = origin, ""
    return DataError(f"bad row ({reason})", file=file, row=int(row) if row else None,
                     field=field_name, reason=reason)


@dataclass
class RowChecks:
    """Per-row facts of one batch, computed without per-row Python where possible."""

    image_ok_size: np.ndarray | None
    image_finite: np.ndarray | None
    channel_sums: np.ndarray | None  # (N, C) sum and sum of squares, for normalisation stats
    channel_sumsq: np.ndarray | None


def image_checks(column: pa.ListArray, info: SourceInfo) -> RowChecks:
    """Size and finiteness of every image in a batch, plus per-channel sums of good ones."""
    if info.image_shape is None:
        return RowChecks(None, None, None, None)
    c, h, w = info.image_shape
    width = c * h * w
    n = len(column)
    present = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    offsets = column.offsets.to_numpy()
    lengths = np.where(present, np.diff(offsets), -1)
    ok_size = lengths == width
    values = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    finite = np.ones(n, dtype=bool)
    sums = np.zeros((n, c))
    sumsq = np.zeros((n, c))
    rows = np.flatnonzero(ok_size)
    if len(rows):
        starts = offsets[:-1][rows]
        pixels = values[starts[:, None] + np.arange(width)].reshape(len(rows), c, h * w)
        finite[rows] = np.isfinite(pixels).all(axis=(1, 2))
        good = np.where(np.isfinite(pixels), pixels, 0.0).astype(np.float64)
        sums[rows] = good.sum(axis=2)
        sumsq[rows] = (good**2).sum(axis=2)
    return RowChecks(ok_size, finite, sums, sumsq)


class RowValidator:
    """Decides, row by row, keep or reject (and why), remembering ids across batches."""

    def __init__(self, info: SourceInfo, report: QualityReport, on_bad_row: str):
        self.info = info
        self.report = report
        self.fail = on_bad_row == "fail"
        self.first_split: dict[str, str | None] = {}  # id -> split of its first occurrence
        self.n_classes = len(info.class_names)

    def _reason(self, i: int, row: dict[str, Any], checks: RowChecks) -> tuple[str, str] | None:
        if row["problem"]:
            return row["problem"], row["problem_field"] or "row"
        sample_id = row["id"]
        if sample_id is None or not str(sample_id).strip():
            return "missing_id", "id"
        if sample_id in self.first_split:
            first = self.first_split[sample_id]
            if row["split"] and first and row["split"] != first:
                return "id_in_two_splits", "id"
            return "duplicate_id", "id"
        if row["label"] is None:
            return "missing_label", "label"
        if not 0 <= row["label"] < self.n_classes:
            return "label_out_of_range", "label"
        if row["split"] is not None and row["split"] not in SPLITS:
            return "unknown_split", "split"
        if checks.image_ok_size is not None:
            if row["image"] is None:
                return "missing_image", "image"
            if not checks.image_ok_size[i]:
                return "wrong_image_size", "image"
            if not checks.image_finite[i]:
                return "non_finite_pixels", "image"
        if self.info.has_text:
            if row["text"] is None:
                return "missing_text", "text"
            if not row["text"].strip():
                return "empty_text", "text"
        return None

    def check(self, batch: pa.RecordBatch, checks: RowChecks) -> np.ndarray:
        """Boolean keep-mask for the batch; rejected rows are counted (or raise, with `fail`)."""
        cols = {name: batch.column(name).to_pylist() for name in
                ("id", "label", "split", "text", "origin", "problem", "problem_field")}
        cols["image"] = [True] * batch.num_rows
        image_null = batch.column("image").is_null().to_pylist()
        keep = np.zeros(batch.num_rows, dtype=bool)
        for i in range(batch.num_rows):
            row = {name: values[i] for name, values in cols.items()}
            row["image"] = None if image_null[i] else True
            verdict = self._reason(i, row, checks)
            self.report.rows_in += 1
            if verdict is None:
                keep[i] = True
                self.first_split[row["id"]] = row["split"]
                self.report.rows_kept += 1
                continue
            reason, field_name = verdict
            if self.fail:
                raise row_error(reason, field_name, row["origin"] or "?")
            self.report.reject(reason, field_name, row["origin"] or "?")
        return keep

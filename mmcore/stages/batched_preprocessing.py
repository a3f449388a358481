"""Preprocessing of data that arrives in batches (`data.batched`, docs/batches.md).

The reference transforms (vocabulary, text length, image normalisation) are fitted once on the
train rows of the reference window (the first `data.reference_batches` batches) and frozen. Each
batch is then preprocessed on its own, with them, into a folder of the per-batch cache keyed by
its content and the reference: a batch seen before is a cache hit, whatever else arrived. The
stage's output is assembled from those folders: `train|val|test.parquet` with each batch's rows
as their own row groups and a `batch` column, `vocab.parquet` and `quality.json`, whose
`per_batch` section gives each batch's counts and out-of-vocabulary rate (the share of its
tokens the frozen vocabulary does not know: a signal of new wording).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmcore.config import DataConfig, digest
from mmcore.data.batches import Batch, ChainedSource, batch_data_config, list_batches
from mmcore.data.source import DataError, Source
from mmcore.data.sources import open_source
from mmcore.data.tokenizer import Vocabulary
from mmcore.data.validation import SPLITS, QualityReport
from mmcore.io.parquet import atomic_writer, cached_folder, folder_complete, write_json, write_table
from mmcore.stages.preprocessing import (
    _check_splits,
    _first_pass,
    _schema,
    _second_pass,
    _text_length,
    _vocabulary,
    image_stats,
)

UNKNOWN = 1  # Vocabulary's index for a word it does not know


def _open(cfg: DataConfig, batch: Batch, seed: int, classes: list[str] | None) -> Source:
    source = open_source(batch_data_config(cfg, batch, classes), seed)
    if classes is not None and source.info.class_names != classes:
        raise DataError(f"batch '{batch.name}' has classes {source.info.class_names}, the "
                        f"reference window {classes}; set data.classes", file=batch.path,
                        field="label", reason="batch_classes_differ")
    return source


def fit_reference(cfg: DataConfig, batches: list[Batch], seed: int, folder: Path) -> None:
    """Fit the reference transforms on the train rows of `batches` (the reference window) into
    `folder`: `reference.json` and, for texts, `vocab.parquet` (token, index, count)."""
    sources = [_open(cfg, b, seed, None) for b in batches]
    chain = ChainedSource(sources)
    info = chain.info
    for batch, source in zip(batches, sources, strict=True):
        if source.info.class_names != info.class_names:
            raise DataError(f"batch '{batch.name}' has other classes than batch "
                            f"'{batches[0].name}'; set data.classes", file=batch.path,
                            field="label", reason="batch_classes_differ")
    report = QualityReport(source=info.name)
    p1 = _first_pass(chain, cfg, report, hashed=True)
    if report.rows_kept == 0:
        raise DataError(f"no usable rows in the reference window: {report.summary()}",
                        file=batches[0].path, reason="empty_dataset")
    split = p1.given_split
    _check_splits(split, p1.labels, info.class_names)
    reference: dict[str, Any] = {
        "batches": [b.name for b in batches], "class_names": info.class_names,
        "image_mean": None, "image_std": None, "max_text_tokens": None, "text": {}}
    if info.image_shape is not None:
        mean, std = image_stats(p1, split, info)
        reference |= {"image_mean": mean.tolist(), "image_std": std.tolist()}
    if info.has_text:
        reference["max_text_tokens"] = _text_length(p1, split, cfg.max_text_tokens, report)
        reference["text"] = report.text
        vocab, _, counts = _vocabulary(p1, split, cfg.min_token_count)
        write_table(folder / "vocab.parquet", pa.table({
            "token": pa.array(vocab.tokens, pa.string()),
            "index": pa.array(range(len(vocab)), pa.int32()),
            "count": pa.array([counts.get(t, 0) for t in vocab.tokens], pa.int64())}))
    write_json(folder / "reference.json", reference)


def _reference_meta(reference: dict[str, Any], info, cfg: DataConfig, vocab_size: int,
                    ) -> dict[str, Any]:
    """The sample files' metadata the model's input layers read (as in preprocessing.py)."""
    return {
        "class_names": reference["class_names"],
        "image_shape": list(info.image_shape) if info.image_shape is not None else None,
        "pixel_max": float(info.extra.get("pixel_max", 1.0)),
        "image_mean": reference["image_mean"], "image_std": reference["image_std"],
        "max_text_tokens": reference["max_text_tokens"], "lowercase": cfg.lowercase,
        "vocab_size": vocab_size, "modalities": list(info.modalities),
    }


def ingest_batch(cfg: DataConfig, batch: Batch, seed: int, reference: dict[str, Any],
                 vocab: Vocabulary | None, folder: Path) -> None:
    """One batch, encoded with the frozen reference transforms, into `folder`:
    `train|val|test.parquet` (with a `batch` column) and `quality.json` (with `oov_rate`)."""
    source = _open(cfg, batch, seed, reference["class_names"])
    info = source.info
    report = QualityReport(source=info.name)
    p1 = _first_pass(source, cfg, report, hashed=True)
    mapping, oov = None, None
    if info.has_text:
        lengths = np.diff(p1.token_offsets)
        truncated = int((lengths > reference["max_text_tokens"]).sum())
        if truncated:
            report.modified["text_truncated"] += truncated
        p1.truncate(reference["max_text_tokens"])
        mapping = np.array([vocab.index.get(w, UNKNOWN) for w in p1.words] + [UNKNOWN],
                           dtype=np.int32)
        ids = mapping[p1.token_values]
        oov = round(float((ids == UNKNOWN).mean()), 6) if len(ids) else 0.0
    meta = _reference_meta(reference, info, cfg, len(vocab) if vocab else 0)
    schema = _schema(info, info.image_shape is not None, info.has_text, batched=True)
    _second_pass(source, cfg, p1, p1.given_split, mapping, folder, schema,
                 {**meta, "batch": batch.name}, batch=batch.name)
    for code, name in enumerate(SPLITS):
        rows = p1.given_split == code
        report.splits[name] = int(rows.sum())
        per_class = np.bincount(p1.labels[rows], minlength=len(info.class_names))
        report.classes[name] = {info.class_names[c]: int(n) for c, n in enumerate(per_class)}
    write_json(folder / "quality.json", {**report.to_dict(), "batch": batch.name,
                                         "index": batch.index, "oov_rate": oov})


def _assemble(folders: list[Path], out_dir: Path, meta: dict[str, Any]) -> None:
    """The stage's split files from the batches' files, each batch its own row groups."""
    for name in SPLITS:
        files = [pq.ParquetFile(folder / f"{name}.parquet") for folder in folders]
        schema = files[0].schema_arrow.remove_metadata()
        with atomic_writer(out_dir / f"{name}.parquet", schema, {**meta, "split": name}) as out:
            for file in files:
                for group in range(file.num_row_groups):
                    table = file.read_row_group(group)
                    if table.num_rows:
                        out.write_table(table.replace_schema_metadata(None))


def _combined_quality(per_batch: dict[str, dict[str, Any]], reference: dict[str, Any],
                      batches: dict[str, list[str]]) -> dict[str, Any]:
    """One quality report for the whole stage: totals, and each batch's own."""
    reports = list(per_batch.values())

    def total(key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for report in reports:
            for reason, n in report[key].items():
                out[reason] = out.get(reason, 0) + n
        return out

    classes = {split: {c: sum(r["classes"][split][c] for r in reports)
                       for c in reference["class_names"]} for split in SPLITS}
    return {
        "source": reports[0]["source"],
        **{k: sum(r[k] for r in reports) for k in ("rows_in", "rows_kept", "rows_rejected")},
        "rejected": total("rejected"), "modified": total("modified"),
        "splits": {s: sum(r["splits"][s] for r in reports) for s in SPLITS},
        "classes": classes,
        **({"text": reference["text"]} if reference["text"] else {}),
        "batches": batches,
        "per_batch": {name: {k: r[k] for k in ("index", "rows_in", "rows_kept", "rows_rejected",
                                               "splits", "oov_rate")}
                      for name, r in per_batch.items()},
    }


def run_batched_preprocessing(cfg: DataConfig, seed: int, out_dir: Path, meta: dict[str, Any],
                              cache_root: Path, seen: dict[str, str]) -> dict[str, Any]:
    """Preprocess every batch of `cfg.path` into `out_dir`, each taken from the per-batch cache
    under `cache_root` when it is there (a folder per code version: `tasks/engine/keys.py`).
    `seen`: name -> digest of the batches ingested before; the others are new. Returns
    the quality report, plus `computed`: the batches not found in the cache."""
    batches = list_batches(cfg.path)
    window = batches[:cfg.reference_batches]
    settings = cfg.model_dump(mode="json", exclude={"path", "batched"})
    ref_key = digest({"batches": [[b.name, b.digest] for b in window], "data": settings,
                      "seed": seed})
    ref_dir = cached_folder(cache_root / "reference" / ref_key,
                            lambda tmp: fit_reference(cfg, window, seed, tmp))
    reference = read_json(ref_dir / "reference.json")
    vocab = None
    if (ref_dir / "vocab.parquet").exists():
        vocab = Vocabulary(pq.read_table(ref_dir / "vocab.parquet").column("token").to_pylist())
    keys = {b.name: digest({"batch": b.name, "content": b.digest, "reference": ref_key})
            for b in batches}
    computed = [b.name for b in batches
                if not folder_complete(cache_root / "batches" / keys[b.name])]
    folders = [cached_folder(cache_root / "batches" / keys[b.name],
                             lambda tmp, b=b: ingest_batch(cfg, b, seed, reference, vocab, tmp))
               for b in batches]
    per_batch = {b.name: read_json(f / "quality.json") for b, f in zip(batches, folders,
                                                                       strict=True)}
    names = {"all": [b.name for b in batches],
             "new": [b.name for b in batches if seen.get(b.name) != b.digest],
             "reference": reference["batches"], "digests": {b.name: b.digest for b in batches}}
    quality = _combined_quality(per_batch, reference, names)
    for split, rows in quality["splits"].items():
        if not rows:
            raise DataError(f"split '{split}' has no samples in any batch; add data or change "
                            "data.split", file=cfg.path, field="split", reason="empty_split")
    info = _open(cfg, window[0], seed, reference["class_names"]).info
    file_meta = {**meta, **_reference_meta(reference, info, cfg, len(vocab) if vocab else 0),
                 "batches": names["all"], "new_batches": names["new"],
                 "reference_batches": names["reference"], "batch_keys": keys}
    _assemble(folders, out_dir, file_meta)
    if vocab is not None:
        write_table(out_dir / "vocab.parquet", pq.read_table(ref_dir / "vocab.parquet"),
                    meta=file_meta)
    write_json(out_dir / "quality.json", quality)
    return {**quality, "computed": computed}


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())

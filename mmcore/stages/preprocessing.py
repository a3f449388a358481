"""Preprocessing: raw rows -> validated, tokenised samples, one Parquet file per split.

Two streaming passes over the source, so memory is bounded by one batch plus a few numbers per
row (id, label, split, pixel sums) and the token ids (int32 each):
  1. validate every row, tokenise its whole text with a provisional dictionary, sum its pixels;
     then assign splits (stratified, seeded), choose the text length (`data.max_text_tokens`,
     or `auto` from the train split's lengths) and cut the token ids to it, compute
     normalisation stats and the vocabulary from the train split only;
  2. read the source again and write the kept rows, tokenised, per split.

Pixels are stored on the unit scale; the normalisation statistics go into the files' metadata and
are applied by the model's first layer (`mmcore.modalities.image.Standardize`), so that training
and the registered model run the same transform. Texts are tokenised by `TextEncoding`, which the
registered model runs on raw text, with the length chosen here (recorded in the metadata).
"""

from __future__ import annotations

import os
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mmcore.config import DataConfig
from mmcore.data.batches import hash_split
from mmcore.data.source import DataError, Source
from mmcore.data.tokenizer import AUTO_RULE, TextEncoding, Vocabulary, auto_max_tokens
from mmcore.data.validation import SPLITS, QualityReport, RowValidator, image_checks
from mmcore.io.parquet import atomic_writer, embedding_array, write_json, write_table

SPLIT_CODE = {None: -1, "train": 0, "val": 1, "test": 2}


@dataclass
class _Pass1:
    """What pass 1 remembers about each kept row (index = position among kept rows)."""

    keep: np.ndarray  # bool per source row
    labels: np.ndarray
    given_split: np.ndarray  # SPLIT_CODE per kept row
    sums: np.ndarray | None  # (kept, C)
    sumsq: np.ndarray | None
    token_values: np.ndarray  # provisional token ids, flat (whole texts until `truncate`)
    token_offsets: np.ndarray
    words: list[str]  # provisional id -> word

    def truncate(self, max_tokens: int) -> None:
        """Keep the first `max_tokens` token ids of every text (what `TextEncoding` keeps)."""
        starts, lengths = self.token_offsets[:-1], np.diff(self.token_offsets)
        keep = np.ones(len(self.token_values), dtype=bool)
        for row in np.flatnonzero(lengths > max_tokens):  # only the long texts: no big index
            keep[starts[row] + max_tokens:starts[row] + lengths[row]] = False
        self.token_values = self.token_values[keep]
        self.token_offsets = np.concatenate([[0], np.cumsum(np.minimum(lengths, max_tokens))])


def _limited(source: Source, cfg: DataConfig):
    """The source's batches, cut at `cfg.limit` rows."""
    remaining = cfg.limit
    for batch in source.batches(cfg.batch_rows):
        if remaining is not None:
            if remaining <= 0:
                return
            batch = batch.slice(0, remaining)
            remaining -= batch.num_rows
        yield batch


def _first_pass(source: Source, cfg: DataConfig, report: QualityReport,
                hashed: bool = False) -> _Pass1:
    """Pass 1 (module docstring). `hashed`: rows without a split from the source get one from
    a hash of their id (`mmcore.data.batches.hash_split`), final at once."""
    validator = RowValidator(source.info, report, cfg.on_bad_row)
    keep, labels, splits = [], array("q"), array("b")
    sums, sumsq = [], []
    token_values, token_offsets = array("i"), array("q", [0])
    word_ids: dict[str, int] = {}
    encoding = TextEncoding(cfg.lowercase, max_tokens=None)  # cut once the length is chosen
    for batch in _limited(source, cfg):
        checks = image_checks(batch.column("image"), source.info)
        mask = validator.check(batch, checks)
        keep.append(mask)
        rows = np.flatnonzero(mask)
        labels.extend(np.asarray(batch.column("label").to_numpy(zero_copy_only=False))[rows]
                      .astype(np.int64))
        given = [SPLIT_CODE[s] for s in batch.column("split").take(rows).to_pylist()]
        if hashed:
            drawn = hash_split(batch.column("id").take(rows).to_pylist(), cfg.split.val,
                               cfg.split.test)
            given = [g if g >= 0 else int(d) for g, d in zip(given, drawn, strict=True)]
        splits.extend(given)
        if checks.channel_sums is not None:
            sums.append(checks.channel_sums[rows])
            sumsq.append(checks.channel_sumsq[rows])
        if source.info.has_text:
            for text in batch.column("text").take(rows).to_pylist():
                if "\ufffd" in text:  # a source replaced undecodable bytes
                    report.modified["undecodable_text_replaced"] += 1
                words, _ = encoding.words(text)
                token_values.extend(word_ids.setdefault(w, len(word_ids)) for w in words)
                token_offsets.append(len(token_values))
    keep_all = np.concatenate(keep) if keep else np.zeros(0, dtype=bool)
    return _Pass1(
        keep=keep_all,
        labels=np.frombuffer(labels, dtype=np.int64),
        given_split=np.frombuffer(splits, dtype=np.int8),
        sums=np.concatenate(sums) if sums else None,
        sumsq=np.concatenate(sumsq) if sumsq else None,
        token_values=np.frombuffer(token_values, dtype=np.int32),
        token_offsets=np.frombuffer(token_offsets, dtype=np.int64),
        words=list(word_ids),
    )


def _where(info) -> str | None:
    """The source's file, or the folder its files share, for error messages."""
    if not info.files:
        return None
    return str(info.files[0]) if len(info.files) == 1 else os.path.commonpath(info.files)


def assign_splits(labels: np.ndarray, given: np.ndarray, val: float, test: float,
                  seed: int) -> np.ndarray:
    """Split code per row. Rows the source puts in val/test stay there; rows given as train or
    none are split stratified by class, carving val (test) only when no row was given val (test).
    """
    out = given.astype(np.int8).copy()
    carve_val = not (given == SPLIT_CODE["val"]).any()
    carve_test = not (given == SPLIT_CODE["test"]).any()
    free = np.flatnonzero(given <= SPLIT_CODE["train"])
    rng = np.random.default_rng(seed)
    for label in np.unique(labels[free]):
        rows = rng.permutation(free[labels[free] == label])
        n_test = int(round(test * len(rows))) if carve_test else 0
        n_val = int(round(val * len(rows))) if carve_val else 0
        out[rows[:n_test]] = SPLIT_CODE["test"]
        out[rows[n_test:n_test + n_val]] = SPLIT_CODE["val"]
        out[rows[n_test + n_val:]] = SPLIT_CODE["train"]
    return out


def _check_splits(split: np.ndarray, labels: np.ndarray, class_names: list[str]) -> None:
    for code, name in enumerate(SPLITS):
        if not (split == code).any():
            raise DataError(f"split '{name}' has no samples after validation; "
                            "add data or change data.split", field="split", reason="empty_split")
    present = set(np.unique(labels[split == 0]).tolist())
    absent = [class_names[c] for c in range(len(class_names)) if c not in present]
    if absent:
        raise DataError(f"classes absent from the train split: {absent}", field="label",
                        reason="class_absent_from_train")


def _text_length(p1: _Pass1, split: np.ndarray, setting: int | str,
                 report: QualityReport) -> int:
    """Choose the text length, cut every text to it, and report what was cut."""
    lengths = np.diff(p1.token_offsets)
    train = lengths[split == SPLIT_CODE["train"]]
    max_tokens = auto_max_tokens(train) if setting == "auto" else int(setting)
    cut = np.maximum(lengths - max_tokens, 0)
    truncated = cut > 0
    total = int(lengths.sum())
    report.text = {
        "max_text_tokens": max_tokens,
        "chosen_by": f"auto: {AUTO_RULE}" if setting == "auto" else "data.max_text_tokens",
        "train_tokens_per_text": ({"median": float(np.median(train)),
                                   "p95": float(np.percentile(train, 95)),
                                   "max": int(train.max())} if len(train) else {}),
        "rows_truncated": int(truncated.sum()),
        "rows_truncated_by_split": {name: int(truncated[split == code].sum())
                                    for code, name in enumerate(SPLITS)},
        "tokens": total,
        "tokens_dropped": int(cut.sum()),
        "tokens_kept_share": round(1 - float(cut.sum()) / total, 4) if total else 1.0,
    }
    if truncated.any():
        report.modified["text_truncated"] += int(truncated.sum())
    p1.truncate(max_tokens)
    return max_tokens


def _vocabulary(p1: _Pass1, split: np.ndarray, min_count: int) -> tuple[Vocabulary, np.ndarray,
                                                                         dict[str, int]]:
    """Vocabulary from train texts only, and provisional id -> final index."""
    lengths = np.diff(p1.token_offsets)
    is_train = np.repeat(split == SPLIT_CODE["train"], lengths)
    counts = np.bincount(p1.token_values[is_train], minlength=len(p1.words))
    order = sorted((i for i in range(len(p1.words)) if counts[i] >= min_count),
                   key=lambda i: (-counts[i], p1.words[i]))
    vocab = Vocabulary(p1.words[i] for i in order)
    mapping = np.ones(len(p1.words) + 1, dtype=np.int32)  # unknown by default
    for i in order:
        mapping[i] = vocab.index[p1.words[i]]
    return vocab, mapping, {p1.words[i]: int(counts[i]) for i in order}


def image_stats(p1: _Pass1, split: np.ndarray, info) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the train rows' pixels: the normalisation."""
    train = split == SPLIT_CODE["train"]
    pixels = np.prod(info.image_shape[1:])
    mean = p1.sums[train].sum(axis=0) / (train.sum() * pixels)
    var = p1.sumsq[train].sum(axis=0) / (train.sum() * pixels) - mean**2
    return mean, np.sqrt(np.maximum(var, 1e-12))


def _schema(info, with_image: bool, with_text: bool, batched: bool = False) -> pa.Schema:
    fields = [("id", pa.string()), ("label", pa.int64()), ("split", pa.string())]
    if batched:
        fields.append(("batch", pa.string()))
    if with_image:
        c, h, w = info.image_shape
        fields.append(("image", pa.list_(pa.float32(), c * h * w)))
    if with_text:
        fields += [("text", pa.string()), ("tokens", pa.list_(pa.int32()))]
    return pa.schema(fields)


def run_preprocessing(source: Source, cfg: DataConfig, seed: int, out_dir: Path,
                      meta: dict[str, Any]) -> dict[str, Any]:
    """Validate, split, normalise and tokenise `source` into `out_dir`; return the quality report.

    Writes `train|val|test.parquet`, `vocab.parquet` (text sources) and `quality.json`.
    """
    info = source.info
    report = QualityReport(source=info.name)
    p1 = _first_pass(source, cfg, report)
    if report.rows_kept == 0:
        raise DataError(f"no usable rows: {report.summary()}", file=_where(info),
                        reason="empty_dataset")
    split = assign_splits(p1.labels, p1.given_split, cfg.split.val, cfg.split.test, seed)
    _check_splits(split, p1.labels, info.class_names)
    report.notes = dict(info.extra)

    with_image, with_text = info.image_shape is not None, info.has_text
    mean, std = image_stats(p1, split, info) if with_image else (None, None)
    vocab, mapping, counts, max_tokens = (None, None, {}, None)
    if with_text:
        max_tokens = _text_length(p1, split, cfg.max_text_tokens, report)
        vocab, mapping, counts = _vocabulary(p1, split, cfg.min_token_count)

    schema_meta = {
        **meta,
        "class_names": info.class_names,
        "image_shape": list(info.image_shape) if with_image else None,
        "pixel_max": float(info.extra.get("pixel_max", 1.0)),
        "image_mean": mean.tolist() if mean is not None else None,
        "image_std": std.tolist() if std is not None else None,
        "max_text_tokens": max_tokens,  # chosen above; None without texts
        "lowercase": cfg.lowercase,
        "vocab_size": len(vocab) if vocab else 0,
        "modalities": list(info.modalities),
    }
    _second_pass(source, cfg, p1, split, mapping, out_dir, _schema(info, with_image, with_text),
                 schema_meta)
    if vocab is not None:
        table = pa.table({
            "token": pa.array(vocab.tokens, pa.string()),
            "index": pa.array(range(len(vocab)), pa.int32()),
            "count": pa.array([counts.get(t, 0) for t in vocab.tokens], pa.int64()),
        })
        write_table(out_dir / "vocab.parquet", table, meta=schema_meta)
    for code, name in enumerate(SPLITS):
        rows = split == code
        report.splits[name] = int(rows.sum())
        per_class = np.bincount(p1.labels[rows], minlength=len(info.class_names))
        report.classes[name] = {info.class_names[c]: int(n) for c, n in enumerate(per_class)}
    quality = report.to_dict()
    write_json(out_dir / "quality.json", quality)
    return quality


def _second_pass(source, cfg, p1, split, mapping, out_dir, schema, meta,
                 batch: str | None = None) -> None:
    paths = {name: out_dir / f"{name}.parquet" for name in SPLITS}
    writers = {}
    try:
        for name in SPLITS:
            writers[name] = atomic_writer(paths[name], schema, {**meta, "split": name})
        opened = {name: ctx.__enter__() for name, ctx in writers.items()}
        row0, kept0 = 0, 0
        for rows_in in _limited(source, cfg):
            mask = p1.keep[row0:row0 + rows_in.num_rows]
            row0 += rows_in.num_rows
            rows = np.flatnonzero(mask)
            kept = np.arange(kept0, kept0 + len(rows))
            kept0 += len(rows)
            table = _samples(rows_in.take(pa.array(rows)), kept, p1, split, mapping, schema,
                             batch)
            for code, name in enumerate(SPLITS):
                part = table.filter(pa.array(split[kept] == code))
                if part.num_rows:
                    opened[name].write_table(part)
    except BaseException as exc:
        for ctx in writers.values():
            ctx.__exit__(type(exc), exc, exc.__traceback__)
        raise
    for ctx in writers.values():
        ctx.__exit__(None, None, None)


def _same_as_first_pass(batch: pa.RecordBatch, width: int) -> None:
    """Pass 2 trusts pass 1's verdicts; a row whose image changed in between is an error."""
    column = batch.column("image")
    sizes = np.where(column.is_null().to_numpy(zero_copy_only=False), -1,
                     np.diff(column.offsets.to_numpy()))
    for i in np.flatnonzero(sizes != width)[:1]:
        origin = batch.column("origin")[int(i)].as_py() or "?"
        file, _, row = origin.rpartition(":")
        raise DataError("the source changed between the two reads of preprocessing "
                        "(this image was valid in the first)", file=file or origin,
                        row=int(row) if row.isdigit() else None, field="image",
                        reason="source_changed")


def _samples(batch, kept, p1, split, mapping, schema, batch_name=None) -> pa.Table:
    codes = split[kept]
    cols: dict[str, pa.Array] = {
        "id": batch.column("id").cast(pa.string()),
        "label": pa.array(p1.labels[kept], pa.int64()),
        "split": pa.array(np.array(SPLITS, dtype=object)[codes], pa.string()),
    }
    if "batch" in schema.names:
        cols["batch"] = pa.array([batch_name] * len(kept), pa.string())
    if "image" in schema.names:
        width = schema.field("image").type.list_size
        _same_as_first_pass(batch, width)
        flat = batch.column("image").flatten().to_numpy(zero_copy_only=False)
        cols["image"] = embedding_array(flat.reshape(len(kept), width))
    if "text" in schema.names:
        starts, stops = p1.token_offsets[kept], p1.token_offsets[kept + 1]
        offsets = np.concatenate([[0], np.cumsum(stops - starts)]).astype(np.int32)
        index = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)]
                               or [np.zeros(0, dtype=np.int64)]).astype(np.int64)
        values = mapping[p1.token_values[index]]
        cols["text"] = batch.column("text")
        cols["tokens"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32()))
    return pa.Table.from_pydict(cols, schema=schema)

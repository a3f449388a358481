"""Generated digit descriptions for an image-only digit source (`data.text=generated`).

Texts come from `mmcore.data.digit_texts.generate_digit_texts`, in fixed blocks of BLOCK rows
of the wrapped source: block b (global rows b*BLOCK ...) is generated in one call seeded from
(seed, b). The stream is re-cut on block boundaries, so a row's text depends only on the seed,
its position and the labels of its block, never on `batch_rows`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from mmcore.config import DataConfig
from mmcore.data.digit_texts import WORDS, generate_digit_texts
from mmcore.data.source import RAW_SCHEMA, DataError, Source, SourceInfo

BLOCK = 1024  # rows generated per call; part of the reproducibility contract


def digit_of_class(class_names: list[str]) -> np.ndarray:
    """The digit each class index stands for; DataError unless every name is a digit or word."""
    digits = []
    for name in class_names:
        if name in WORDS:
            digits.append(WORDS.index(name))
        elif len(name) == 1 and name.isdigit():
            digits.append(int(name))
        else:
            raise DataError(f"data.text=generated needs digit classes ('0'..'9' or "
                            f"'zero'..'nine'), got {class_names}", field="data.text",
                            reason="classes_not_digits")
    return np.asarray(digits, dtype=np.int64)


def block_seed(seed: int, block: int) -> int:
    """An int seed for one block, independent for every (seed, block)."""
    return int(np.random.SeedSequence([seed, block]).generate_state(1)[0])


def _recut(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """The same rows in batches of exactly `size` (the last may be shorter)."""
    pending: list[pa.RecordBatch] = []
    n = 0
    for batch in batches:
        pending.append(batch)
        n += batch.num_rows
        while n >= size:
            table = pa.Table.from_batches(pending, schema=RAW_SCHEMA)
            yield table.slice(0, size).combine_chunks().to_batches()[0]
            pending, n = table.slice(size).to_batches(), n - size
    if n:
        yield pa.Table.from_batches(pending, schema=RAW_SCHEMA).combine_chunks().to_batches()[0]


class GeneratedTextSource:
    """Wraps an image-only digit source and adds one generated text per row."""

    def __init__(self, source: Source, cfg: DataConfig, seed: int):
        if source.info.has_text:
            raise DataError(f"{source.info.name} already has texts; data.text=generated "
                            "replaces none", field="data.text")
        self.source, self.seed, self.noise = source, seed, cfg.text_noise
        self._digits = digit_of_class(source.info.class_names)
        info = source.info
        self.info = SourceInfo(
            name=f"{info.name}+generated_text", class_names=list(info.class_names),
            image_shape=info.image_shape, has_text=True, files=list(info.files),
            extra={**info.extra, "text": "generated", "text_block": str(BLOCK),
                   "text_noise": json.dumps(self.noise.model_dump(), sort_keys=True)},
        )

    def _texts(self, labels: pa.Array, block: int) -> list[str]:
        """Texts for one block's labels; rows with unusable labels get a digit-0 text."""
        raw = np.asarray(labels.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
        ok = (raw >= 0) & (raw < len(self._digits))
        digits = np.where(ok, self._digits[np.where(ok, raw, 0)], 0)
        texts, _ = generate_digit_texts(
            digits, uninformative=self.noise.uninformative, ambiguous=self.noise.ambiguous,
            wrong=self.noise.wrong, seed=block_seed(self.seed, block))
        return texts

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The wrapped rows with `text` filled, in batches of at most `batch_rows`."""
        chunk = BLOCK * max(1, batch_rows // BLOCK)  # whole blocks, close to batch_rows
        text_at = RAW_SCHEMA.get_field_index("text")
        for c, batch in enumerate(_recut(self.source.batches(batch_rows), chunk)):
            texts: list[str] = []
            for start in range(0, batch.num_rows, BLOCK):
                labels = batch.column("label").slice(start, BLOCK)
                texts += self._texts(labels, c * (chunk // BLOCK) + start // BLOCK)
            batch = batch.set_column(text_at, RAW_SCHEMA.field("text"),
                                     pa.array(texts, pa.string()))
            for start in range(0, batch.num_rows, batch_rows):
                yield batch.slice(start, batch_rows)

"""Two single-modality datasets paired by class: the MNIST-SVHN construction.

Each image-side row of class L gets a text-side row whose (mapped) class is L, drawn from a
seeded permutation of that class's texts and reused round-robin when a class has fewer texts
than images. The same seed gives the same pairs, whatever `batch_rows` is.

What this means for results: a pair shares only its class. The text carries no information
about its image beyond the class, so cross-modal alignment learns class-level, not
instance-level, correspondence; retrieval "hits" are same-class hits, and fusion can gain only
because the text is a second, independent view of the label.

Splits: when every usable text-side row has a split (IMDB does), an image row of split s only
draws texts of split s, so no test text is ever paired with a training image. Image rows with
no split (validation carves val/test later) draw from all texts of the class; if the text side
has no splits, all image rows do, and a text may then appear in more than one split.

Classes: with a `label_map`, only the image-side classes it reaches are paired, renumbered
0..k-1 in image-class order (MNIST digits 0/1 with IMDB neg/pos is a 2-class dataset). Image
rows of other classes are left out by design, not as bad rows; their number is reported in
`info.extra["image_rows_outside_label_map"]` (and so in the quality report).

Text-side rows are validated like any source's rows (`mmcore.data.validation`); the unusable
ones are left out of the pools and counted in `text_report` and in `info.extra`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from mmcore.config import DataConfig, PairSide
from mmcore.data.source import DataError, Source, SourceInfo, raw_batch
from mmcore.data.sources import open_source
from mmcore.data.validation import QualityReport, RowValidator, image_checks

SPLIT_SEED = {None: 0, "train": 1, "val": 2, "test": 3}  # stable per-pool seed component


def open_side(cfg: DataConfig, side: PairSide, text: str, seed: int) -> Source:
    """The source one side of the pair names, with the data settings of `cfg`."""
    side_cfg = cfg.model_copy(update={"source": side.source, "path": side.path, "pair": None,
                                      "text": text, "limit": None})
    return open_source(side_cfg, seed)


class PairedSource:
    """Image rows of one source, each with a same-class text from another source."""

    def __init__(self, cfg: DataConfig, seed: int):
        if cfg.pair is None:
            raise DataError("data.source=paired needs a data.pair section", field="data.pair")
        if cfg.text != "source":
            raise DataError(f"paired texts come from data.pair.texts; data.text={cfg.text} "
                            "is not supported", field="data.text")
        if cfg.pair.images.source == "imdb":
            raise DataError("data.pair.images (imdb) has no images", field="data.pair.images")
        self.images = open_side(cfg, cfg.pair.images, "none", seed)
        texts = open_side(cfg, cfg.pair.texts, "source", seed)
        if self.images.info.image_shape is None:
            raise DataError(f"data.pair.images ({cfg.pair.images.source}) has no images",
                            field="data.pair.images")
        if not texts.info.has_text:
            raise DataError(f"data.pair.texts ({cfg.pair.texts.source}) has no texts",
                            field="data.pair.texts")
        self.seed = seed
        n_image, n_text = len(self.images.info.class_names), len(texts.info.class_names)
        self.label_map = (dict(cfg.pair.label_map) if cfg.pair.label_map is not None
                          else {c: c for c in range(min(n_image, n_text))})
        for t, i in self.label_map.items():
            if not (0 <= t < n_text and 0 <= i < n_image):
                raise DataError(f"label_map {t} -> {i}: text classes are 0..{n_text - 1}, "
                                f"image classes 0..{n_image - 1}", field="data.pair.label_map")
        self.text_report = QualityReport(source=texts.info.name)
        self._load_texts(texts, cfg)
        info = self.images.info
        # An explicit label map chooses the image classes; without one every image class stays
        # (one with no texts gets `no_pair_for_class` rows).
        self.classes = (sorted(set(self.label_map.values())) if cfg.pair.label_map is not None
                        else list(range(n_image)))
        self.renumber = {c: i for i, c in enumerate(self.classes)}
        self.outside_label_map = 0
        self.info = SourceInfo(
            name=f"paired({info.name}+{texts.info.name})",
            class_names=[info.class_names[c] for c in self.classes],
            image_shape=info.image_shape, has_text=True, files=[*info.files, *texts.info.files],
            extra={**info.extra, "pairing": "by_class", "label_map": json.dumps(self.label_map),
                   "text_side": self.text_report.summary(),
                   "text_rows_unmapped": str(self.unmapped)},
        )
        if hasattr(texts, "replaced_count"):  # text files whose undecodable bytes were replaced
            self.info.extra["text_side_undecodable_replaced"] = str(texts.replaced_count)

    def _load_texts(self, source: Source, cfg: DataConfig) -> None:
        """Usable text-side rows, in source order, indexed by (split, image-side class)."""
        validator = RowValidator(source.info, self.text_report, cfg.on_bad_row)
        self.texts: list[tuple[str, str]] = []  # (id, text)
        members: dict[tuple[str | None, int], list[int]] = {}
        splits: set[str | None] = set()
        self.unmapped = 0
        for batch in source.batches(cfg.batch_rows):
            keep = validator.check(batch, image_checks(batch.column("image"), source.info))
            rows = batch.select(["id", "label", "split", "text"]).filter(pa.array(keep)).to_pydict()
            for sample_id, label, split, text in zip(rows["id"], rows["label"], rows["split"],
                                                     rows["text"], strict=True):
                if label not in self.label_map:
                    self.unmapped += 1
                    continue
                members.setdefault((split, self.label_map[label]), []).append(len(self.texts))
                self.texts.append((sample_id, text))
                splits.add(split)
        self.split_aware = bool(splits) and None not in splits
        self.pools = self._pools(members)

    def _pools(self, members: dict[tuple[str | None, int], list[int]],
               ) -> dict[tuple[str | None, int], np.ndarray]:
        """Text indices per (split, class) and per (None, class), each in a seeded order."""
        by_key: dict[tuple[str | None, int], list[int]] = {}
        for (split, label), rows in members.items():
            if self.split_aware:
                by_key.setdefault((split, label), []).extend(rows)
            by_key.setdefault((None, label), []).extend(rows)
        pools = {}
        for (split, label), rows in by_key.items():
            rng = np.random.default_rng([self.seed, label, SPLIT_SEED.get(split, 4)])
            pools[(split, label)] = np.asarray(sorted(rows))[rng.permutation(len(rows))]
        return pools

    def _pair(self, label: int | None, split: str | None, used: dict) -> tuple[int | None,
                                                                                str | None]:
        """(text index, problem) for one image row; `used` counts draws per pool."""
        if label is None or label not in self.renumber:
            return None, None  # validation reports the label
        key = (split if self.split_aware else None, label)
        pool = self.pools.get(key)
        if pool is None:
            return None, "no_pair_for_class"
        k = used.get(key, 0)
        used[key] = k + 1
        return int(pool[k % len(pool)]), None

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Image-side batches with a paired text per row; ids are `<image id>|<text id>`."""
        used: dict[tuple[str | None, int], int] = {}
        self.outside_label_map = 0
        n_image_classes = len(self.images.info.class_names)
        for batch in self.images.batches(batch_rows):
            labels = batch.column("label").to_pylist()
            outside = [lab is not None and 0 <= lab < n_image_classes and lab not in self.renumber
                       for lab in labels]
            self.outside_label_map += sum(outside)
            self.info.extra["image_rows_outside_label_map"] = str(self.outside_label_map)
            batch = batch.filter(pa.array([not o for o in outside]))
            if batch.num_rows == 0:
                continue
            cols = batch.select(["id", "label", "split", "problem", "problem_field"]).to_pydict()
            ids, texts, problems, fields = [], [], [], []
            for image_id, label, split, problem, field in zip(
                    cols["id"], cols["label"], cols["split"], cols["problem"],
                    cols["problem_field"], strict=True):
                index, new = (None, None) if problem else self._pair(label, split, used)
                text_id, text = self.texts[index] if index is not None else (None, None)
                ids.append(f"{image_id}|{text_id}" if text_id is not None else image_id)
                texts.append(text)
                problems.append(problem or new)
                fields.append(field if problem else ("text" if new else None))
            yield raw_batch({
                "id": ids, "split": batch.column("split"),
                "label": [self.renumber.get(lab, lab) for lab in cols["label"]],
                "image": batch.column("image"), "text": texts, "origin": batch.column("origin"),
                "problem": problems, "problem_field": fields,
            })

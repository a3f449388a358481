"""Corruption augmentation for graceful fusion: embeddings of corrupted copies of the train split.

The classifier trains on shared embeddings, but a test-time corruption acts on the raw input
(`mmcore.stages.robustness_curves`). So each copy corrupts the stored train samples of one
modality per row, with a corruption of `mmcore.robustness` (not `missing`: modality dropout
covers that) at a level drawn from `AUGMENT_LEVELS`, and embeds them with the trained encoders and
projections; the row's other modalities keep their clean embeddings. A fused head trained on
both learns how much a corrupted modality is still worth, and blank rows (a fully occluded
image) are flagged as the chain flags them at test time.

Each row also carries its modalities' `evidence.<modality>` (`mmcore.modalities`, raw-input
signs of corruption that the confidence gates read): `add_evidence` computes them for the stored
samples of every split, and a corrupted copy recomputes its corrupted modality's.

The corruptions are the families the robustness curves test (with other random draws, on other
rows), so the curves measure robustness to corruptions of a kind seen in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mmcore.config import FeaturesConfig
from mmcore.fusion.fusion_classifier import BLANK, EVIDENCE, LEVEL
from mmcore.io.parquet import read_metadata
from mmcore.modalities import MODALITIES
from mmcore.modalities.encoder_classifier import EncoderClassifier, load_encoder
from mmcore.robustness import CORRUPTIONS, LEVELS
from mmcore.stages.robustness_curves import COLUMN_CORRUPTERS
from mmcore.stages.shared_space import SharedSpace

CHUNK_ROWS = 1024  # rows embedded at once
# Levels of LEVELS an augmented row is drawn from: the heavy half (0.5 to 1). A lightly
# corrupted embedding is close to its clean one, so it would teach the head little; the fused
# model fails where a modality is nearly destroyed (docs/decisions.md).
AUGMENT_LEVELS = range(len(LEVELS) // 2, len(LEVELS))


class _Embedder:
    """The trained encoders and projections of a run: stored samples -> shared embeddings."""

    def __init__(self, samples_dir: Path, features_dir: Path, shared_dir: Path,
                 features: FeaturesConfig, modalities: list[str], n_classes: int, shared_dim: int):
        self.meta = read_metadata(samples_dir / "train.parquet")
        self.encoders = {}
        for m in modalities:
            self.encoders[m] = EncoderClassifier(m, features, self.meta, n_classes)
            load_encoder(self.encoders[m], features_dir / f"encoder_{m}.pt")
            self.encoders[m].eval()
        self.space = SharedSpace({m: e.encoder.dim for m, e in self.encoders.items()},
                                 shared_dim, n_classes)
        self.space.load_state_dict(torch.load(shared_dir / "projections.pt", weights_only=True))
        self.space.eval()

    @torch.no_grad()
    def embed(self, modality: str, table: pa.Table,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, dim) shared embeddings, (N,) blank flags and (N, k) evidence of one modality's
        samples."""
        spec, z, blank, evidence = MODALITIES[modality], [], [], []
        for start in range(0, table.num_rows, CHUNK_ROWS):
            batch = spec.from_table(table.slice(start, CHUNK_ROWS), self.meta)
            z.append(self.space.heads[modality](self.encoders[modality].embed(batch)).numpy())
            blank.append(spec.blank(batch).numpy())
            evidence.append(spec.evidence(batch).numpy())
        return np.concatenate(z), np.concatenate(blank), np.concatenate(evidence)


def add_evidence(samples_dir: Path, shared: dict[str, dict[str, Any]],
                 splits: tuple[str, ...] = ("train", "val", "test")) -> None:
    """Set `evidence` in each modality's shared rows: its `evidence` (`mmcore.modalities`) of
    the stored sample of that id, from the `splits` files in `samples_dir` (the run's
    preprocessing output)."""
    meta = read_metadata(samples_dir / "train.parquet")
    for m, rows in shared.items():
        spec, parts, ids = MODALITIES[m], [], []
        for split in splits:
            table = pq.read_table(samples_dir / f"{split}.parquet", columns=["id", *spec.columns])
            ids.append(table.column("id").to_numpy(zero_copy_only=False))
            parts += [spec.evidence(spec.from_table(table.slice(start, CHUNK_ROWS), meta)).numpy()
                      for start in range(0, table.num_rows, CHUNK_ROWS)]
        where = pd.Index(np.concatenate(ids)).get_indexer(rows["id"])
        if (where < 0).any():
            raise ValueError(f"{samples_dir}: no stored sample for {int((where < 0).sum())} "
                             f"{m} rows of the shared embeddings (first: "
                             f"{rows['id'][np.flatnonzero(where < 0)[0]]})")
        rows["evidence"] = np.concatenate(parts)[where]


def corrupted_copies(samples_dir: Path, features_dir: Path, shared_dir: Path,
                     features: dict[str, Any], n_classes: int,
                     shared: dict[str, dict[str, Any]], labels: np.ndarray, copies: int,
                     seed: int) -> dict[str, np.ndarray]:
    """`copies` corrupted copies of the train split as training arrays: per modality its
    embeddings, `blank.<modality>` flags, `level.<modality>` corruption levels (0: not
    corrupted; what the confidence gates learn to predict) and, where `shared` has them
    (`add_evidence`), `evidence.<modality>`; and `label` (`labels`: the shared files'
    labels). The first three folders are the run's
    preprocessing, feature extraction and shared-space outputs; `features` the `features`
    config section."""
    modalities = sorted(shared)
    first = shared[modalities[0]]
    embedder = _Embedder(samples_dir, features_dir, shared_dir, FeaturesConfig(**features),
                         modalities, n_classes, first["embedding"].shape[1])
    columns = sorted({COLUMN_CORRUPTERS[m][0] for m in modalities})
    table = pq.read_table(samples_dir / "train.parquet", columns=["id", *columns])
    rows = pd.Index(first["id"]).get_indexer(table.column("id").to_numpy(zero_copy_only=False))
    if (rows < 0).any():
        raise ValueError(f"{samples_dir / 'train.parquet'}: {int((rows < 0).sum())} train "
                         f"samples have no row in the shared embeddings of {shared_dir}")
    parts = [_one_copy(embedder, table, rows, shared, labels, np.random.default_rng([seed, c]))
             for c in range(copies)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _one_copy(embedder: _Embedder, table: pa.Table, rows: np.ndarray,
              shared: dict[str, dict[str, Any]], labels: np.ndarray,
              rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every train sample once, one modality of each corrupted (drawn by `rng`)."""
    modalities = sorted(shared)
    n = table.num_rows
    out = {m: shared[m]["embedding"][rows].copy() for m in modalities}
    out |= {BLANK + m: np.zeros(n, dtype=bool) for m in modalities}
    out |= {LEVEL + m: np.zeros(n, dtype=np.float32) for m in modalities}
    out |= {EVIDENCE + m: shared[m]["evidence"][rows].copy() for m in modalities
            if "evidence" in shared[m]}
    which = rng.integers(len(modalities), size=n)
    for i, m in enumerate(modalities):
        names = [c for c in CORRUPTIONS[m] if c != "missing"]
        picked = np.flatnonzero(which == i)
        kind = rng.integers(len(names), size=len(picked))
        level = rng.choice(AUGMENT_LEVELS, size=len(picked))
        column, corrupt = COLUMN_CORRUPTERS[m]
        for k, name in enumerate(names):
            for li in AUGMENT_LEVELS:
                group = picked[(kind == k) & (level == li)]
                if not len(group):
                    continue
                part = table.take(pa.array(group))
                changed = corrupt(part.column(column).combine_chunks(), name, LEVELS[li],
                                  int(rng.integers(2**31)), embedder.meta)
                part = part.set_column(part.schema.get_field_index(column), column, changed)
                out[m][group], out[BLANK + m][group], evidence = embedder.embed(m, part)
                if EVIDENCE + m in out:
                    out[EVIDENCE + m][group] = evidence
                out[LEVEL + m][group] = LEVELS[li]
    return {**out, "label": labels[rows]}

"""What a scheduled run computes about the champion on new rows (docs/nightly.md): the rows as
raw inputs, their drift profile through the champion's own chain, and the champion-vs-challenger
gate. Pure: chains and Parquet in, profiles and decisions out; the registry and the alerts are
`tasks/tracking/nightly.py`'s business.

Both models see the rows as a user would send them (raw pixels, raw text), through each model's
own transforms (its vocabulary, pixel scale and standardisation), so a champion trained on other
data is scored fairly, and a text it never saw counts as out of vocabulary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from scipy import stats

from mmcore.config import GateConfig
from mmcore.data.tokenizer import TextEncoding
from mmcore.drift import Profile, profile
from mmcore.drift.predictions import fit_temperature, softmax
from mmcore.experiments.stats import mcnemar
from mmcore.inference import InferenceChain
from mmcore.io.parquet import read_metadata, to_matrix

# Rows per forward pass: bounds memory on large test splits.
CHUNK_ROWS = 1024


@dataclass(frozen=True)
class Rows:
    """Rows as raw model inputs (None for a modality the table lacks)."""

    path: str
    ids: list[str]
    labels: np.ndarray | None  # None: some rows have no label yet (labels arrive late)
    images: np.ndarray | None  # (n, C*H*W) raw pixels, on the source's scale
    texts: list[str] | None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, start: int, stop: int) -> tuple[list[Any] | None, list[str] | None]:
        return (None if self.images is None else list(self.images[start:stop]),
                None if self.texts is None else self.texts[start:stop])


def read_rows(path: str | Path, batches: list[str] | None = None) -> Rows:
    """A samples table written by preprocessing (`test.parquet`, `val.parquet`) as raw inputs,
    only the rows of `batches` when given (its `batch` column, docs/batches.md): stored pixels
    are on the unit scale, so they are multiplied back by the file's `pixel_max`. ValueError
    naming the file when it is not such a table."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such samples table")
    names = pq.read_schema(path).names
    needed = ["id", "label", *(["batch"] if batches else [])]
    if set(needed) - set(names) or not {"image", "text"} & set(names):
        raise ValueError(f"{path}: not a samples table (needs {', '.join(needed)} and image "
                         f"and/or text; has {names})")
    table = pq.read_table(path, filters=[("batch", "in", batches)] if batches else None)
    images = None
    if "image" in names:
        scale = float(read_metadata(path).get("pixel_max", 1.0))
        images = to_matrix(table.column("image")) * np.float32(scale)
    labels = table.column("label")
    return Rows(str(path), table.column("id").to_pylist(),
                None if labels.null_count else labels.to_numpy(),
                images, table.column("text").to_pylist() if "text" in names else None)


def newest_rows(samples: Path) -> tuple[Rows, int | None]:
    """The new rows of a run: the test rows of the batches its preprocessing ingested as new
    (`new_batches` in the files' metadata, docs/batches.md) and the index of the newest of them;
    without batches, every test row and None."""
    path = samples / "test.parquet"
    meta = read_metadata(path)
    new = meta.get("new_batches")
    if not new:
        return read_rows(path), None
    return read_rows(path, new), max(meta["batches"].index(b) for b in new)


def score(chain: InferenceChain, rows: Rows) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The chain's embeddings per test modality (plus "fused": them side by side) and logits."""
    parts = [chain.embed_and_score(*rows.take(i, i + CHUNK_ROWS))
             for i in range(0, len(rows), CHUNK_ROWS)]
    embeddings = {m: np.concatenate([p[0][m] for p in parts]) for m in parts[0][0]}
    if len(embeddings) > 1:
        embeddings["fused"] = np.concatenate([embeddings[m] for m in sorted(embeddings)], axis=1)
    return embeddings, np.concatenate([p[1] for p in parts])


def drift_profile(chain: InferenceChain, rows: Rows, temperature: float,
                  ) -> tuple[Profile, np.ndarray]:
    """The rows' drift profile as the chain sees them (its embeddings, its vocabulary, its
    calibrated probabilities) and the probabilities."""
    embeddings, logits = score(chain, rows)
    probs = softmax(logits, temperature)
    spec = chain.spec
    images = tokens = vocab = None
    if rows.images is not None and "image" in spec["plan"]["test"]:
        images = rows.images.reshape(len(rows), *spec["image_shape"]) / spec["pixel_max"]
    if rows.texts is not None and "text" in spec["plan"]["test"]:
        encoding = TextEncoding.from_meta(spec)
        tokens = [encoding.words(t or "")[0] for t in rows.texts]
        vocab = set(spec["vocab"][2:])  # the first two are padding and the unknown word
    return profile(embeddings=embeddings, images=images, tokens=tokens, vocab=vocab,
                   probs=probs), probs


def reference_profile(chain: InferenceChain, rows: Rows) -> tuple[Profile, float]:
    """The champion's reference: its profile on rows it did not fit (its validation split), with
    the temperature fitted there, which every later batch is profiled with."""
    if rows.labels is None:
        raise ValueError(f"{rows.path}: a reference needs labelled rows to fit the temperature")
    _, logits = score(chain, rows)
    temperature = fit_temperature(logits, rows.labels)
    return drift_profile(chain, rows, temperature)[0], temperature


def correct(chain: InferenceChain, rows: Rows) -> np.ndarray:
    """Per row: whether the chain's prediction is the label."""
    if rows.labels is None:
        raise ValueError(f"{rows.path}: rows without labels cannot be scored")
    return score(chain, rows)[1].argmax(axis=1) == rows.labels


@dataclass(frozen=True)
class GateResult:
    """Champion against challenger on the same rows, and what the gate decided."""

    promote: bool
    reason: str
    rows: int
    champion_accuracy: float
    challenger_accuracy: float
    delta: float  # challenger minus champion
    p_value: float  # McNemar, two-sided
    only_champion: int  # rows only the champion got right
    only_challenger: int
    champion_degraded: bool
    degraded_reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gate(champion: np.ndarray, challenger: np.ndarray, cfg: GateConfig,
         champion_promoted_at: float | None) -> GateResult:
    """The gate on paired correctness vectors over the same rows. Promote when the challenger's
    accuracy is at least `cfg.floor`, its gain at least `cfg.min_gain`, and McNemar's p at most
    `cfg.alpha` (with `alpha` 1 the test never blocks). `champion_promoted_at`: the champion's
    accuracy when it was promoted, from which degradation is measured (`_degraded`)."""
    if len(champion) == 0:
        raise ValueError("the gate needs at least one row scored by both models")
    a, b = float(np.mean(champion)), float(np.mean(challenger))
    test = mcnemar(champion, challenger)
    delta = b - a
    if b < cfg.floor:
        promote, reason = False, f"challenger accuracy {b:.4f} < floor {cfg.floor:.4f}"
    elif delta < cfg.min_gain:
        promote, reason = False, f"gain {delta:+.4f} < min_gain {cfg.min_gain:+.4f}"
    elif cfg.alpha < 1 and test.p_value > cfg.alpha:
        promote, reason = False, (f"gain {delta:+.4f} not significant: McNemar p "
                                  f"{test.p_value:.4g} > {cfg.alpha:g}")
    else:
        promote, reason = True, (f"gain {delta:+.4f} >= {cfg.min_gain:+.4f}, McNemar p "
                                 f"{test.p_value:.4g}, accuracy {b:.4f} >= floor {cfg.floor:.4f}")
    return GateResult(promote, reason, len(champion), a, b, delta, test.p_value, test.only_a,
                      test.only_b, *_degraded(champion, cfg, champion_promoted_at))


def _degraded(champion: np.ndarray, cfg: GateConfig, promoted_at: float | None,
              ) -> tuple[bool, str]:
    """Whether the champion degraded on these rows, and why: below the floor, or more than
    `cfg.max_drop` below its accuracy at promotion *and* significantly so (one-sided binomial
    test at `cfg.alpha`), so that a small night's sampling noise raises no alarm."""
    a = float(np.mean(champion))
    if a < cfg.floor:
        return True, f"champion accuracy {a:.4f} < floor {cfg.floor:.4f}"
    if promoted_at is None or promoted_at - a <= cfg.max_drop:
        return False, ""
    p = float(stats.binom.cdf(int(np.sum(champion)), len(champion), promoted_at))
    if cfg.alpha < 1 and p > cfg.alpha:
        return False, ""
    return True, (f"champion accuracy {a:.4f} is {promoted_at - a:.4f} below its "
                  f"{promoted_at:.4f} at promotion (max_drop {cfg.max_drop:g}, binomial p "
                  f"{p:.3g})")

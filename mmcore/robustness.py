"""Test-time corruptions of one modality, and MultiBench's robustness figures for the curves.

Corruptions, each at a level in [0, 1] (`LEVELS` = 0, 0.1, ..., 1.0):

- image `gaussian_noise`: add N(0, level^2) to each pixel on the [0, 1] scale, clip to [0, 1];
- image `occlusion`: one near-square patch covering about `level` of the image
  (`occlusion_patch`), at a random place, set to 0 (background);
- text `token_dropout`: each token removed with probability `level`; an emptied text becomes one
  `<unk>`;
- text `token_replacement`: each token replaced, with probability `level`, by another vocabulary
  word drawn uniformly (never `<pad>`, `<unk>` or the token itself);
- either modality, `missing`: a `level` share of the rows lose the modality altogether (level 1:
  dropped entirely).

Images are (N, C, H, W) float arrays on the source's [0, 1] pixel scale (before normalisation);
texts are token ids in Arrow's ragged layout (`Ragged`: flat values + offsets).

Every corruption is a pure function of (data, level, seed). Its random numbers are drawn once per
seed and shared by all levels (common random numbers): a token dropped at 0.3 is also dropped at
0.5, a pixel's noise at 0.5 is the same draw as at 0.2, scaled. So a curve over levels moves only
with the level, not with fresh noise at each point.

Figures (Liang et al., MultiBench, NeurIPS 2021; `eval_scripts/robustness.py` there):
- relative robustness = area under the accuracy-vs-level curve (trapezoids, levels on [0, 1]);
- effective robustness = sum over levels of (acc - (ref + acc[0] - ref[0])), where `ref` is a
  reference method's curve (MultiBench: late fusion): accuracy kept beyond what the reference
  keeps once both start from the same clean accuracy.
MultiBench then min-max normalises each figure across the methods it compares
(`minmax_normalise`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

LEVELS: tuple[float, ...] = tuple(i / 10 for i in range(11))
PAD_ID, UNK_ID = 0, 1  # mmcore.data.tokenizer.Vocabulary: 0 padding, 1 unknown
FIRST_WORD_ID = 2


class Ragged(NamedTuple):
    """Token ids of N texts: text i is values[offsets[i]:offsets[i + 1]] (Arrow list layout)."""

    values: np.ndarray  # int, flat
    offsets: np.ndarray  # int64, N + 1, starts at 0

    @classmethod
    def from_lists(cls, texts: Sequence[Sequence[int]]) -> Ragged:
        lengths = np.array([len(t) for t in texts], dtype=np.int64)
        values = np.array([i for t in texts for i in t], dtype=np.int64)
        return cls(values, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    def to_lists(self) -> list[list[int]]:
        return [self.values[a:b].tolist() for a, b in zip(self.offsets[:-1], self.offsets[1:],
                                                          strict=True)]


def _check_level(level: float) -> None:
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"corruption level must be in [0, 1], got {level}")


def _rng(seed: int, stream: str) -> np.random.Generator:
    """One generator per (seed, corruption), independent of the level (common random numbers)."""
    return np.random.default_rng([seed, *stream.encode()])


def _check_images(images: np.ndarray) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")


def gaussian_noise(images: np.ndarray, level: float, seed: int) -> np.ndarray:
    """Add N(0, level^2) to every pixel ([0, 1] scale) and clip to [0, 1]."""
    _check_level(level)
    _check_images(images)
    noise = _rng(seed, "gaussian_noise").standard_normal(images.shape).astype(images.dtype)
    return np.clip(images + level * noise, 0.0, 1.0).astype(images.dtype)


def occlusion_patch(height: int, width: int, level: float) -> tuple[int, int]:
    """(rows, cols) of the occluding patch: ph = ceil(sqrt(level) * H) rows and
    pw = round(level * H * W / ph) columns, so the patch is near-square and its area is the
    closest to `level` of the image that ph rows allow (8x8 at 0.1: 3x2 = 0.094; 28x28 at 0.1:
    9x9 = 0.103; at 1.0 the whole image). A square alone is too coarse on small images."""
    _check_level(level)
    ph = min(height, int(np.ceil(np.sqrt(level) * height - 1e-9)))
    if ph == 0:
        return 0, 0
    return ph, min(width, int(np.floor(level * height * width / ph + 0.5)))


def occlusion(images: np.ndarray, level: float, seed: int, fill: float = 0.0) -> np.ndarray:
    """Set one patch per image (`occlusion_patch`: about `level` of its area, every channel)
    to `fill`.

    Each image's patch position is a uniform draw shared by all levels: u in [0, 1)^2 places the
    patch's top-left corner at floor(u * (H - ph + 1)), floor(u * (W - pw + 1)).
    """
    _check_level(level)
    _check_images(images)
    n, _, h, w = images.shape
    u = _rng(seed, "occlusion").random((n, 2))
    ph, pw = occlusion_patch(h, w, level)
    top = np.floor(u[:, 0] * (h - ph + 1)).astype(np.int64)
    left = np.floor(u[:, 1] * (w - pw + 1)).astype(np.int64)
    rows = np.arange(h)[None, :, None]
    cols = np.arange(w)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + ph)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + pw)[:, None, None]))
    out = images.copy()
    out[np.broadcast_to(inside[:, None], images.shape)] = fill
    return out


def token_dropout(texts: Ragged, level: float, seed: int) -> Ragged:
    """Remove each token with probability `level`; a text left empty becomes one `<unk>`."""
    _check_level(level)
    keep = _rng(seed, "token_dropout").random(len(texts.values)) >= level
    n = len(texts.offsets) - 1
    row = np.repeat(np.arange(n), np.diff(texts.offsets))
    kept_per_row = np.bincount(row[keep], minlength=n)
    empty = kept_per_row == 0
    lengths = np.where(empty, 1, kept_per_row)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.full(int(offsets[-1]), UNK_ID, dtype=texts.values.dtype)
    # Kept tokens keep their order; each lands at its row's start + its rank among kept ones.
    kept_rows = row[keep]
    rank = np.arange(len(kept_rows)) - np.repeat(np.cumsum(kept_per_row) - kept_per_row,
                                                 kept_per_row)
    values[offsets[kept_rows] + rank] = texts.values[keep]
    return Ragged(values, offsets)


def token_replacement(texts: Ragged, level: float, seed: int, vocab_size: int) -> Ragged:
    """Replace each token, with probability `level`, by a uniformly drawn other vocabulary word.

    Words are ids 2 .. vocab_size - 1 (0 is padding, 1 unknown). A replacement is never the
    token itself, so `level` is exactly the expected share of changed tokens.
    """
    _check_level(level)
    words = vocab_size - FIRST_WORD_ID
    if words < 2:
        raise ValueError(f"token replacement needs at least 2 words in the vocabulary, "
                         f"got vocab_size={vocab_size}")
    rng = _rng(seed, "token_replacement")
    u = rng.random(len(texts.values))
    draw = rng.integers(0, words - 1, size=len(texts.values))  # one of the words - 1 others
    original = texts.values.astype(np.int64) - FIRST_WORD_ID
    # Skip over the original word; an original <pad>/<unk> (negative) skips nothing.
    other = draw + ((original >= 0) & (draw >= original)) + FIRST_WORD_ID
    values = np.where(u < level, other, texts.values).astype(texts.values.dtype)
    return Ragged(values, texts.offsets.copy())


def missing_rows(n: int, level: float, seed: int) -> np.ndarray:
    """Which of n rows lose the modality at `level`: a bool mask, all True at level 1."""
    _check_level(level)
    return _rng(seed, "missing").random(n) < level


IMAGE_CORRUPTIONS: dict[str, Callable[..., np.ndarray]] = {
    "gaussian_noise": gaussian_noise,
    "occlusion": occlusion,
}
TEXT_CORRUPTIONS: dict[str, Callable[..., Ragged]] = {
    "token_dropout": token_dropout,
    "token_replacement": token_replacement,
}
# modality -> corruption names a robustness evaluation runs, "missing" last.
CORRUPTIONS: dict[str, tuple[str, ...]] = {
    "image": (*IMAGE_CORRUPTIONS, "missing"),
    "text": (*TEXT_CORRUPTIONS, "missing"),
}


def _check_curve(accuracies: Sequence[float], levels: Sequence[float]) -> np.ndarray:
    acc = np.asarray(accuracies, dtype=np.float64)
    if acc.ndim != 1 or len(acc) != len(levels) or len(acc) < 2:
        raise ValueError(f"a curve needs one value per level ({len(levels)}), got {len(acc)}")
    return acc


def relative_robustness(accuracies: Sequence[float], levels: Sequence[float] = LEVELS,
                        ) -> float:
    """Area under the accuracy-vs-level curve (MultiBench's relative robustness)."""
    acc = _check_curve(accuracies, levels)
    x = np.asarray(levels, dtype=np.float64)
    return float(np.sum((acc[1:] + acc[:-1]) * np.diff(x) / 2))


def effective_robustness(accuracies: Sequence[float], reference: Sequence[float]) -> float:
    """Sum over levels of acc - (ref + acc[0] - ref[0]): accuracy kept beyond the reference
    method's (MultiBench: late fusion) once both start from the same clean accuracy."""
    acc = _check_curve(accuracies, reference)
    ref = np.asarray(reference, dtype=np.float64)
    # Each curve's drop from its clean accuracy first: a curve against itself is exactly 0
    # (acc - (ref + acc[0] - ref[0]) left -2.2e-16 there).
    return float(np.sum((acc - acc[0]) - (ref - ref[0])))


def minmax_normalise(values: dict[str, float]) -> dict[str, float]:
    """Each figure rescaled to [0, 1] across the methods compared (all 0 when they are equal)."""
    low, high = min(values.values()), max(values.values())
    span = high - low
    return {k: (v - low) / span if span > 0 else 0.0 for k, v in values.items()}

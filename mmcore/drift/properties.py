"""Raw properties of a batch, one value per row, and the two-sample tests that compare them.

Images: brightness (mean pixel), contrast (pixel standard deviation) and sharpness (variance of
the 4-neighbour Laplacian over the interior pixels), computed on the grey image (the mean over
channels). Texts: length in tokens and the out-of-vocabulary (OOV) rate against a vocabulary.

Each property is compared row-wise, so a row is the unit of sampling:
- continuous properties (and lengths) by the two-sample Kolmogorov–Smirnov test, which sees any
  change of distribution, not only of the mean. On discrete values (lengths) its p-value is
  conservative: ties only make it larger.
- the OOV rate by the Mann–Whitney U test on per-text rates (tie-corrected). A test on pooled
  token counts (chi-square / binomial over tokens) would treat the tokens of one text as
  independent; they are not (a text from another vocabulary has many unknown words at once), so
  such a test raises false alarms on real corpora.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
from scipy import stats

from mmcore.drift.report import TestResult

IMAGE_PROPERTIES = ("brightness", "contrast", "sharpness")
TEXT_PROPERTIES = ("text_length", "oov_rate")


def grey_images(images: np.ndarray) -> np.ndarray:
    """(n, H, W) or (n, C, H, W) -> (n, H, W) float64, channels averaged; ValueError otherwise."""
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim == 4:
        arr = arr.mean(axis=1)
    if arr.ndim != 3:
        raise ValueError(f"images must be (n, H, W) or (n, C, H, W), got shape {arr.shape}")
    bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    if bad.any():
        raise ValueError(f"images: row {int(np.argmax(bad))} has a NaN or infinite pixel")
    return arr


def brightness(images: np.ndarray) -> np.ndarray:
    """Mean pixel of each image, (n,)."""
    return grey_images(images).mean(axis=(1, 2))


def contrast(images: np.ndarray) -> np.ndarray:
    """Standard deviation of each image's pixels, (n,)."""
    return grey_images(images).std(axis=(1, 2))


def sharpness(images: np.ndarray) -> np.ndarray:
    """Variance of the 4-neighbour Laplacian over each image's interior pixels, (n,).

    High for crisp edges and for pixel noise; 0 for a constant (or linear) image.
    """
    g = grey_images(images)
    if g.shape[1] < 3 or g.shape[2] < 3:
        raise ValueError(f"sharpness needs images of at least 3x3, got {g.shape[1:]}")
    lap = (g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:]
           - 4.0 * g[:, 1:-1, 1:-1])
    return lap.var(axis=(1, 2))


def image_properties(images: np.ndarray) -> dict[str, np.ndarray]:
    """Every image property, name -> (n,) values."""
    return {"brightness": brightness(images), "contrast": contrast(images),
            "sharpness": sharpness(images)}


def text_lengths(tokens: Sequence[Sequence[str]]) -> np.ndarray:
    """Length of each text in tokens, (n,) float64."""
    return np.array([len(t) for t in tokens], dtype=np.float64)


def oov_rates(tokens: Sequence[Sequence[str]], vocab: Collection[str]) -> np.ndarray:
    """Share of each text's tokens not in `vocab`, (n,); 0.0 for an empty text (its length,
    0, is the length test's to see)."""
    return np.array([sum(w not in vocab for w in t) / len(t) if len(t) else 0.0 for t in tokens],
                    dtype=np.float64)


def oov_rate(tokens: Sequence[Sequence[str]], vocab: Collection[str]) -> float:
    """Share of all tokens (pooled over texts) not in `vocab`; 0.0 for no tokens."""
    total = sum(len(t) for t in tokens)
    return sum(w not in vocab for t in tokens for w in t) / total if total else 0.0


def text_properties(tokens: Sequence[Sequence[str]], vocab: Collection[str],
                    ) -> dict[str, np.ndarray]:
    """Every text property, name -> (n,) values."""
    return {"text_length": text_lengths(tokens), "oov_rate": oov_rates(tokens, vocab)}


def _values(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: need a non-empty 1-D array of values, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: row {int(np.argmax(~np.isfinite(arr)))} is NaN or infinite")
    return arr


def ks_test(name: str, reference: np.ndarray, batch: np.ndarray) -> TestResult:
    """Two-sample Kolmogorov–Smirnov test; statistic = the largest gap between the two ECDFs."""
    ref, new = _values(f"{name} (reference)", reference), _values(f"{name} (batch)", batch)
    res = stats.ks_2samp(ref, new)
    return TestResult(name, "ks", float(res.statistic), float(res.pvalue), len(ref), len(new),
                      {"reference_mean": float(ref.mean()), "batch_mean": float(new.mean())},
                      reference=ref, batch=new)


def mannwhitney_test(name: str, reference: np.ndarray, batch: np.ndarray) -> TestResult:
    """Two-sided Mann–Whitney U test (tie-corrected normal approximation); statistic =
    P(batch value > reference value) + P(equal) / 2, 0.5 when neither tends to be larger.
    p = 1 when every value in both samples is the same."""
    ref, new = _values(f"{name} (reference)", reference), _values(f"{name} (batch)", batch)
    details = {"reference_mean": float(ref.mean()), "batch_mean": float(new.mean())}
    if np.ptp(np.concatenate([ref, new])) == 0:
        return TestResult(name, "mannwhitney", 0.5, 1.0, len(ref), len(new), details,
                          reference=ref, batch=new)
    res = stats.mannwhitneyu(new, ref, alternative="two-sided", method="asymptotic")
    effect = float(res.statistic) / (len(ref) * len(new))
    return TestResult(name, "mannwhitney", effect, float(res.pvalue), len(ref), len(new),
                      details, reference=ref, batch=new)


def property_tests(reference: dict[str, np.ndarray], batch: dict[str, np.ndarray],
                   ) -> list[TestResult]:
    """One test per property present in both: Mann–Whitney for the OOV rate, KS otherwise."""
    missing = sorted(set(reference) ^ set(batch))
    if missing:
        raise ValueError(f"properties in only one of reference and batch: {missing}")
    return [(mannwhitney_test if key == "oov_rate" else ks_test)(f"property:{key}",
                                                                 reference[key], batch[key])
            for key in reference]

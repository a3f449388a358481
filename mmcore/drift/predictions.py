"""Drift in the champion's predictions, and its accuracy estimated on an unlabelled batch.

- confidence: the max class probability of each row, reference vs batch, by the two-sample
  Kolmogorov–Smirnov test (a monotone recalibration of both sides leaves it unchanged);
- class balance: predicted-class counts of reference and batch as a 2 x k table, by the
  chi-square test of homogeneity. It allows for the reference's own sampling noise, which a
  goodness-of-fit test against the reference frequencies taken as exact would not;
- estimated accuracy: the mean max probability after temperature scaling (Guo et al. 2017) fitted
  on labelled reference rows. It is an estimate: right when the champion stays calibrated on the
  new data, which a shift in the inputs can break (docs/drift.md reports how far off it was).

The reference must be rows the champion did not train on (its validation split): on its own
training rows a model is more confident than on any new data, and every batch would look drifted.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special, stats

from mmcore.drift.report import TestResult

# log-temperature search interval: T in [e^-4, e^4]
_LOG_T_BOUNDS = (-4.0, 4.0)


def check_probabilities(name: str, probs: np.ndarray) -> np.ndarray:
    """`probs` as (n, k) float64 rows of probabilities; ValueError naming the first bad row."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < 2:
        raise ValueError(f"{name}: probabilities must be (rows, classes >= 2), got {arr.shape}")
    bad = ~(np.isfinite(arr).all(axis=1) & (arr >= 0).all(axis=1)
            & (np.abs(arr.sum(axis=1) - 1.0) <= 1e-4))
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"{name}: row {row} is not a probability vector (non-negative, "
                         f"summing to 1): sum {arr[row].sum():.6g}")
    return arr


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return special.softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the mean negative log-likelihood of softmax(logits / T) on
    labelled rows (temperature scaling; accuracy is unchanged, only confidence moves)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or y.shape != (len(z),) or len(z) == 0:
        raise ValueError(f"fit_temperature needs (n, k) logits and n labels, got {z.shape} "
                         f"and {y.shape}")
    if y.min() < 0 or y.max() >= z.shape[1]:
        row = int(np.argmax((y < 0) | (y >= z.shape[1])))
        raise ValueError(f"fit_temperature: label of row {row} is {y[row]}, not a class in "
                         f"0..{z.shape[1] - 1}")

    def nll(log_t: float) -> float:
        scaled = z / math.exp(log_t)
        return float(np.mean(special.logsumexp(scaled, axis=1) - scaled[np.arange(len(y)), y]))

    res = optimize.minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded",
                                   options={"xatol": 1e-6})
    return float(math.exp(res.x))


def confidences(probs: np.ndarray) -> np.ndarray:
    """The max class probability of each row, (n,)."""
    return check_probabilities("probabilities", probs).max(axis=1)


def estimated_accuracy(probs: np.ndarray) -> float:
    """Expected accuracy of a calibrated model on these rows: the mean max probability."""
    return float(confidences(probs).mean())


def confidence_test(reference: np.ndarray, batch: np.ndarray) -> TestResult:
    """KS test of the max-probability distributions."""
    ref = check_probabilities("prediction:confidence (reference)", reference).max(axis=1)
    new = check_probabilities("prediction:confidence (batch)", batch).max(axis=1)
    res = stats.ks_2samp(ref, new)
    return TestResult("prediction:confidence", "ks", float(res.statistic), float(res.pvalue),
                      len(ref), len(new), {"reference_mean": float(ref.mean()),
                                           "batch_mean": float(new.mean())},
                      reference=ref, batch=new)


def class_balance_test(reference: np.ndarray, batch: np.ndarray) -> TestResult:
    """Chi-square test of homogeneity on predicted-class counts (classes no row of either side
    predicts are left out); statistic = chi², details: dof and the total variation distance of
    the two predicted-class frequency vectors. p = 1 when both predict a single, same class."""
    ref = check_probabilities("prediction:class_balance (reference)", reference)
    new = check_probabilities("prediction:class_balance (batch)", batch)
    if ref.shape[1] != new.shape[1]:
        raise ValueError(f"prediction:class_balance: reference has {ref.shape[1]} classes, "
                         f"batch {new.shape[1]}")
    k = ref.shape[1]
    counts = np.stack([np.bincount(ref.argmax(axis=1), minlength=k),
                       np.bincount(new.argmax(axis=1), minlength=k)])
    tv = 0.5 * float(np.abs(counts[0] / len(ref) - counts[1] / len(new)).sum())
    used = counts[:, counts.sum(axis=0) > 0]
    if used.shape[1] < 2:
        chi2, p, dof = 0.0, 1.0, 0
    else:
        res = stats.chi2_contingency(used, correction=False)
        chi2, p, dof = float(res.statistic), float(res.pvalue), int(res.dof)
    return TestResult("prediction:class_balance", "chi2", chi2, p, len(ref), len(new),
                      {"dof": dof, "total_variation": tv},
                      reference=counts[0].astype(np.float64), batch=counts[1].astype(np.float64))

"""Every drift check of one batch against the reference, in one call: the API the nightly flow uses.

1. Once per champion: `reference = profile(...)` from the rows the champion did not train on
   (its validation split: embeddings per modality and fused, raw images and tokens, calibrated
   probabilities), saved with `save_profile` next to the champion.
2. Per new batch: `report = check_batch(load_profile(path), profile(...batch...), alpha=...)`.

A profile keeps per-row values only (embeddings, property values, probabilities), never the raw
images or texts, so the reference is computed once and stays small.
"""

from __future__ import annotations

import io
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmcore.drift.mmd import check_embeddings, min_permutations, mmd_test
from mmcore.drift.predictions import (
    check_probabilities,
    class_balance_test,
    confidence_test,
    estimated_accuracy,
)
from mmcore.drift.properties import image_properties, property_tests, text_properties
from mmcore.drift.report import DriftReport, TestResult, build_report

# Permutations when the caller names none: at least this many, more if the Bonferroni threshold
# needs them (`min_permutations`). 499 keeps the p-value's resolution (0.002) well below the
# usual thresholds (alpha 0.05 over 10 tests: 0.005), which the bare minimum (199) would not.
DEFAULT_PERMUTATIONS = 499
ESTIMATE_METHOD = ("mean max probability of the temperature-scaled champion (an estimate from "
                   "unlabelled rows: right while the champion stays calibrated on the batch)")


@dataclass(frozen=True)
class Profile:
    """What the drift checks compare, for one set of rows (the reference or a batch)."""

    n_rows: int
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # "image", "fused" -> (n, d)
    properties: dict[str, np.ndarray] = field(default_factory=dict)  # "brightness" -> (n,)
    probs: np.ndarray | None = None  # the champion's calibrated probabilities, (n, k)


def alignment(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Per-row Euclidean distance between a row's image and text embeddings, (n,)."""
    return np.linalg.norm(image - text, axis=1)


def _rows(sizes: dict[str, int]) -> int:
    """The one row count all inputs share; ValueError listing them otherwise."""
    if not sizes:
        raise ValueError("a profile needs at least one of embeddings, images, tokens, probs")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"inputs of one profile must have the same rows, got {sizes}")
    return next(iter(sizes.values()))


def profile(*, embeddings: dict[str, np.ndarray] | None = None, images: np.ndarray | None = None,
            tokens: Sequence[Sequence[str]] | None = None, vocab: Collection[str] | None = None,
            probs: np.ndarray | None = None) -> Profile:
    """The profile of one set of rows. `images`: (n, H, W) or (n, C, H, W) pixels; `tokens`: one
    token list per text, with the champion's `vocab` (needed with tokens); `probs`: calibrated
    class probabilities. Any may be left out; the checks use what both sides have.

    With "image" and "text" embeddings of one shape (a shared space), the profile also holds
    their per-row distance (`alignment`), tested like a property: it sees shifts in how the two
    modalities go together (texts that stop describing their images) that leave each modality's
    own distribution unchanged."""
    embs = {key: check_embeddings(f"embedding:{key}", value)
            for key, value in (embeddings or {}).items()}
    props: dict[str, np.ndarray] = {}
    if images is not None:
        props.update(image_properties(images))
    if tokens is not None:
        if vocab is None:
            raise ValueError("tokens need the vocabulary they are checked against (vocab=)")
        props.update(text_properties(tokens, vocab))
    if "image" in embs and "text" in embs and embs["image"].shape == embs["text"].shape:
        props["alignment"] = alignment(embs["image"], embs["text"])
    p = None if probs is None else check_probabilities("probs", probs)
    sizes = {f"embedding:{k}": len(v) for k, v in embs.items()}
    sizes |= {f"property:{k}": len(v) for k, v in props.items()}
    if p is not None:
        sizes["probs"] = len(p)
    return Profile(_rows(sizes), embs, props, p)


def planned_tests(reference: Profile, batch: Profile) -> list[str]:
    """The names of the tests `check_batch` runs: one per input both sides have; ValueError if
    the two profiles hold different inputs (a batch must be profiled like its reference)."""
    def names(p: Profile) -> list[str]:
        out = [f"embedding:{k}" for k in p.embeddings] + [f"property:{k}" for k in p.properties]
        return out + (["prediction:confidence", "prediction:class_balance"]
                      if p.probs is not None else [])

    ref, new = names(reference), names(batch)
    if set(ref) != set(new):
        raise ValueError(f"reference and batch profiles differ: only in reference "
                         f"{sorted(set(ref) - set(new))}, only in batch "
                         f"{sorted(set(new) - set(ref))}")
    return ref


def default_permutations(alpha: float, n_tests: int) -> int:
    """DEFAULT_PERMUTATIONS, or more when alpha / n_tests needs them."""
    return max(DEFAULT_PERMUTATIONS, min_permutations(alpha, n_tests))


def _mmd_result(key: str, reference: np.ndarray, batch: np.ndarray, n_permutations: int,
                seed: int, max_reference: int | None, max_batch: int | None) -> TestResult:
    res = mmd_test(reference, batch, n_permutations=n_permutations, seed=seed,
                   max_reference=max_reference, max_batch=max_batch, name=f"embedding:{key}")
    return TestResult(f"embedding:{key}", "mmd2-rbf-permutation", res.statistic, res.p_value,
                      res.n_reference, res.n_batch,
                      {"bandwidth": res.bandwidth, "n_permutations": res.n_permutations,
                       "null_q95": float(np.quantile(res.null, 0.95))},
                      reference=res.null, batch=np.array([res.statistic]))


def check_batch(reference: Profile, batch: Profile, *, alpha: float = 0.05, seed: int = 0,
                n_permutations: int | None = None, max_reference: int | None = 2000,
                max_batch: int | None = 2000) -> DriftReport:
    """Every drift test of `batch` against `reference`, Bonferroni-corrected at family-wise
    `alpha`. MMD tests subsample to `max_reference` / `max_batch` rows and use
    `n_permutations` (default: `default_permutations`); fewer than the corrected alpha needs is
    a ValueError. The same seed gives the same report."""
    names = planned_tests(reference, batch)
    needed = min_permutations(alpha, len(names))
    perms = default_permutations(alpha, len(names)) if n_permutations is None else n_permutations
    if perms < needed:
        raise ValueError(f"{perms} permutations cannot reach alpha/{len(names)} = "
                         f"{alpha / len(names):.4g}; use at least {needed}")
    seeds = np.random.SeedSequence(seed).generate_state(max(1, len(reference.embeddings)))
    results = [_mmd_result(key, reference.embeddings[key], batch.embeddings[key], perms,
                           int(s), max_reference, max_batch)
               for key, s in zip(reference.embeddings, seeds, strict=False)]
    results += property_tests(reference.properties, batch.properties)
    estimate = None
    if reference.probs is not None and batch.probs is not None:
        results += [confidence_test(reference.probs, batch.probs),
                    class_balance_test(reference.probs, batch.probs)]
        estimate = estimated_accuracy(batch.probs)
    return build_report(results, alpha, batch.n_rows, estimate,
                        ESTIMATE_METHOD if estimate is not None else None)


def save_profile(p: Profile, path: str | Path) -> Path:
    """Write a profile as one .npz, whole or not at all (temp file + rename)."""
    arrays = {f"embedding:{k}": v for k, v in p.embeddings.items()}
    arrays |= {f"property:{k}": v for k, v in p.properties.items()}
    if p.probs is not None:
        arrays["probs"] = p.probs
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return path


def load_profile(path: str | Path) -> Profile:
    """The profile `save_profile` wrote; ValueError naming the file for an unknown entry."""
    with np.load(Path(path), allow_pickle=False) as data:
        embs, props, probs = {}, {}, None
        for key in data.files:
            kind, _, name = key.partition(":")
            if kind == "embedding":
                embs[name] = data[key]
            elif kind == "property":
                props[name] = data[key]
            elif key == "probs":
                probs = data[key]
            else:
                raise ValueError(f"{path}: unknown entry {key!r} in a drift profile")
    sizes = {f"embedding:{k}": len(v) for k, v in embs.items()}
    sizes |= {f"property:{k}": len(v) for k, v in props.items()}
    if probs is not None:
        sizes["probs"] = len(probs)
    return Profile(_rows(sizes), embs, props, probs)

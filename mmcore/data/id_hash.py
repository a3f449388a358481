"""A uniform draw per sample id from a hash of the id alone: stable whatever other rows are
there, in whatever order, so splits (`mmcore.data.batches.hash_split`) and the rows of the
robustness curves (`mmcore.stages.robustness_curves.curve_rows`) never move when data grows."""

from __future__ import annotations

import hashlib

import numpy as np


def id_draws(ids: list[str], salt: str = "") -> np.ndarray:
    """Each id's draw in [0, 1) from sha256(`salt` + id); another `salt`, an independent draw."""
    return np.array([int.from_bytes(hashlib.sha256((salt + i).encode()).digest()[:8], "big")
                     for i in ids], dtype=np.float64) / 2.0**64

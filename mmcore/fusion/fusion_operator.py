"""What every fusion operator shares: the constructor contract, sorted modalities, the
missing-modality rule and `calibrate`.

An operator maps dict[modality, (B, dim)] -> (B, out_dim). It is built as
`Op(modalities, dim, **options)`: every modality has the same width `dim` (they all live in the
shared space), and `out_dim` says how wide the fused output is. Keys are read in sorted order, so
the output does not depend on the order of the dict or of `modalities`.

Missing modality: the input may lack some of the operator's modalities (missing for the whole
batch, e.g. a robustness test). Each operator documents what it does then; none fails unless all
of its modalities are missing. Keys that are not the operator's modalities are ignored.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


class FusionOperator(nn.Module):
    """Base of the fusion operators: `modalities` (sorted), `dim`, `out_dim`."""

    # False: fuses embeddings, and the classifier's head reads the fused vector (feature-level).
    # True: fuses per-modality class scores, which the classifier's head computes first
    # (decision-level, late fusion); the classifier then builds the operator with dim=n_classes.
    fuses_predictions: ClassVar[bool] = False

    def __init__(self, modalities: list[str], dim: int):
        super().__init__()
        if not modalities:
            raise ValueError("a fusion operator needs at least one modality")
        self.modalities = sorted(modalities)
        self.dim = dim
        self.out_dim = dim

    def present(self, x: dict[str, torch.Tensor]) -> list[str]:
        """The operator's modalities that `x` holds, in sorted order; an error if none."""
        present = [m for m in self.modalities if m in x]
        if not present:
            raise ValueError(f"fusion input has none of the modalities {self.modalities} "
                             f"(got {sorted(x)})")
        return present

    def zero_filled(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every modality, a missing one as zeros: the same input modality dropout trains with
        (`fusion_classifier.drop_modalities`), so a model trained with it has seen this case."""
        ref = x[self.present(x)[0]]
        return {m: x[m] if m in x else ref.new_zeros(ref.shape[0], self.dim)
                for m in self.modalities}

    def calibrate(self, x: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
        """Fit what the operator fits on the validation split, and return it (logged per
        modality). Most operators fit nothing there."""
        return {}

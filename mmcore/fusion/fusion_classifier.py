"""The classifier a learning mode trains on shared embeddings: a fusion operator and an MLP head,
with what makes fusion degrade gracefully (docs/learning-modes.md, "Graceful fusion").

A fused model must never do much worse than its best remaining modality. Three parts see to it:

- a learned "missing" embedding per modality stands in for an absent modality, and for a blank
  one (an all-background image, a text with no known word: `blank.<modality>` rows of the input,
  found by `mmcore.modalities` `blank`), so the model is never fed a confident encoding of nothing;
  modality dropout trains the head on rows where one modality is that missing embedding. Late
  fusion needs neither: its experts train on their own losses, and an absent or blank
  modality's expert is dropped (its scores on a blank row are set to uniform);
- a confidence gate per modality: a small MLP that reads the modality's embedding and the raw
  input's `evidence` (`mmcore.modalities`: a text's bag of words, an image's pixel statistics;
  an embedding alone keeps too little of what marks a destroyed input) and predicts how
  corrupted its input is, d in (0, 1), trained on the corruption levels of the corrupted
  copies of the train split (`mmcore.stages.corruption_augment`; `level.<modality>` rows), not
  on the class labels: on its own train split an encoder is near perfect, so a gate taught by
  the class loss learns to trust every embedding, also of a pure-noise image. The gates are
  fitted first, on their own, and then frozen: the classifier's best val epoch is often its
  first, and gates restored with it would have learned nothing. A feature-level operator then
  reads (1 - d) * embedding + d * missing embedding, so a destroyed input takes the missing
  path; late fusion scales the modality's expert by 1 - d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmcore.config import TrainingConfig
from mmcore.fusion.fusion_operator import FusionOperator
from mmcore.fusion.operators import fusion_class
from mmcore.fusion.select_fusion import SelectFusion

# An input dict may carry, beside each modality's (B, dim) embedding, `blank.<modality>`: a (B,)
# bool tensor, True where that modality's raw input was blank; and in training `level.<modality>`:
# a (B,) float tensor, the corruption level of that modality's input (0: clean), which the
# confidence gates learn to predict; and `evidence.<modality>`: a (B, k) float tensor, the raw
# input's `evidence`, which the gates read when the classifier was built with `evidence_dims`.
BLANK = "blank."
LEVEL = "level."
EVIDENCE = "evidence."


class FusionClassifier(nn.Module):
    """dict[modality, shared embedding] -> class logits: a fusion operator and an MLP head.

    Feature-level operators fuse the embeddings and the head reads the fused vector. A
    decision-level operator (`fuses_predictions`, late fusion) is fed the head's scores of each
    modality instead, so one head serves every modality; it then owns the loss and `calibrate`.
    Without a missing embedding, modalities missing from the input are left to the operator
    (mmcore/fusion/fusion_operator.py); with one, the operator always sees every modality.
    """

    def __init__(self, fusion: FusionOperator, dim: int, n_classes: int, hidden: int,
                 dropout: float = 0.1, modality_dropout: float = 0.0,
                 missing_embedding: bool = False, confidence: bool = False,
                 evidence_dims: dict[str, int] | None = None):
        super().__init__()
        self.fusion = fusion
        self.modality_dropout = modality_dropout
        self.blank_aware = missing_embedding  # read `blank.<modality>` rows at all
        # nothing to fall back on with one modality; late fusion drops an expert instead
        fused = (fusion.modalities if len(fusion.modalities) > 1 and not fusion.fuses_predictions
                 else [])
        self.missing = (nn.ParameterDict({m: nn.Parameter(torch.zeros(dim)) for m in fused})
                        if missing_embedding and fused else None)
        # a small MLP, not a linear map: noise that is symmetric about a clean embedding moves
        # no linear function of it on average, only its distance from the clean ones
        gated = fusion.modalities if len(fusion.modalities) > 1 else []
        self.evidence_dims = {m: k for m, k in (evidence_dims or {}).items() if m in gated}
        self.confidence = (nn.ModuleDict({
            m: nn.Sequential(nn.Linear(dim + self.evidence_dims.get(m, 0), dim), nn.ReLU(),
                             nn.Linear(dim, 1)) for m in gated})
            if confidence and gated else None)
        head_in = dim if fusion.fuses_predictions else fusion.out_dim
        self.head = nn.Sequential(nn.Linear(head_in, hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def fusion_inputs(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the operator reads: its modalities (absent or blank ones as the missing
        embedding, when there is one), modality dropout while training, each scaled by its
        confidence; for a decision-level operator, the head's scores of each."""
        blank = ({m: x[BLANK + m] for m in self.fusion.modalities if BLANK + m in x}
                 if self.blank_aware else {})
        kept = {m: 1 - d.detach() for m, d in self.corruption(x).items()}  # (B, 1) each
        x = {m: x[m] for m in self.fusion.modalities if m in x}
        if self.fusion.fuses_predictions:  # blank rows: a uniform expert, i.e. none
            scores = {m: self.head(v) * kept.get(m, 1.0) for m, v in x.items()}
            return {m: v * (~blank[m]).unsqueeze(1) if m in blank else v
                    for m, v in scores.items()}
        if self.missing is not None:
            x = {m: v if m not in kept else kept[m] * v + (1 - kept[m]) * self.missing[m]
                 for m, v in x.items()}
            x = self._fill_missing(x, blank)
        elif kept:
            x = {m: v * kept[m] if m in kept else v for m, v in x.items()}
        if self.training and self.modality_dropout > 0 and len(x) > 1:
            x = drop_modalities(x, self.modality_dropout, self.missing)
        return x

    def corruption(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The confidence gates' prediction of how corrupted each present modality's input is,
        (B, 1) in (0, 1), from its embedding and, if the gates were built to read it, its
        `evidence.<modality>`; none without gates."""
        if self.confidence is None:
            return {}
        return {m: torch.sigmoid(self.confidence[m](
            torch.cat([x[m], x[EVIDENCE + m]], dim=1) if m in self.evidence_dims else x[m]))
            for m in self.confidence if m in x}

    def gate_loss(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """The gates' loss (they are fitted before the rest: `mmcore.stages.training`): binary
        cross-entropy of each predicted corruption against the row's `level.<modality>` (rows
        without one count as clean)."""
        predicted = self.corruption(x)
        return sum(F.binary_cross_entropy(d.squeeze(1), x.get(LEVEL + m, torch.zeros_like(
            d.squeeze(1))).float()) for m, d in predicted.items())

    def _fill_missing(self, x: dict[str, torch.Tensor], blank: dict[str, torch.Tensor],
                      ) -> dict[str, torch.Tensor]:
        """Every modality: an absent one, and the blank rows of a present one, as its missing
        embedding."""
        ref = next(iter(x.values()))
        out = {}
        for m, missing in self.missing.items():
            if m not in x:
                out[m] = missing.expand(ref.shape[0], -1)
            elif m in blank:
                out[m] = torch.where(blank[m].unsqueeze(1), missing, x[m])
            else:
                out[m] = x[m]
        return out

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        fused = self.fusion(self.fusion_inputs(x))
        return fused if self.fusion.fuses_predictions else self.head(fused)

    def loss(self, x: dict[str, torch.Tensor], labels: torch.Tensor,
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training loss and the logits; a decision-level operator defines its own loss."""
        if self.fusion.fuses_predictions:
            loss, logits = self.fusion.loss(self.fusion_inputs(x), labels)
        else:
            logits = self(x)
            loss = F.cross_entropy(logits, labels)
        return loss, logits

    @torch.no_grad()
    def calibrate(self, x: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
        """Fit the operator's validation-fitted parameters (late fusion: the modality weights)."""
        return self.fusion.calibrate(self.fusion_inputs(x), labels)


def drop_modalities(x: dict[str, torch.Tensor], p: float,
                    missing: nn.ParameterDict | None = None) -> dict[str, torch.Tensor]:
    """Replace one random modality per sample, with probability p, by its missing embedding (or
    zeros without one), so that the head learns to use each modality alone (the encoders'
    train-split embeddings are near perfect for images, and a head trained on them would
    otherwise ignore the text)."""
    keys = sorted(x)
    first = next(iter(x.values()))
    batch, device = first.shape[0], first.device
    dropped = torch.where(torch.rand(batch, device=device) < p,
                          torch.randint(len(keys), (batch,), device=device), -1)
    stand_in = {k: missing[k] if missing is not None else torch.zeros_like(x[k][0])
                for k in keys}
    return {k: torch.where((dropped == i).unsqueeze(1), stand_in[k], x[k])
            for i, k in enumerate(keys)}


def build_classifier(cfg: TrainingConfig, modalities: list[str], dim: int, n_classes: int,
                     evidence_dims: dict[str, int] | None = None) -> FusionClassifier:
    """The model a learning mode trains: the modalities fused by the registry's operator
    `cfg.fusion`, or one selected modality; `evidence_dims`: the width of each modality's
    `evidence.<modality>` rows, which its confidence gate then reads (none: the embedding
    alone)."""
    if cfg.mode == "multimodal" and len(modalities) > 1:
        op = fusion_class(cfg.fusion)
        # a decision-level operator fuses the head's class scores, not the embeddings
        fusion = op(modalities, n_classes if op.fuses_predictions else dim)
    else:
        fusion = SelectFusion(cfg.modality if cfg.modality in modalities else modalities[0], dim)
    return FusionClassifier(fusion, dim, n_classes, cfg.hidden,
                            modality_dropout=cfg.modality_dropout,
                            missing_embedding=cfg.missing_embedding,
                            confidence=cfg.confidence_gates, evidence_dims=evidence_dims)

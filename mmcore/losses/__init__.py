"""Losses: alignment for the shared space (each a plain function and an nn.Module wrapping it),
classification for `fit`, and soft-label distillation for label-free encoders."""

from mmcore.losses.alignment import InfoNCELoss, L2AlignmentLoss, info_nce_loss, l2_alignment_loss
from mmcore.losses.classification import classification_loss, classification_loss_name
from mmcore.losses.distillation import soft_distillation_loss

__all__ = ["InfoNCELoss", "L2AlignmentLoss", "classification_loss", "classification_loss_name",
           "info_nce_loss", "l2_alignment_loss", "soft_distillation_loss"]

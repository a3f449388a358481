"""Losses: alignment for the shared space (each a plain function and an nn.Module wrapping it),
and classification for `fit`."""

from mmcore.losses.alignment import InfoNCELoss, L2AlignmentLoss, info_nce_loss, l2_alignment_loss
from mmcore.losses.classification import classification_loss, classification_loss_name

__all__ = ["InfoNCELoss", "L2AlignmentLoss", "classification_loss", "classification_loss_name",
           "info_nce_loss", "l2_alignment_loss"]

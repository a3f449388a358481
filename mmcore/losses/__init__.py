"""Alignment losses for the shared space: each a plain function and an nn.Module wrapping it."""

from mmcore.losses.alignment import InfoNCELoss, L2AlignmentLoss, info_nce_loss, l2_alignment_loss

__all__ = ["InfoNCELoss", "L2AlignmentLoss", "info_nce_loss", "l2_alignment_loss"]

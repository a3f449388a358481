"""Projection into the shared space, and fusion operators over dict[modality, Tensor]."""

from mmcore.fusion.concat_fusion import ConcatFusion
from mmcore.fusion.late_fusion import LateFusionClassifier
from mmcore.fusion.mean_fusion import MeanFusion
from mmcore.fusion.projection import ProjectionHead
from mmcore.fusion.select_fusion import SelectFusion

FUSIONS = {"concat": ConcatFusion, "mean": MeanFusion}

__all__ = ["FUSIONS", "ConcatFusion", "LateFusionClassifier", "MeanFusion", "ProjectionHead",
           "SelectFusion"]

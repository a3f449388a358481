"""Projection into the shared space, and the fusion operators over dict[modality, Tensor].

The operators are listed by name in `mmcore.fusion.operators` (imported from there, not here, so
that code which needs only the projection does not depend on every operator).
"""

from mmcore.fusion.fusion_operator import FusionOperator
from mmcore.fusion.projection import ProjectionHead
from mmcore.fusion.select_fusion import SelectFusion

__all__ = ["FusionOperator", "ProjectionHead", "SelectFusion"]

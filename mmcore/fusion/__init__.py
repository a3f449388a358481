"""Projection into the shared space, and the fusion operators over dict[modality, Tensor].

The operators are listed by name in `mmcore.fusion.registry`. Names here are imported on first
use (PEP 562), so that importing the registry, which the config does, does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "FUSIONS": "mmcore.fusion.registry",
    "build_fusion": "mmcore.fusion.registry",
    "fusion_class": "mmcore.fusion.registry",
    "FusionOperator": "mmcore.fusion.fusion_operator",
    "ProjectionHead": "mmcore.fusion.projection",
    "SelectFusion": "mmcore.fusion.select_fusion",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'mmcore.fusion' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)

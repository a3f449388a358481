"""The fusion operators by name: `training.fusion` accepts exactly these names.

Each entry is "module:Class", imported on first use: importing the registry imports no operator.
Adding an operator is its file under mmcore/fusion/, one line here, and its name in
`mmcore.config.FUSION_NAMES` (kept equal to these keys by a test; see there why).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmcore.fusion.fusion_operator import FusionOperator

FUSIONS: dict[str, str] = {
    "late": "mmcore.fusion.late_fusion:LateFusion",
    "concat": "mmcore.fusion.concat_fusion:ConcatFusion",
    "sum": "mmcore.fusion.sum_fusion:SumFusion",
    "mean": "mmcore.fusion.mean_fusion:MeanFusion",
    "gmu": "mmcore.fusion.gated_multimodal_unit:GatedMultimodalUnit",
    "tensor": "mmcore.fusion.tensor_fusion:TensorFusion",
    "lmf": "mmcore.fusion.low_rank_fusion:LowRankFusion",
    "attention": "mmcore.fusion.attention_fusion:AttentionFusion",
}


def fusion_class(name: str) -> type[FusionOperator]:
    """The operator class registered under `name`."""
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion operator {name!r}; choose one of {', '.join(FUSIONS)}")
    module, _, cls = FUSIONS[name].partition(":")
    return getattr(importlib.import_module(module), cls)

"""What every modality provides (see `mmcore.modalities.MODALITIES`)."""

from __future__ import annotations

from typing import Any, Protocol

import pyarrow as pa
import torch
from torch import nn

from mmcore.config import FeaturesConfig

Batch = dict[str, torch.Tensor]


class Modality(Protocol):
    name: str
    columns: tuple[str, ...]  # sample columns (Parquet) the encoder reads

    def epochs(self, cfg: FeaturesConfig) -> int | str:
        """How long its encoder trains: a count, or "auto" (`FeaturesConfig.resolve_epochs`)."""
        ...

    def step_budget(self, cfg: FeaturesConfig) -> int:
        """The optimizer steps that `auto` epochs aim for."""
        ...

    def build_encoder(self, cfg: FeaturesConfig, meta: dict[str, Any]) -> nn.Module:
        """The encoder: model inputs -> (B, encoder.dim). `meta`: the samples' metadata."""
        ...

    def input_layer(self, meta: dict[str, Any]) -> nn.Module:
        """The first layer of the model (e.g. pixel standardisation): it runs inside the model,
        so training and the registered model apply the same transform."""
        ...

    def from_table(self, table: pa.Table, meta: dict[str, Any]) -> Batch:
        """Stored sample columns -> model inputs."""
        ...

    def from_raw(self, values: list[Any], meta: dict[str, Any]) -> Batch:
        """What a user sends (raw pixels on the source's scale, raw text) -> the same model
        inputs that `from_table` gives for the stored sample of that input."""
        ...

    def embed(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        """(B, dim) embeddings of a batch of model inputs."""
        ...

    def blank(self, batch: Batch) -> torch.Tensor:
        """(B,) bool: rows whose input carries nothing (an all-background image, a text with no
        known word). Graceful fusion replaces them by the modality's missing embedding
        (`mmcore.fusion.fusion_classifier`) instead of trusting an encoding of nothing."""
        ...

    def evidence(self, batch: Batch) -> torch.Tensor:
        """(B, k) float: what the raw input itself says about how intact it is, which the
        confidence gates read beside the shared embedding (`mmcore.fusion.fusion_classifier`).
        An encoder keeps what predicts the class and drops the rest, such as whether a text's
        words belong together or an image's pixels look like ink on a background: the signs
        of a destroyed input."""
        ...

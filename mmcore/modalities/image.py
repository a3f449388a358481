"""Images: stored as pixels on the unit scale, standardised by the model's first layer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from mmcore.config import FeaturesConfig
from mmcore.encoders import ImageCNN
from mmcore.encoders.image_cnn import auto_dropout
from mmcore.io.parquet import to_matrix

Batch = dict[str, torch.Tensor]


class Standardize(nn.Module):
    """(B, C, H, W) pixels -> per-channel (x - mean) / std, with the train split's statistics.
    Part of the model, so training and serving apply the very same transform."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32)[None, :, None, None])
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32)[None, :, None, None])

    def forward(self, batch: Batch) -> Batch:
        return {**batch, "image": (batch["image"] - self.mean) / self.std}


def image_dropout(cfg: FeaturesConfig, shape: tuple[int, int, int]) -> float:
    """`features.image_dropout` as a number for images of this shape."""
    return auto_dropout(shape, cfg.dropout) if cfg.image_dropout == "auto" else cfg.image_dropout


class ImageModality:
    name = "image"
    columns = ("image",)

    def epochs(self, cfg: FeaturesConfig) -> int | str:
        return cfg.image_epochs

    def step_budget(self, cfg: FeaturesConfig) -> int:
        return cfg.image_auto_steps

    def build_encoder(self, cfg: FeaturesConfig, meta: dict[str, Any]) -> nn.Module:
        shape = tuple(meta["image_shape"])
        return ImageCNN(shape, cfg.image_dim, cfg.image_channels, image_dropout(cfg, shape),
                        None if cfg.image_convs == "auto" else cfg.image_convs,
                        shift=cfg.image_shift)

    def input_layer(self, meta: dict[str, Any]) -> nn.Module:
        return Standardize(meta["image_mean"], meta["image_std"])

    def from_table(self, table: pa.Table, meta: dict[str, Any]) -> Batch:
        # Arrow memory is read-only; torch wants a writable array.
        pixels = to_matrix(table.column("image")).reshape(-1, *meta["image_shape"]).copy()
        return {"image": torch.from_numpy(pixels)}  # (B, C, H, W)

    def from_raw(self, values: list[Any], meta: dict[str, Any]) -> Batch:
        c, h, w = meta["image_shape"]
        pixels = np.stack([np.asarray(v, dtype=np.float32).reshape(c, h, w) for v in values])
        return {"image": torch.from_numpy(pixels / np.float32(meta["pixel_max"]))}

    def embed(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        return encoder(batch["image"])

    def blank(self, batch: Batch) -> torch.Tensor:
        """One value in every pixel (e.g. fully occluded)."""
        flat = batch["image"].flatten(1)
        return flat.amax(dim=1) == flat.amin(dim=1)

    def evidence(self, batch: Batch) -> torch.Tensor:
        """Five pixel statistics on the unit scale: mean, spread, the share of grey pixels
        (neither background nor full ink) and the mean jump between neighbouring pixels across
        and down. Noise makes grey pixels and jumps everywhere, which the encoder, trained to
        name the digit, can map close to a real one."""
        image = batch["image"]
        flat = image.flatten(1)
        grey = ((flat > 0.05) & (flat < 0.95)).float().mean(dim=1)
        across = (image[..., 1:] - image[..., :-1]).abs().flatten(1).mean(dim=1)
        down = (image[..., 1:, :] - image[..., :-1, :]).abs().flatten(1).mean(dim=1)
        return torch.stack([flat.mean(dim=1), flat.std(dim=1), grey, across, down], dim=1)


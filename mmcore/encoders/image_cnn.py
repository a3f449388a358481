"""A small CNN image encoder whose depth follows the image size (8x8 digits, 28x28 MNIST)."""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(dropout),
    )


class ImageCNN(nn.Module):
    """(B, C, H, W) -> (B, dim). One conv block per halving down to about 7 pixels a side."""

    def __init__(self, image_shape: tuple[int, int, int], dim: int = 64, channels: int = 32,
                 dropout: float = 0.25):
        super().__init__()
        c, h, w = image_shape
        blocks, side, width = [], min(h, w), channels
        while True:
            blocks.append(_block(c, width, dropout))
            c, side = width, side // 2
            if side < 14:
                break
            width *= 2
        self.features = nn.Sequential(*blocks)
        with torch.no_grad():  # probe the flattened size in eval mode: no BatchNorm update
            flat = self.features.eval()(torch.zeros(1, *image_shape)).numel()
        self.features.train()
        self.project = nn.Sequential(nn.Flatten(), nn.Linear(flat, dim), nn.ReLU(),
                                     nn.Dropout(dropout))
        self.dim = dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(images))  # (B, dim)

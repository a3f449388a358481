"""A small CNN image encoder whose depth follows the image size (8x8 digits, 28x28 MNIST)."""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int, convs: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1),
                   nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.MaxPool2d(2), nn.Dropout(dropout))


def _blocks(side: int) -> int:
    """Halvings until the side is under 14 pixels (at least one)."""
    n = 1
    while side // 2 >= 14:
        side, n = side // 2, n + 1
    return n


class ImageCNN(nn.Module):
    """(B, C, H, W) -> (B, dim). One conv block per halving down to about 7 pixels a side, the
    width doubling per block; `convs` 3x3 convolutions (+BatchNorm, ReLU) per block, then 2x2
    max-pooling. `convs=None` sizes the encoder for the input: two convolutions in all, so one
    per block from 28x28 up (conv32 - pool - conv64 - pool - fc: a quarter of the multiply-adds
    of two per block) and two in the single block of small images such as the 8x8 digits.

    The convolutions run channels-last (NHWC): on CPU, oneDNN's convolutions are about 3x faster
    in that layout than in NCHW (benchmarks/README.md, "One change at a time (image
    encoder)"); the same model, its sums only ordered differently (the last bits of a result
    may differ). `channels_last=False` keeps NCHW, for comparisons."""

    def __init__(self, image_shape: tuple[int, int, int], dim: int = 64, channels: int = 32,
                 dropout: float = 0.25, convs: int | None = None, channels_last: bool = True):
        super().__init__()
        c, h, w = image_shape
        n_blocks = _blocks(min(h, w))
        convs = convs or -(-2 // n_blocks)
        blocks, width = [], channels
        for _ in range(n_blocks):
            blocks.append(_block(c, width, convs, dropout))
            c, width = width, width * 2
        self.features = nn.Sequential(*blocks)
        with torch.no_grad():  # probe the flattened size in eval mode: no BatchNorm update
            flat = self.features.eval()(torch.zeros(1, *image_shape)).numel()
        self.features.train()
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        self.features.to(memory_format=self.layout)
        self.project = nn.Sequential(nn.Flatten(), nn.Linear(flat, dim), nn.ReLU(),
                                     nn.Dropout(dropout))
        self.dim = dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(images.contiguous(memory_format=self.layout)))

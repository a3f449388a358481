"""A small CNN image encoder whose depth follows the image size (8x8 digits, 28x28 MNIST)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Values of the first block's activations per forward pass in evaluation mode: a larger batch
# is cut into slices of that size. On this project's CPUs (2 MiB of L2 cache per core) 28x28
# images embedded 2.1-2.5x more rows/s in slices of 16-128 rows than in 1,024-row passes (their
# activations no longer stay in the cache), while the 8x8 digits lost speed below 128 rows (the
# per-call overhead): about a million values is 41 rows of 28x28 and 512 of 8x8
# (benchmarks/README.md, "One change at a time (image encoder)").
INFER_VALUES = 2**20


def _block(c_in: int, c_out: int, convs: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1),
                   nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.MaxPool2d(2), nn.Dropout(dropout))


def random_shift(images: torch.Tensor, pixels: int) -> torch.Tensor:
    """Each image moved by its own random offset of up to `pixels` in each direction, the
    border pixels repeated into the gap (the background of MNIST-like data). Draws from torch's
    global generator, so a seeded run shifts the same way every time."""
    b, c, h, w = images.shape
    padded = F.pad(images, (pixels,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, b, 1))
    rows = (torch.arange(h) + dy)[:, None, :, None]
    cols = (torch.arange(w) + dx)[:, None, None, :]
    return padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
                  rows, cols]


def _blocks(side: int) -> int:
    """Halvings until the side is under 14 pixels (at least one)."""
    n = 1
    while side // 2 >= 14:
        side, n = side // 2, n + 1
    return n


def auto_dropout(image_shape: tuple[int, int, int], dropout: float) -> float:
    """The image encoder's dropout for `image_dropout: auto`: none for images of two blocks and
    more (28x28 up), `dropout` for one (the 8x8 digits). On 10k Fashion-MNIST rows, 3 epochs,
    dropout 0 instead of 0.25 gained 1.5 points and trained faster; on the digits it cost 0.3
    point of the image encoder's accuracy (benchmarks/README.md)."""
    return dropout if _blocks(min(image_shape[1:])) == 1 else 0.0


class ImageCNN(nn.Module):
    """(B, C, H, W) -> (B, dim). One conv block per halving down to about 7 pixels a side, the
    width doubling per block; `convs` 3x3 convolutions (+BatchNorm, ReLU) per block, then 2x2
    max-pooling. `convs=None` sizes the encoder for the input: two convolutions in all, so one
    per block from 28x28 up (conv32 - pool - conv64 - pool - fc: a quarter of the multiply-adds
    of two per block) and two in the single block of small images such as the 8x8 digits.

    The convolutions run channels-last (NHWC): on CPU, oneDNN's convolutions are about 3x faster
    in that layout than in NCHW (benchmarks/README.md, "One change at a time (image
    encoder)"); the same model, its sums only ordered differently (the last bits of a result
    may differ). `channels_last=False` keeps NCHW, for comparisons.

    `shift` > 0: in training mode each image is first moved by up to that many pixels
    (`random_shift`; off by default: in the default 3 epochs it cost Fashion-MNIST 3.1 points,
    benchmarks/README.md); evaluation and embedding see the images as they are. In evaluation
    mode a batch of more than `infer_rows` rows runs in slices of that many (default: from
    `INFER_VALUES`)."""

    def __init__(self, image_shape: tuple[int, int, int], dim: int = 64, channels: int = 32,
                 dropout: float = 0.25, convs: int | None = None, channels_last: bool = True,
                 shift: int = 0, infer_rows: int | None = None):
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
        self.dim, self.shift = dim, shift
        self.infer_rows = infer_rows or max(INFER_VALUES // (channels * h * w), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.training and len(images) > self.infer_rows:
            return torch.cat([self(part) for part in images.split(self.infer_rows)])
        if self.training and self.shift:
            images = random_shift(images, self.shift)
        return self.project(self.features(images.contiguous(memory_format=self.layout)))

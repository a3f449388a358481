"""Plain PyTorch image references on MNIST-format IDX files: no Prefect, no MLflow, no Parquet.

Two architectures, same data and split as the pipeline (t10k = test; val carved from train by
`assign_splits` with the same seed and shares, and left unused; normalised with the train
mean/std):

- `reference`: the issue's small CNN, conv32 - conv64 - maxpool - fc128 (Keras's MNIST
  example, dropout 0.25 / 0.5);
- `pipeline`: the pipeline's own image encoder (`mmcore.encoders.ImageCNN` built from the
  default `features` config) with its linear head, as feature extraction trains it.

Both train with AdamW and a one-cycle schedule at batch 128 and print the test accuracy after
each epoch, the training seconds so far, and the time to --target.

Usage: python benchmarks/plain_image.py --data DIR [--arch reference|pipeline] [--epochs 4]
           [--target 0.99] [--lr 0.003] [--json FILE]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as mmcore sets it: before torch loads

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plain_loop  # noqa: E402  (a sibling script, not a package)

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(folder: Path, name: str) -> np.ndarray:
    path = folder / name
    raw = (path.read_bytes() if path.is_file()
           else gzip.decompress(path.with_name(name + ".gz").read_bytes()))
    ndim = raw[3]
    shape = np.frombuffer(raw, ">u4", ndim, 4).astype(int)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(folder: Path, seed: int = 0, val: float = 0.15) -> dict[str, dict[str, torch.Tensor]]:
    """train (the pipeline's train split) and test tensors: normalised images, labels."""
    from mmcore.stages.preprocessing import SPLIT_CODE, assign_splits

    images = {s: read_idx(folder, f[0]) for s, f in FILES.items()}
    labels = {s: read_idx(folder, f[1]).astype(np.int64) for s, f in FILES.items()}
    all_labels = np.concatenate([labels["train"], labels["test"]])
    given = np.repeat([SPLIT_CODE["train"], SPLIT_CODE["test"]],
                      [len(labels["train"]), len(labels["test"])]).astype(np.int8)
    split = assign_splits(all_labels, given, val, 0.2, seed)[:len(labels["train"])]
    keep = split == SPLIT_CODE["train"]
    train_px = images["train"][keep].astype(np.float32) / 255
    mean, std = train_px.mean(), train_px.std()

    def tensors(px: np.ndarray, y: np.ndarray) -> dict[str, torch.Tensor]:
        x = (px.astype(np.float32) / 255 - mean) / std
        return {"image": torch.from_numpy(x[:, None]), "label": torch.from_numpy(y)}

    return {"train": tensors(images["train"][keep], labels["train"][keep]),
            "test": tensors(images["test"], labels["test"])}


class ReferenceCNN(nn.Module):
    """conv32 - conv64 - maxpool - fc128 - fc(classes): the issue's plain reference."""

    def __init__(self, side: int, n_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.25), nn.Flatten(), nn.Linear(64 * ((side - 4) // 2) ** 2, 128),
            nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, n_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def build(arch: str, side: int) -> nn.Module:
    if arch == "reference":
        return ReferenceCNN(side)
    from mmcore.config import FeaturesConfig
    from mmcore.modalities.encoder_classifier import EncoderClassifier

    # the images come standardised already: the model's input layer is the identity
    meta = {"image_shape": [1, side, side], "image_mean": [0.0], "image_std": [1.0]}
    return EncoderClassifier("image", FeaturesConfig(), meta, 10)


def forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch) if hasattr(model, "embed") else model(batch["image"])


def run(data: Path, arch: str, epochs: int, target: float, lr: float, seed: int = 0) -> dict:
    """Load, train, and return the history and the time to the target (seconds)."""
    start = time.perf_counter()
    splits = load(data, seed)
    load_s = time.perf_counter() - start
    torch.manual_seed(seed)
    model = build(arch, splits["train"]["image"].shape[-1])
    print(f"plain image [{arch}]: {len(splits['train']['label'])} train rows, "
          f"{sum(p.numel() for p in model.parameters())} parameters, load {load_s:.1f} s")
    history = plain_loop.train(model, forward, splits["train"], splits["test"], epochs=epochs,
                               lr=lr, seed=seed)
    return {"arch": arch, "epochs": epochs, "load_s": round(load_s, 2), "history": history,
            "time_to_target": plain_loop.time_to(history, target, load_s), "target": target,
            "final_test_acc": history[-1]["test_acc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of the 4 IDX files")
    parser.add_argument("--arch", choices=["reference", "pipeline"], default="reference")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.data, args.arch, args.epochs, args.target, args.lr)
    print(f"time to test accuracy >= {args.target}: {result['time_to_target']} s; "
          f"final {result['final_test_acc']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

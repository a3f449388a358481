"""Image-encoder levers, one at a time, measured to accuracy on a subset of MNIST-format data.

Each variant trains the pipeline's image encoder and head (`EncoderClassifier`, built from a
`FeaturesConfig` with the variant's overrides) with the pipeline's own loop (`mmcore.training.
fit`: AdamW, its schedule, batches from arrays in memory) on the first --rows train rows, and
scores --test-rows test rows after each epoch. Printed per variant: test accuracy per epoch,
training seconds (warm-up and compilation included: a compile is paid once per run), and the
ratio of its seconds to the first variant's. One process, variants one after the other, so
set OMP_NUM_THREADS=1 on a shared machine and compare only within one run.

Variants: `base` (the defaults), `nchw` (the encoder's convolutions in NCHW instead of its
channels-last), `compile` (torch.compile, inductor), and `key=value` features overrides, all
joined by `+`, e.g. `batch_size=128+lr=0.003`, `image_channels=48`, `image_epochs=5`,
`image_dropout=0.25`, `image_shift=2`.

Usage: python benchmarks/image_levers.py --data DIR [--rows 10000] [--test-rows 5000]
           [--epochs 3] [--variants base,nchw,...] [--json FILE]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as mmcore sets it: before torch loads

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_image import FILES, read_idx  # noqa: E402

from mmcore.config import FeaturesConfig  # noqa: E402
from mmcore.encoders import ImageCNN  # noqa: E402
from mmcore.losses import classification_loss  # noqa: E402
from mmcore.modalities.encoder_classifier import EncoderClassifier  # noqa: E402
from mmcore.modalities.image import image_dropout  # noqa: E402
from mmcore.training import ArrayBatches, fit, seed_everything  # noqa: E402

FLAGS = ("nchw", "compile")


def load(folder: Path, rows: int, test_rows: int) -> dict[str, np.ndarray]:
    """Unit-scale float32 pixels (N, 1, H, W) and labels, as the pipeline's samples hold them."""
    out = {}
    for split, n in (("train", rows), ("test", test_rows)):
        images, labels = (read_idx(folder, name)[:n] for name in FILES[split])
        out[f"{split}_x"] = images[:, None].astype(np.float32) / 255
        out[f"{split}_y"] = labels.astype(np.int64)
    return out


def parse(variant: str) -> tuple[dict, set[str]]:
    """'channels_last+batch_size=128' -> ({'batch_size': '128'}, {'channels_last'})."""
    overrides, flags = {}, set()
    for part in variant.split("+"):
        if part in FLAGS:
            flags.add(part)
        elif "=" in part:
            key, value = part.split("=", 1)
            overrides[key] = value
        elif part != "base":
            sys.exit(f"unknown variant part {part!r}: base, {', '.join(FLAGS)} or key=value")
    return overrides, flags


def run(variant: str, data: dict[str, np.ndarray], epochs: int) -> dict:
    overrides, flags = parse(variant)
    cfg = FeaturesConfig(**overrides)
    epochs = int(overrides.get("image_epochs", epochs))
    meta = {"image_shape": list(data["train_x"].shape[1:]),
            "image_mean": [float(data["train_x"].mean())],
            "image_std": [float(data["train_x"].std())]}
    seed_everything(0)
    model = EncoderClassifier("image", cfg, meta, 10)
    if "nchw" in flags:
        convs = None if cfg.image_convs == "auto" else cfg.image_convs
        shape = tuple(meta["image_shape"])
        model.encoder = ImageCNN(shape, cfg.image_dim, cfg.image_channels,
                                 image_dropout(cfg, shape), convs, channels_last=False,
                                 shift=cfg.image_shift)
    net = torch.compile(model) if "compile" in flags else model
    train = ArrayBatches({"image": data["train_x"], "label": data["train_y"]}, cfg.batch_size,
                         seed=0)
    test_x = torch.from_numpy(data["test_x"])

    def loss_fn(m, batch):
        return classification_loss(net, batch)

    def evaluate(m):
        start = time.perf_counter()
        preds = torch.cat([net({"image": test_x[i:i + 1024]}).argmax(1)
                           for i in range(0, len(test_x), 1024)])
        scoring.append(time.perf_counter() - start)
        return {"test_acc": float((preds.numpy() == data["test_y"]).mean())}

    scoring: list[float] = []  # measurement, not training: left out of the seconds
    start = time.perf_counter()
    history = fit(model, train, loss_fn, epochs=epochs, lr=cfg.lr, schedule=cfg.schedule,
                  evaluate=evaluate)
    seconds = round(time.perf_counter() - start - sum(scoring), 1)
    accs = [round(r["test_acc"], 4) for r in history]
    print(f"  {variant}: {epochs} epochs, test acc {accs}, {seconds} s training", flush=True)
    return {"variant": variant, "epochs": epochs, "test_acc": accs, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--test-rows", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--variants", default="nchw,base")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = load(args.data, args.rows, args.test_rows)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rows} train "
          f"rows, {args.test_rows} test rows from {args.data}", flush=True)
    results = [run(v, data, args.epochs) for v in args.variants.split(",")]
    base = results[0]["seconds"]
    print(f"\n{'variant':<40} {'epochs':>6} {'final acc':>9} {'seconds':>8} {'ratio':>6}")
    for r in results:
        print(f"{r['variant']:<40} {r['epochs']:>6} {r['test_acc'][-1]:>9.4f} "
              f"{r['seconds']:>8.1f} {r['seconds'] / base:>6.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

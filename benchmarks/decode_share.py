"""What reading and decoding the stored images costs an image encoder's training, against the
training steps themselves: the ceiling of what storing images as uint8 (issue 19 item 5's
lever) could save there. Time (a) `ParquetBatches` (read a row group, shuffle, decode to float
tensors) for the first `--batches` training batches of a preprocessing output, and (b) the
default image encoder's training steps (forward, cross-entropy, backward, AdamW step) on the
same batches already in memory; alternating, `--repeats` times, medians.

    python benchmarks/decode_share.py --samples runs/stages/preprocessing/<key> [--batches 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mmcore.config import FeaturesConfig
from mmcore.io.parquet import read_metadata
from mmcore.modalities.encoder_classifier import EncoderClassifier
from mmcore.training.batches import ParquetBatches, sample_decoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=Path, required=True,
                        help="a preprocessing output folder (train.parquet of images)")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cfg = FeaturesConfig()
    meta = read_metadata(args.samples / "train.parquet")
    batches = ParquetBatches(args.samples / "train.parquet", ["image", "label"],
                             sample_decoder("image", meta), cfg.batch_size, seed=0)
    torch.manual_seed(0)
    model = EncoderClassifier("image", cfg, meta, len(meta["class_names"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    timings: dict[str, list[float]] = {"read_decode": [], "train_steps": []}
    for repeat in range(args.repeats):
        start = time.perf_counter()
        held = [b for _, b in zip(range(args.batches), batches(repeat), strict=False)]
        timings["read_decode"].append(time.perf_counter() - start)
        start = time.perf_counter()
        model.train()
        for batch in held:
            optimizer.zero_grad()
            F.cross_entropy(model(batch), batch["label"]).backward()
            optimizer.step()
        timings["train_steps"].append(time.perf_counter() - start)
    decode, train = (statistics.median(timings[k]) for k in ("read_decode", "train_steps"))
    print(f"{len(held)} batches of {cfg.batch_size}, image {meta['image_shape']}, "
          f"torch threads {torch.get_num_threads()}, medians of {args.repeats}:")
    print(f"  read + decode {decode:.2f} s, training steps {train:.2f} s: decoding is "
          f"{decode / (decode + train):.1%} of an epoch's encoder training")
    print("  per repeat:", {k: [round(v, 2) for v in vs] for k, vs in timings.items()})


if __name__ == "__main__":
    main()

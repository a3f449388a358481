"""Training and inference throughput of image-encoder variants, one change at a time.

Each variant trains `--steps` AdamW steps on random 28x28 images (rows/s) and embeds
`--infer-rows` rows under torch.no_grad() (rows/s), 1,024 at a time (which `ImageCNN` cuts into
slices of its `infer_rows`: 1,024 here unless a variant's name ends in `_infer<N>`, or
`_infer_auto` for the size `ImageCNN` picks for the input). The variants run interleaved,
`--repeats` times, and the medians are printed with the ratio to the first variant, so the
machine's noise hits all of them alike.

Usage: python benchmarks/encoder_speed.py [--steps 40] [--repeats 3] [--side 28]
           [--variants two_convs,one_conv,...]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as mmcore sets it: before torch loads

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_image import ReferenceCNN  # noqa: E402

from mmcore.encoders import ImageCNN  # noqa: E402


class Head(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, nn.Linear(encoder.dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def variants(side: int) -> dict[str, dict]:
    shape = (1, side, side)

    def cnn(convs: int, channels_last: bool = False, infer_rows: int | None = 1024,
            dropout: float = 0.25):
        return lambda: Head(ImageCNN(shape, convs=convs, channels_last=channels_last,
                                     infer_rows=infer_rows, dropout=dropout))

    return {
        "two_convs_b64": {"model": cnn(2), "batch": 64},
        "two_convs_b64_channels_last": {"model": cnn(2, True), "batch": 64},
        "one_conv_b64": {"model": cnn(1), "batch": 64},
        "one_conv_b64_channels_last": {"model": cnn(1, True), "batch": 64},
        **{f"one_conv_b64_channels_last_infer{n}": {"model": cnn(1, True, n), "batch": 64}
           for n in (16, 32, 64, 128, 256)},
        # slices sized by ImageCNN for the input, as the pipeline runs it
        "one_conv_b64_channels_last_infer_auto": {"model": cnn(1, True, None), "batch": 64},
        "two_convs_b64_channels_last_infer_auto": {"model": cnn(2, True, None), "batch": 64},
        # no dropout (`features.image_dropout: auto` from 28x28)
        **{f"one_conv_b{b}_channels_last_no_dropout": {"model": cnn(1, True, None, 0.0),
                                                       "batch": b} for b in (64, 128, 256)},
        "one_conv_b128": {"model": cnn(1), "batch": 128},
        "one_conv_b128_channels_last": {"model": cnn(1, True), "batch": 128},
        "one_conv_b128_compiled": {"model": cnn(1), "batch": 128, "compile": True},
        "reference_b128": {"model": lambda: ReferenceCNN(side), "batch": 128},
    }


def measure(spec: dict, side: int, steps: int, infer_rows: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = spec["model"]()  # ImageCNN sets its own memory layout (and its inputs')
    run = torch.compile(model) if spec.get("compile") else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b = spec["batch"]
    x = torch.randn(b, 1, side, side)
    y = torch.randint(0, 10, (b,))
    model.train()
    for i in range(steps + 3):  # 3 warm-up steps (compilation happens there)
        if i == 3:
            start = time.perf_counter()
        loss = F.cross_entropy(run(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    train_rate = steps * b / (time.perf_counter() - start)
    model.eval()
    xs = torch.randn(1024, 1, side, side)
    with torch.no_grad():
        run(xs)
        start = time.perf_counter()
        for _ in range(max(infer_rows // 1024, 1)):
            run(xs)
    infer_rate = max(infer_rows // 1024, 1) * 1024 / (time.perf_counter() - start)
    return train_rate, infer_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--infer-rows", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", type=int, default=28)
    parser.add_argument("--variants", default="")
    args = parser.parse_args()
    table = variants(args.side)
    names = args.variants.split(",") if args.variants else list(table)
    results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, side {args.side}")
    for r in range(args.repeats):
        for name in names:
            results[name].append(measure(table[name], args.side, args.steps, args.infer_rows))
            print(f"  repeat {r + 1} {name}: train {results[name][-1][0]:.0f} rows/s, "
                  f"infer {results[name][-1][1]:.0f} rows/s", flush=True)
    base_t = statistics.median(t for t, _ in results[names[0]])
    base_i = statistics.median(i for _, i in results[names[0]])
    print(f"\nmedians of {args.repeats} (ratio to {names[0]}):")
    print(f"{'variant':<32} {'train rows/s':>13} {'ratio':>6} {'infer rows/s':>13} {'ratio':>6}")
    for name in names:
        t = statistics.median(v for v, _ in results[name])
        i = statistics.median(v for _, v in results[name])
        print(f"{name:<32} {t:13.0f} {t / base_t:6.2f} {i:13.0f} {i / base_i:6.2f}")


if __name__ == "__main__":
    main()

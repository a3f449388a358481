"""A short check for a GPU machine: same outputs as on CPU (within tolerance), and throughput.

For each encoder (the image CNN at 28x28, and every text encoder), from one seeded set of
weights copied to both devices:
  1. forward: the embeddings of one fixed batch, compared (max absolute difference);
  2. training: --steps AdamW steps on the same batches on both devices, compared step by step
     (loss) and at the end (every parameter);
  3. throughput: training rows/s (batch 128) and inference rows/s (batches of 1,024) on each
     device, with CUDA synchronised before each clock read.
TF32 is turned off for the comparison (it would differ from fp32 by ~1e-3 by design) and on
again for the throughput figures, as a user's run would have it. Exit status 0 when every
comparison is within tolerance.

Runs anywhere: `--devices cpu,cpu` checks the script itself (and must pass); on a GPU machine
`--devices cpu,cuda` (the default picks cuda when torch sees one). Written and run on CPU only:
untested on a GPU as of 2026-11-29.

Usage: python benchmarks/gpu_check.py [--devices cpu,auto] [--steps 20] [--atol 1e-3]
           [--json FILE]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as mmcore sets it: before torch loads

import argparse
import copy
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from mmcore.config import FeaturesConfig
from mmcore.modalities.encoder_classifier import EncoderClassifier
from mmcore.training.loop import resolve_device

VOCAB, SIDE = 5000, 28


def models() -> dict[str, tuple[nn.Module, callable]]:
    """name -> (seeded model with a 10-class head, batch maker(n, generator))."""
    out = {}
    torch.manual_seed(0)
    meta = {"image_shape": [1, SIDE, SIDE], "image_mean": [0.13], "image_std": [0.31]}
    out["image_cnn"] = (EncoderClassifier("image", FeaturesConfig(), meta, 10), _images)
    for name in ("gru", "cnn", "bag"):
        torch.manual_seed(0)
        cfg = FeaturesConfig(text_encoder=name)
        out[f"text_{name}"] = (EncoderClassifier("text", cfg, {"vocab_size": VOCAB}, 10), _texts)
    return out


def _images(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {"image": torch.rand(n, 1, SIDE, SIDE, generator=gen),
            "label": torch.randint(0, 10, (n,), generator=gen)}


def _texts(n: int, gen: torch.Generator, width: int = 120) -> dict[str, torch.Tensor]:
    lengths = torch.randint(1, width + 1, (n,), generator=gen)
    tokens = torch.randint(1, VOCAB, (n, width), generator=gen)
    tokens[torch.arange(width)[None] >= lengths[:, None]] = 0
    return {"tokens": tokens, "lengths": lengths,
            "label": torch.randint(0, 10, (n,), generator=gen)}


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(model: nn.Module, make, devices: list[torch.device], steps: int) -> dict:
    """Forward and training differences between the two devices, from identical weights."""
    copies = [copy.deepcopy(model).to(d) for d in devices]
    fixed = make(256, torch.Generator().manual_seed(1))
    with torch.no_grad():
        outs = [m.eval().embed(_to(fixed, d)).cpu() for m, d in zip(copies, devices, strict=True)]
    forward_diff = (outs[0] - outs[1]).abs().max().item()
    losses: list[list[float]] = [[], []]
    for i, (m, d) in enumerate(zip(copies, devices, strict=True)):
        m.train()
        gen = torch.Generator().manual_seed(2)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        for _ in range(steps):
            batch = _to(make(64, gen), d)
            # dropout draws from each device's own generator: train without it here
            loss = F.cross_entropy(m.head(_no_dropout(m, batch)), batch["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses[i].append(loss.item())
    loss_diff = max(abs(a - b) for a, b in zip(*losses, strict=True))
    params = [dict(m.named_parameters()) for m in copies]
    param_diff = max((params[0][k].detach().cpu() - params[1][k].detach().cpu()).abs().max()
                     .item() for k in params[0])
    return {"forward_max_abs": forward_diff, "loss_max_abs": loss_diff,
            "param_max_abs": param_diff, "final_loss": [round(x[-1], 5) for x in losses]}


def _no_dropout(model: EncoderClassifier, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Embeddings in train mode (BatchNorm batch statistics) with dropout switched off."""
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    for m in dropouts:
        m.eval()
    try:
        return model.embed(batch)
    finally:
        for m in dropouts:
            m.train()


def throughput(model: nn.Module, make, device: torch.device, steps: int) -> dict:
    m = copy.deepcopy(model).to(device).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(3)
    batches = [_to(make(128, gen), device) for _ in range(steps + 2)]
    for i, batch in enumerate(batches):
        if i == 2:  # two warm-up steps (cuDNN autotuning, lazy init)
            _sync(device)
            start = time.perf_counter()
        loss = F.cross_entropy(m(batch), batch["label"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    train = steps * 128 / (time.perf_counter() - start)
    m.eval()
    big = _to(make(1024, gen), device)
    with torch.no_grad():
        m.embed(big)
        _sync(device)
        start = time.perf_counter()
        for _ in range(5):
            m.embed(big)
        _sync(device)
    return {"train_rows_per_s": round(train), "infer_rows_per_s":
            round(5 * 1024 / (time.perf_counter() - start))}


def _tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", default="cpu,auto", help="two devices: cpu, cuda or auto")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--atol", type=float, default=1e-3)
    parser.add_argument("--json", type=str)
    args = parser.parse_args()
    devices = [resolve_device(d) for d in args.devices.split(",")]
    if len(devices) != 2:
        parser.error("--devices takes two devices")
    print(f"torch {torch.__version__}; comparing {devices[0]} with {devices[1]}"
          + (f" ({torch.cuda.get_device_name(devices[1])})" if devices[1].type == "cuda"
             else ""))
    report, ok = {}, True
    for name, (model, make) in models().items():
        _tf32(False)
        diff = compare(model, make, devices, args.steps)
        _tf32(True)
        speed = {str(d): throughput(model, make, d, args.steps) for d in dict.fromkeys(devices)}
        passed = max(diff["forward_max_abs"], diff["loss_max_abs"],
                     diff["param_max_abs"]) <= args.atol
        ok &= passed
        report[name] = {"diff": diff, "throughput": speed, "passed": passed}
        print(f"{name:<10} forward {diff['forward_max_abs']:.2e}  loss {diff['loss_max_abs']:.2e}"
              f"  params {diff['param_max_abs']:.2e}  {'ok' if passed else 'DIFFERS'}  | "
              + "  ".join(f"{d}: train {s['train_rows_per_s']:,}/s infer "
                          f"{s['infer_rows_per_s']:,}/s" for d, s in speed.items()), flush=True)
    print("PASS" if ok else f"FAIL: outputs differ by more than {args.atol}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"devices": [str(d) for d in devices], "atol": args.atol,
                       "models": report, "passed": ok}, f, indent=1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

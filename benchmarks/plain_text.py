"""Plain PyTorch text reference on an aclImdb-layout folder: no Prefect, no MLflow, no Parquet.

Same data, split and tokens as the pipeline: reviews read by `mmcore.data.imdb.ImdbSource`
(HTML cleaned), the pipeline's tokeniser (`split_words`, lowercased, truncated at
--max-tokens), the vocabulary from the train split, val carved from train by `assign_splits`
(same seed and shares) and left unused. The model is the pipeline's text encoder
(`EncoderClassifier("text", FeaturesConfig(text_encoder=...), ...)`), trained with
AdamW and a one-cycle schedule; test accuracy is printed after each epoch.

Usage: python benchmarks/plain_text.py --data DIR [--encoder gru|cnn|bag|nbbag] [--epochs 6]
           [--max-tokens 400] [--batch 64] [--lr 0.002] [--target 0.8] [--embedding 32]
           [--seed 0] [--json FILE]
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
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plain_loop  # noqa: E402  (a sibling script, not a package)


def load_texts(folder: Path, seed: int = 0, val: float = 0.15,
               ) -> dict[str, tuple[list, np.ndarray]]:
    """split -> (texts, labels) with the pipeline's split (train without val, val, test)."""
    from mmcore.config import DataConfig
    from mmcore.data.imdb import ImdbSource
    from mmcore.stages.preprocessing import SPLIT_CODE, assign_splits

    source = ImdbSource(DataConfig(source="imdb", path=str(folder)), seed)
    texts, labels, given = [], [], []
    for batch in source.batches(8192):
        texts += batch.column("text").to_pylist()
        labels += batch.column("label").to_pylist()
        given += [SPLIT_CODE[s] for s in batch.column("split").to_pylist()]
    labels = np.array(labels, dtype=np.int64)
    split = assign_splits(labels, np.array(given, dtype=np.int8), val, 0.2, seed)
    return {name: ([t for t, s in zip(texts, split, strict=True) if s == code],
                   labels[split == code]) for name, code in SPLIT_CODE.items() if code >= 0}


def tokenise(splits: dict, max_tokens: int) -> tuple[dict[str, dict[str, torch.Tensor]], int]:
    """Token-id tensors per split (padded to the split's longest text) and the vocab size."""
    from mmcore.data.tokenizer import Vocabulary, pad_sequences, split_words

    words = {name: [split_words(t)[:max_tokens] for t in texts]
             for name, (texts, _) in splits.items()}
    counts: dict[str, int] = {}
    for text in words["train"]:
        for w in text:
            counts[w] = counts.get(w, 0) + 1
    vocab = Vocabulary(sorted(counts, key=lambda w: (-counts[w], w)))
    out = {}
    for name, texts in words.items():
        ids = [vocab.encode(t) for t in texts]
        offsets = np.concatenate([[0], np.cumsum([len(i) for i in ids])])
        flat = np.fromiter((x for i in ids for x in i), dtype=np.int64, count=offsets[-1])
        tokens, lengths = pad_sequences(flat, offsets)
        out[name] = {"tokens": torch.from_numpy(tokens), "lengths": torch.from_numpy(lengths),
                     "label": torch.from_numpy(splits[name][1])}
    return out, len(vocab)


def forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch)


def run(data: Path, encoder: str, epochs: int, max_tokens: int, batch: int, lr: float,
        target: float, seed: int = 0, embedding: int = 32) -> dict:
    from mmcore.config import FeaturesConfig
    from mmcore.modalities.encoder_classifier import EncoderClassifier

    start = time.perf_counter()
    tensors, vocab_size = tokenise(load_texts(data, seed), max_tokens)
    load_s = time.perf_counter() - start
    torch.manual_seed(seed)
    model = EncoderClassifier("text", FeaturesConfig(text_encoder=encoder,
                                                     text_embedding=embedding),
                              {"vocab_size": vocab_size}, 2)
    prime = getattr(model.encoder, "prime", None)
    if prime is not None:  # as feature extraction does; counted as loading
        prime(plain_loop.batches(tensors["train"], 1024), 2)
        load_s = time.perf_counter() - start
    print(f"plain text [{encoder}]: {len(tensors['train']['label'])} train rows, vocab "
          f"{vocab_size}, load + tokenise {load_s:.1f} s")
    history = plain_loop.train(model, forward, tensors["train"], tensors["test"], epochs=epochs,
                               batch_size=batch, lr=lr, seed=seed)
    return {"encoder": encoder, "epochs": epochs, "load_s": round(load_s, 2), "history": history,
            "time_to_target": plain_loop.time_to(history, target, load_s), "target": target,
            "final_test_acc": history[-1]["test_acc"],
            "best_test_acc": max(h["test_acc"] for h in history)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="aclImdb folder or its parent")
    parser.add_argument("--encoder", choices=["gru", "cnn", "bag", "nbbag", "nbsvm"], default="gru")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--embedding", type=int, default=32, help="features.text_embedding")
    parser.add_argument("--seed", type=int, default=0, help="the val split and every init")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.data, args.encoder, args.epochs, args.max_tokens, args.batch, args.lr,
                 args.target, seed=args.seed, embedding=args.embedding)
    print(f"time to test accuracy >= {args.target}: {result['time_to_target']} s; "
          f"final {result['final_test_acc']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

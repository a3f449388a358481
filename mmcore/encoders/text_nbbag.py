"""A Naive-Bayes-weighted bag of n-grams (NBSVM, Wang & Manning 2012, as a fastText-style
embedding bag): each distinct word and hashed bigram of a text adds its embedding, scaled by how
strongly the train split ties that n-gram to one class.

Why this and not `bag` (measured on Pang & Lee's reviews, docs/decisions.md): the mean of learned
vectors under Adam gives a rare n-gram, seen in one review, as large a step as a frequent one, and
the model memorises the train split; weighting by the log-count ratio lets the class-bearing
n-grams speak first. The weighted bag is the embedding itself: a hidden layer after it (ReLU, or
even a second linear map) lost 1.5-2.5 points on full reviews, as the model then fits the few
hundred train reviews more easily than the logistic regression it competes with.

The ratios come from labels, so they are set only where the encoder learns from labels
(`prime`, called by feature extraction's labelled training). An encoder that learns label-free
keeps its all-ones ratios: a plain binary bag of n-grams.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from mmcore.encoders.text_bag import BIGRAM_BUCKETS, ngram_ids

SMOOTHING = 1.0  # add-one counts: an n-gram seen once in one class is not infinitely telling


def distinct(ids: torch.Tensor) -> torch.Tensor:
    """(B, N) n-gram ids -> the same ids with repeats within a row set to 0 (padding): each
    n-gram counts once per text, as NBSVM's binarised features."""
    ordered, _ = ids.sort(dim=1)
    repeat = torch.zeros_like(ordered, dtype=torch.bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    return ordered.masked_fill(repeat, 0)


def class_log_ratios(counts: torch.Tensor) -> torch.Tensor:
    """(C, N) texts per class containing each n-gram -> (C, N): per class, the log ratio of the
    n-gram's smoothed share in that class against its share in the others (NBSVM's r, one class
    against the rest)."""
    smoothed = counts + SMOOTHING
    rest = smoothed.sum(0, keepdim=True) - smoothed
    share = smoothed / smoothed.sum(1, keepdim=True)
    share_rest = rest / rest.sum(1, keepdim=True)
    return (share / share_rest).log()


def log_count_ratios(counts: torch.Tensor) -> torch.Tensor:
    """(C, N) texts per class containing each n-gram -> (N,) weights: the largest |log ratio|
    over classes (`class_log_ratios`). For two classes this is |r| of NBSVM; it is defined for
    any number of classes."""
    return class_log_ratios(counts).abs().amax(0)


def class_counts(ngrams: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 batches: Iterable[dict[str, torch.Tensor]], n_classes: int, rows: int,
                 ) -> torch.Tensor:
    """(C, rows): how many labelled texts of each class contain each n-gram (`ngrams` gives a
    batch's distinct ids); padding (row 0) counts none."""
    counts = torch.zeros(n_classes, rows)
    for batch in batches:
        ids = ngrams(batch["tokens"], batch["lengths"]).cpu()
        labels = batch["label"].cpu()[:, None].expand_as(ids)
        counts.index_put_((labels, ids), torch.ones_like(ids, dtype=counts.dtype),
                          accumulate=True)
    counts[:, 0] = 0
    return counts


class TextNBBag(nn.Module):
    """(B, L) token ids + (B,) lengths -> (B, dim): the sum of the distinct n-grams' embeddings,
    each scaled by its ratio, over sqrt(number of distinct n-grams). The bag is `dim` wide;
    `embedding`, `hidden` and `dropout` are unused (one signature for every text encoder)."""

    def __init__(self, vocab_size: int, dim: int = 64, embedding: int = 32, hidden: int = 64,
                 dropout: float = 0.25):
        super().__init__()
        self.vocab_size = vocab_size
        rows = vocab_size + BIGRAM_BUCKETS
        self.bag = nn.EmbeddingBag(rows, dim, mode="sum", padding_idx=0)
        nn.init.uniform_(self.bag.weight, -1 / dim, 1 / dim)  # small, as `bag`'s
        with torch.no_grad():
            self.bag.weight[0].zero_()
        self.register_buffer("ratio", torch.ones(rows))  # saved with the weights
        self.dim = dim

    def ngrams(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return distinct(ngram_ids(tokens, lengths, self.vocab_size))

    def prime(self, batches: Iterable[dict[str, torch.Tensor]], n_classes: int) -> None:
        """Set the ratios from labelled train batches (tokens, lengths, label)."""
        counts = class_counts(self.ngrams, batches, n_classes, self.ratio.numel())
        self.ratio.copy_(log_count_ratios(counts).to(self.ratio.device))
        self.ratio[0] = 0

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        ids = self.ngrams(tokens, lengths)
        count = (ids > 0).sum(1, keepdim=True).clamp(min=1).to(self.bag.weight.dtype)
        summed = self.bag(ids, per_sample_weights=self.ratio[ids].to(self.bag.weight.dtype))
        return summed / count.sqrt()  # (B, dim)

"""A bag-of-n-grams text encoder (fastText, Joulin et al. 2016): mean of word and bigram vectors.

Bigrams are hashed into `BIGRAM_BUCKETS` rows after the vocabulary, so there is no bigram
vocabulary to build or store; collisions cost a little accuracy, not correctness.
"""

from __future__ import annotations

import torch
from torch import nn

BIGRAM_BUCKETS = 1 << 16
_PRIME = 1_000_003


def ngram_ids(tokens: torch.Tensor, lengths: torch.Tensor, vocab_size: int,
              buckets: int = BIGRAM_BUCKETS) -> torch.Tensor:
    """(B, L) word ids -> (B, 2L - 1) word and bigram ids, the bigrams hashed into `buckets`
    rows after the vocabulary; 0 (padding) past each text."""
    width = tokens.shape[1]
    positions = torch.arange(width, device=tokens.device)[None]
    words = tokens.masked_fill(positions >= lengths[:, None], 0)
    if width < 2:
        return words
    pair_valid = positions[:, 1:] < lengths[:, None]
    hashed = (tokens[:, :-1] * _PRIME + tokens[:, 1:]) % buckets + vocab_size
    return torch.cat([words, hashed.masked_fill(~pair_valid, 0)], dim=1)


class TextBag(nn.Module):
    """(B, L) token ids + (B,) lengths -> (B, dim): the mean of the text's word and bigram
    embeddings (padding excluded), then a linear layer. `hidden` is unused (one signature for
    every text encoder)."""

    def __init__(self, vocab_size: int, dim: int = 64, embedding: int = 32, hidden: int = 64,
                 dropout: float = 0.25):
        super().__init__()
        self.vocab_size = vocab_size
        self.bag = nn.EmbeddingBag(vocab_size + BIGRAM_BUCKETS, embedding, mode="mean",
                                   padding_idx=0)
        # Small initial vectors, as fastText's: rare n-grams that training barely moves stay
        # near zero instead of adding N(0, 1) noise to every text they occur in.
        nn.init.uniform_(self.bag.weight, -1 / embedding, 1 / embedding)
        with torch.no_grad():
            self.bag.weight[0].zero_()
        self.project = nn.Sequential(nn.Dropout(dropout), nn.Linear(embedding, dim), nn.ReLU())
        self.dim = dim

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.project(self.bag(ngram_ids(tokens, lengths, self.vocab_size)))  # (B, dim)

"""NB-LR (Wang & Manning 2012's NBSVM with a logistic loss): a linear model over binarised word
and bigram features scaled by their Naive-Bayes log-count ratios, fitted to convergence before
training starts. Its embedding is the model's class scores.

Why not `nbbag` on full reviews (docs/decisions.md, "NB-LR"): `nbbag` learns a 64-wide vector
per n-gram with Adam over a few hundred steps and hashes bigrams into 65,536 rows; on Pang &
Lee's full reviews the convex fit of the same features gains 1.3 points, and 2^20 bigram rows
(fewer collisions) 1.5 more. One score per class per n-gram keeps 2^20 rows small. And an
embedding that *is* the decision leaves the pipeline's later stages (fitted on the train rows,
which any n-gram model separates perfectly) nothing to learn but that decision.

`prime` (feature extraction's labelled training) fits the scores by full-batch L-BFGS with an L2
penalty (C = 1, scikit-learn's default) and freezes them; the head then learns on fixed scores.
Never primed (a label-free student), it is a learnable linear bag of n-grams: ratios all one.

The fit separates every train row, so its scores of those rows are no guide to where a later
classifier should put its threshold: feature extraction writes the train rows' *cross-fitted*
scores instead (`fold_scores`: each row scored by a fit on the other four fifths), as stacking
does. This is possible because a class score means the same in every fold's fit; a learned
64-wide embedding has no such common axes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from mmcore.encoders.text_bag import ngram_ids
from mmcore.encoders.text_nbbag import class_counts, class_log_ratios, distinct

BUCKETS = 1 << 20  # bigram rows: 2^16 cost 1.5 points on full reviews through collisions
L2_C = 1.0  # inverse L2 strength of the fit, as scikit-learn's LogisticRegression(C=1)
LBFGS_ITERATIONS = 300
FOLDS = 5  # cross-fitted train scores (`fold_scores`)


class TextNBSVM(nn.Module):
    """(B, L) token ids + (B,) lengths -> (B, dim): per class, the sum over the text's distinct
    n-grams of their fitted weight (ratio x coefficient), plus a bias; `dim` must be at least the
    number of classes it is primed with (the columns after them stay zero). `embedding`, `hidden`
    and `dropout` are unused (one signature for every text encoder)."""

    def __init__(self, vocab_size: int, dim: int = 2, embedding: int = 32, hidden: int = 64,
                 dropout: float = 0.25):
        super().__init__()
        self.vocab_size, self.dim = vocab_size, dim
        self.weight = nn.Parameter(torch.zeros(vocab_size + BUCKETS, dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def ngrams(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return distinct(ngram_ids(tokens, lengths, self.vocab_size, BUCKETS))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return F.embedding_bag(self.ngrams(tokens, lengths), self.weight, mode="sum",
                               padding_idx=0) + self.bias

    def prime(self, batches: Iterable[dict[str, torch.Tensor]], n_classes: int) -> None:
        """Fit the class scores on the labelled train batches, then freeze them."""
        if n_classes > self.dim:
            raise ValueError(f"features.text_encoder=nbsvm: text_dim={self.dim} is narrower than "
                             f"the {n_classes} classes (its embedding is one score per class)")
        batches = list(batches)
        ratio = class_log_ratios(class_counts(self.ngrams, batches, n_classes,
                                              self.weight.shape[0]))  # (C, rows)
        ids = [self.ngrams(b["tokens"], b["lengths"]).cpu() for b in batches]
        labels = torch.cat([b["label"].cpu() for b in batches])
        coef, bias = fit_nb_lr(ids, labels, ratio.T.contiguous())
        with torch.no_grad():
            self.weight.zero_()
            self.weight[:, :n_classes] = (ratio.T * coef).to(self.weight)
            self.weight[0] = 0
            self.bias.zero_()
            self.bias[:n_classes] = bias.to(self.bias)
        self.requires_grad_(False)

    def fold_scores(self, batches: Iterable[dict[str, torch.Tensor]], n_classes: int,
                    folds: int = FOLDS) -> torch.Tensor:
        """(N, dim) cross-fitted embeddings of the labelled rows of `batches`, in their order:
        each row scored by a fit on the other folds (a fixed draw), never by one that saw it."""
        batches = list(batches)
        sizes = [len(b["label"]) for b in batches]
        fold = torch.randperm(sum(sizes), generator=torch.Generator().manual_seed(0)) % folds
        fold = fold.split(sizes)  # per batch: batches are padded to their own widths
        scores = [torch.zeros(n, self.dim) for n in sizes]
        for k in range(folds):
            model = TextNBSVM(self.vocab_size, self.dim)
            model.prime([{key: v[f != k] for key, v in b.items()}
                         for b, f in zip(batches, fold, strict=True)], n_classes)
            with torch.no_grad():
                for b, f, out in zip(batches, fold, scores, strict=True):
                    out[f == k] = model(b["tokens"][f == k], b["lengths"][f == k])
        return torch.cat(scores)


def fit_nb_lr(ids: list[torch.Tensor], labels: torch.Tensor, ratio: torch.Tensor,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on binary n-gram features scaled by `ratio` (rows, C):
    score_c = sum of ratio[i, c] * coef[i, c] over the text's n-grams + bias_c, minimising the
    summed cross-entropy + ||coef||^2 / (2 L2_C) by full-batch L-BFGS. Returns (coef, bias)."""
    coef = torch.zeros_like(ratio, requires_grad=True)
    bias = torch.zeros(ratio.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([coef, bias], max_iter=LBFGS_ITERATIONS, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-7,
                                  tolerance_change=1e-10)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        scores = torch.cat([F.embedding_bag(i, ratio * coef, mode="sum", padding_idx=0)
                            for i in ids]) + bias
        loss = (F.cross_entropy(scores, labels, reduction="sum")
                + (coef ** 2).sum() / (2 * L2_C))
        loss.backward()
        return loss

    optimizer.step(closure)
    return coef.detach(), bias.detach()

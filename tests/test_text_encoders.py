"""The optional text encoders (1-D CNN, bag of n-grams): shapes, padding, pinned outputs."""

from __future__ import annotations

import pytest
import torch

from mmcore.config import FeaturesConfig
from mmcore.encoders import TEXT_ENCODERS, TextBag, TextCNN, TextGRU
from mmcore.encoders.text_bag import BIGRAM_BUCKETS, ngram_ids
from mmcore.modalities import MODALITIES


def _seeded(cls, **kwargs):
    torch.manual_seed(0)
    return cls(20, dim=8, embedding=6, hidden=5, **kwargs).eval()


@pytest.mark.parametrize("cls", [TextCNN, TextBag])
def test_padding_and_junk_after_the_length_do_not_change_the_output(cls):
    model = _seeded(cls)
    with torch.no_grad():
        short = model(torch.tensor([[5, 3, 2]]), torch.tensor([3]))
        padded = model(torch.tensor([[5, 3, 2, 0, 0, 0]]), torch.tensor([3]))
        junk = model(torch.tensor([[5, 3, 2, 11, 12]]), torch.tensor([3]))
        batch = model(torch.tensor([[9, 8, 7, 6, 5, 4], [5, 3, 2, 0, 0, 0]]),
                      torch.tensor([6, 3]))
    assert short.shape == (1, 8)
    torch.testing.assert_close(short, padded)
    torch.testing.assert_close(short, junk)
    torch.testing.assert_close(short, batch[1:2])


@pytest.mark.parametrize("cls, pinned", [(TextCNN, 1.9251), (TextBag, 1.0742)])
def test_pinned_outputs_and_gradients(cls, pinned):
    model = _seeded(cls, dropout=0.0)
    out = model(torch.tensor([[5, 3, 2, 7], [2, 3, 5, 0]]), torch.tensor([4, 3]))
    assert out.shape == (2, 8)
    assert (out >= 0).all()
    assert out.sum().item() == pytest.approx(pinned, abs=1e-3)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bag_of_ngrams_sees_word_order_through_bigrams():
    model = _seeded(TextBag, dropout=0.0)
    with torch.no_grad():
        a = model(torch.tensor([[5, 3, 2]]), torch.tensor([3]))
        b = model(torch.tensor([[2, 3, 5]]), torch.tensor([3]))
    assert not torch.allclose(a, b)  # same words, different bigrams


def test_ngram_ids_hash_bigrams_after_the_vocabulary():
    ids = ngram_ids(torch.tensor([[4, 5, 6], [7, 0, 0]]), torch.tensor([3, 1]), vocab_size=10)
    assert ids.shape == (2, 5)
    assert ids[0, :3].tolist() == [4, 5, 6]
    assert ids[1].tolist() == [7, 0, 0, 0, 0]  # one word: no bigram, the rest padding
    assert ((ids[0, 3:] >= 10) & (ids[0, 3:] < 10 + BIGRAM_BUCKETS)).all()


@pytest.mark.parametrize("name, cls", [("gru", TextGRU), ("cnn", TextCNN), ("bag", TextBag)])
def test_build_encoder_picks_the_configured_text_encoder(name, cls):
    cfg = FeaturesConfig(text_encoder=name, text_dim=12)
    encoder = MODALITIES["text"].build_encoder(cfg, {"vocab_size": 30})
    assert type(encoder) is cls and TEXT_ENCODERS[name] is cls
    assert encoder.dim == 12

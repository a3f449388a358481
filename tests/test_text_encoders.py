"""The optional text encoders (1-D CNN, bag of n-grams, NB-weighted bag, NB-LR): shapes, padding,
pinned outputs, the NB weights, the NB-LR fit against scikit-learn's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmcore.config import FeaturesConfig
from mmcore.encoders import TEXT_ENCODERS, TextBag, TextCNN, TextGRU, TextNBBag, TextNBSVM
from mmcore.encoders.text_bag import BIGRAM_BUCKETS, ngram_ids
from mmcore.encoders.text_nbbag import class_log_ratios, distinct, log_count_ratios
from mmcore.encoders.text_nbsvm import fit_nb_lr
from mmcore.modalities import MODALITIES


def _seeded(cls, **kwargs):
    torch.manual_seed(0)
    return cls(20, dim=8, embedding=6, hidden=5, **kwargs).eval()


@pytest.mark.parametrize("cls", [TextCNN, TextBag, TextNBBag])
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


@pytest.mark.parametrize("name, cls", [("gru", TextGRU), ("cnn", TextCNN), ("bag", TextBag),
                                       ("nbbag", TextNBBag), ("nbsvm", TextNBSVM)])
def test_build_encoder_picks_the_configured_text_encoder(name, cls):
    cfg = FeaturesConfig(text_encoder=name, text_dim=12)
    encoder = MODALITIES["text"].build_encoder(cfg, {"vocab_size": 30})
    assert type(encoder) is cls and TEXT_ENCODERS[name] is cls
    assert encoder.dim == 12


def test_distinct_counts_each_ngram_once_per_text():
    ids = distinct(torch.tensor([[4, 9, 4, 4, 0], [3, 3, 0, 0, 0]]))
    assert sorted(i for i in ids[0].tolist() if i) == [4, 9]
    assert sorted(i for i in ids[1].tolist() if i) == [3]


def test_log_count_ratios_weigh_the_ngrams_that_tell_classes_apart():
    # n-grams 1 and 3 as often in both classes, 2 only in class 1, 4 only in class 0
    counts = torch.tensor([[10.0, 10.0, 0.0, 1.0, 8.0], [10.0, 10.0, 8.0, 1.0, 0.0]])
    ratio = log_count_ratios(counts)
    assert ratio[1].item() == pytest.approx(0.0, abs=1e-6)
    assert ratio[3].item() == pytest.approx(0.0, abs=1e-6)
    # add-one smoothing: (8 + 1) / (0 + 1), both classes the same size
    assert ratio[2].item() == pytest.approx(math.log(9.0), rel=1e-5)
    assert ratio[4].item() == pytest.approx(math.log(9.0), rel=1e-5)
    # three classes: each n-gram's largest one-against-the-rest ratio
    three = log_count_ratios(torch.cat([counts, counts[:1]]))
    assert three.shape == (5,) and three[2] > three[1]


def _labelled_batch():
    # class 1 texts all contain word 7, class 0 texts word 8; word 5 is in every text
    tokens = torch.tensor([[5, 7, 2], [7, 5, 3], [5, 8, 2], [8, 5, 3]])
    return {"tokens": tokens, "lengths": torch.tensor([3, 3, 3, 3]),
            "label": torch.tensor([1, 1, 0, 0])}


def test_prime_sets_the_ratios_from_labels_and_they_travel_with_the_weights(tmp_path):
    from mmcore.modalities.encoder_classifier import EncoderClassifier
    from mmcore.stages.feature_extraction import load_trained

    cfg = FeaturesConfig(text_encoder="nbbag", text_dim=8)
    torch.manual_seed(0)
    model = EncoderClassifier("text", cfg, {"vocab_size": 20}, 2)
    assert torch.equal(model.encoder.ratio, torch.ones_like(model.encoder.ratio))  # unprimed
    model.encoder.prime([_labelled_batch()], n_classes=2)
    ratio = model.encoder.ratio
    assert ratio[0] == 0  # padding
    assert ratio[7] > 0.5 and ratio[8] > 0.5  # each names one class
    assert ratio[5].item() == pytest.approx(0.0, abs=1e-6)  # in every text: says nothing
    torch.save(model.state_dict(), tmp_path / "encoder_text.pt")
    loaded = load_trained(tmp_path / "encoder_text.pt", "text", cfg, {"vocab_size": 20})
    batch = _labelled_batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(batch), model.eval().embed(batch))


def test_primed_nbbag_learns_a_separable_toy_task():
    from mmcore.modalities.encoder_classifier import EncoderClassifier
    from mmcore.training import ArrayBatches, fit

    torch.manual_seed(0)
    model = EncoderClassifier("text", FeaturesConfig(text_encoder="nbbag", text_dim=8),
                              {"vocab_size": 20}, 2)
    batch = _labelled_batch()
    model.encoder.prime([batch], n_classes=2)

    def loss(m, b):
        logits = m(b)
        return torch.nn.functional.cross_entropy(logits, b["label"]), {"count": len(b["label"])}

    fit(model, ArrayBatches({k: v.numpy() for k, v in batch.items()}, 4, seed=0), loss,
        epochs=30, lr=0.05)
    with torch.no_grad():
        assert model(batch).argmax(1).tolist() == [1, 1, 0, 0]


def _primed_nbsvm(dim: int = 4) -> TextNBSVM:
    encoder = TextNBSVM(20, dim=dim)
    encoder.prime([_labelled_batch()], n_classes=2)
    return encoder.eval()


def test_nbsvm_prime_fits_one_score_per_class_and_freezes_them(tmp_path):
    from mmcore.modalities.encoder_classifier import EncoderClassifier
    from mmcore.stages.feature_extraction import load_trained

    unprimed = TextNBSVM(20, dim=4)
    assert all(p.requires_grad for p in unprimed.parameters())  # a label-free student learns
    encoder = _primed_nbsvm()
    batch = _labelled_batch()
    with torch.no_grad():
        scores = encoder(batch["tokens"], batch["lengths"])
    assert scores.shape == (4, 4)
    assert (scores[:, 2:] == 0).all()  # past the classes: zero
    assert (scores[:, :2].argmax(1) == batch["label"]).all()
    assert not any(p.requires_grad for p in encoder.parameters())  # the head learns alone
    torch.testing.assert_close(_primed_nbsvm().weight, encoder.weight)  # deterministic
    cfg = FeaturesConfig(text_encoder="nbsvm", text_dim=4)
    model = EncoderClassifier("text", cfg, {"vocab_size": 20}, 2)
    model.encoder = encoder
    torch.save(model.state_dict(), tmp_path / "encoder_text.pt")
    loaded = load_trained(tmp_path / "encoder_text.pt", "text", cfg, {"vocab_size": 20})
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(batch), scores)


def test_nbsvm_needs_a_score_per_class():
    with pytest.raises(ValueError, match="text_dim=2 is narrower than the 3 classes"):
        TextNBSVM(20, dim=2).prime([_labelled_batch()], n_classes=3)


def test_fit_nb_lr_is_scikit_learns_logistic_regression_on_nb_scaled_features():
    """Two classes: the score difference is a binary logistic regression on the features x r
    whose coefficient is split evenly between the classes, so its L2 strength is halved: it
    must equal scikit-learn's fit with C = 2 * L2_C (its intercept is not penalised either)."""
    from sklearn.linear_model import LogisticRegression

    from mmcore.encoders.text_nbsvm import L2_C

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (60,), generator=generator)
    # 12 features: the first 3 lean towards class 1, the next 3 towards class 0, the rest noise
    lean = torch.full((60, 12), 0.3)
    lean[:, :3] += 0.4 * labels[:, None]
    lean[:, 3:6] += 0.4 * (1 - labels[:, None])
    present = torch.bernoulli(lean, generator=generator)
    ids = torch.where(present > 0, torch.arange(1, 13), torch.zeros(12, dtype=torch.long))
    counts = torch.zeros(2, 13)
    counts[:, 1:] = torch.stack([present[labels == c].sum(0) for c in (0, 1)])
    ratio = class_log_ratios(counts).T.contiguous()  # (13, 2)
    coef, bias = fit_nb_lr([ids], labels, ratio)
    ours = present @ (ratio[1:, 1] * coef[1:, 1] - ratio[1:, 0] * coef[1:, 0]) + bias[1] - bias[0]
    reference = LogisticRegression(C=2 * L2_C, tol=1e-10, max_iter=10_000).fit(
        (present * ratio[1:, 1]).numpy(), labels.numpy())
    expected = torch.from_numpy(reference.decision_function((present * ratio[1:, 1]).numpy()))
    torch.testing.assert_close(ours.double(), expected.double(), atol=1e-3, rtol=1e-3)


def test_nbsvm_fold_scores_never_score_a_row_with_a_fit_that_saw_it():
    """Every row has a word of its own and a random label: the full fit separates the rows by
    those words alone, while a fit on the other folds has never seen the word, so the rows of a
    fold all get the same score (the fit's bias)."""
    labels = torch.randint(0, 2, (20,), generator=torch.Generator().manual_seed(0))
    batch = {"tokens": torch.arange(2, 22)[:, None], "lengths": torch.ones(20, dtype=torch.long),
             "label": labels}
    encoder = TextNBSVM(30, dim=2)
    encoder.prime([batch], n_classes=2)
    with torch.no_grad():
        memorised = encoder(batch["tokens"], batch["lengths"])
    assert (memorised.argmax(1) == labels).all()
    # two batches, padded to different widths, as feature extraction reads them
    second = {"tokens": torch.nn.functional.pad(batch["tokens"][12:], (0, 2)),
              "lengths": batch["lengths"][12:], "label": labels[12:]}
    first = {k: v[:12] for k, v in batch.items()}
    crossed = encoder.fold_scores([first, second], n_classes=2, folds=4)
    assert crossed.shape == (20, 2)
    distinct_scores = {tuple(row) for row in crossed.round(decimals=5).tolist()}
    assert len(distinct_scores) <= 4  # one per fold: nothing of a row's own word


def test_feature_extraction_writes_cross_fitted_train_rows_for_nbsvm(tmp_path):
    from data_factories import write_imdb

    from mmcore.config import load_config
    from mmcore.data.sources import open_source
    from mmcore.io.parquet import read_embeddings
    from mmcore.stages.feature_extraction import load_trained, run_feature_extraction
    from mmcore.stages.preprocessing import run_preprocessing
    from mmcore.training.batches import sample_decoder

    cfg = load_config(None, [f"data.path={write_imdb(tmp_path, per_class=8)}",
                             "data.source=imdb", "features.text_encoder=nbsvm",
                             "features.text_dim=2", "features.text_epochs=1"])
    samples, features = tmp_path / "samples", tmp_path / "features"
    samples.mkdir(), features.mkdir()
    run_preprocessing(open_source(cfg.data, cfg.seed), cfg.data, cfg.seed, samples, {})
    run_feature_extraction(samples, cfg.features, cfg.seed, features, {})
    rows = read_embeddings(features / "text.parquet")
    crossed = read_embeddings(features / "out_of_fold_text.parquet")
    train = rows["split"] == "train"
    assert sorted(crossed["id"]) == sorted(rows["id"][train])
    order = {rid: i for i, rid in enumerate(crossed["id"])}
    np.testing.assert_array_equal(rows["embedding"][train],
                                  crossed["embedding"][[order[r] for r in rows["id"][train]]])
    # val and test rows: the encoder fitted on every train row
    import pyarrow.parquet as pq

    from mmcore.io.parquet import read_metadata
    meta = read_metadata(samples / "train.parquet")
    model = load_trained(features / "encoder_text.pt", "text", cfg.features, meta)
    test = pq.read_table(samples / "test.parquet")
    with torch.no_grad():
        expected = model.embed(sample_decoder("text", meta)(test)).numpy()
    got = {rid: e for rid, e in zip(rows["id"], rows["embedding"], strict=True)}
    np.testing.assert_allclose(np.stack([got[r] for r in test.column("id").to_pylist()]),
                               expected, rtol=1e-5, atol=1e-6)

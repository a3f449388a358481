"""mmcore.data.digit_texts: seeded, deliberately imperfect descriptions of digits."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mmcore.data.digit_texts import CONFUSABLE, KINDS, WORDS, generate_digit_texts
from mmcore.data.tokenizer import split_words

SHARES = {"uninformative": 0.15, "ambiguous": 0.15, "wrong": 0.10}
N = 4000


def _names(digit: int) -> set[str]:
    return {WORDS[digit], str(digit)}


def _digits_named(text: str) -> set[int]:
    words = set(split_words(text))
    return {d for d in range(10) if _names(d) & words}


@pytest.fixture(scope="module")
def generated():
    labels = np.arange(N) % 10
    texts, kinds = generate_digit_texts(labels, seed=0, **SHARES)
    return labels, texts, kinds


def test_one_text_and_kind_per_label(generated):
    labels, texts, kinds = generated
    assert len(texts) == len(kinds) == N
    assert set(kinds) <= set(KINDS)
    assert all(isinstance(t, str) and t.strip() for t in texts)


def test_reproducible_for_a_seed():
    labels = np.random.default_rng(1).integers(0, 10, size=200)
    a = generate_digit_texts(labels, seed=5, **SHARES)
    b = generate_digit_texts(labels, seed=5, **SHARES)
    c = generate_digit_texts(labels, seed=6, **SHARES)
    assert a == b
    assert a[0] != c[0]


def test_pinned_first_texts():
    texts, kinds = generate_digit_texts(np.arange(6), seed=0, **SHARES)
    assert texts == ["a neat zero", "a 7 or a 1", "a character from a form",
                     "a character from a form", "a neat four", "the number five"]
    assert kinds == ["informative", "ambiguous", "uninformative", "uninformative",
                     "informative", "informative"]


def test_shares_of_kinds_are_close_to_configured(generated):
    _, _, kinds = generated
    counts = Counter(kinds)
    for kind, share in SHARES.items():
        assert counts[kind] / N == pytest.approx(share, abs=0.02), kind
    assert counts["informative"] / N == pytest.approx(1 - sum(SHARES.values()), abs=0.03)


def test_zero_noise_gives_only_informative_texts():
    labels = np.arange(50) % 10
    texts, kinds = generate_digit_texts(labels, uninformative=0, ambiguous=0, wrong=0, seed=0)
    assert set(kinds) == {"informative"}
    assert all(_digits_named(t) == {int(y)} for t, y in zip(texts, labels, strict=True))


def test_all_wrong():
    labels = np.arange(50) % 10
    _, kinds = generate_digit_texts(labels, uninformative=0, ambiguous=0, wrong=1, seed=0)
    assert set(kinds) == {"wrong"}


def test_informative_texts_name_exactly_the_true_digit(generated):
    labels, texts, kinds = generated
    for label, text, kind in zip(labels.tolist(), texts, kinds, strict=True):
        if kind == "informative":
            assert _digits_named(text) == {label}, text


def test_wrong_texts_never_name_the_true_digit(generated):
    labels, texts, kinds = generated
    others = Counter()
    for label, text, kind in zip(labels.tolist(), texts, kinds, strict=True):
        if kind == "wrong":
            named = _digits_named(text)
            assert label not in named, text
            assert len(named) == 1, text  # it does name some (other) digit
            others[(next(iter(named)) - label) % 10] += 1
    assert set(others) == set(range(1, 10))  # every other digit occurs


def test_ambiguous_texts_include_the_true_digit_and_its_confusable(generated):
    labels, texts, kinds = generated
    orders = Counter()
    for label, text, kind in zip(labels.tolist(), texts, kinds, strict=True):
        if kind == "ambiguous":
            words = split_words(text)
            assert str(label) in words, text
            assert str(CONFUSABLE[label]) in words, text
            orders[words.index(str(label)) < words.index(str(CONFUSABLE[label]))] += 1
    assert set(orders) == {True, False}  # the true digit is not always first


def test_uninformative_texts_name_no_digit(generated):
    _, texts, kinds = generated
    named = {t for t, k in zip(texts, kinds, strict=True) if k == "uninformative"
             and _digits_named(t)}
    assert named == set()

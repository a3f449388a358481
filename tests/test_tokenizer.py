"""mmcore.data.tokenizer: word splitting, the vocabulary, and vectorised padding."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mmcore.data.tokenizer import PAD, UNK, Vocabulary, pad_sequences, split_words


def test_split_words():
    assert split_words("A handwritten Seven, slightly slanted!") == [
        "a", "handwritten", "seven", ",", "slightly", "slanted", "!"]
    assert split_words("Digit 8, hand-drawn", lowercase=False) == [
        "Digit", "8", ",", "hand", "-", "drawn"]
    assert split_words("  ") == []
    assert split_words("") == []
    assert split_words("it's") == ["it", "'", "s"]


def test_vocabulary_indices():
    vocab = Vocabulary(["seven", "a", PAD, "one", UNK])
    assert vocab.tokens == [PAD, UNK, "seven", "a", "one"]
    assert len(vocab) == 5
    assert vocab.index[PAD] == 0 and vocab.index[UNK] == 1
    assert vocab.encode(["a", "seven", "zebra", "one", "<pad>"]) == [3, 2, 1, 4, 0]
    assert vocab.encode([]) == []
    empty = Vocabulary([])
    assert len(empty) == 2
    assert empty.encode(["anything"]) == [1]


def test_pad_sequences_basic_and_empty_rows():
    # rows: [5, 6, 7], [], [8], []
    values = np.array([5, 6, 7, 8], dtype=np.int32)
    offsets = np.array([0, 3, 3, 4, 4])
    tokens, lengths = pad_sequences(values, offsets)
    assert tokens.dtype == np.int64 and lengths.dtype == np.int64
    assert tokens.shape == (4, 3)
    np.testing.assert_array_equal(tokens, [[5, 6, 7], [0, 0, 0], [8, 0, 0], [0, 0, 0]])
    # empty rows count as one (padding) token, which the encoders need
    np.testing.assert_array_equal(lengths, [3, 1, 1, 1])


def test_pad_sequences_all_empty_and_no_rows():
    tokens, lengths = pad_sequences(np.zeros(0, np.int32), np.array([0, 0, 0]))
    np.testing.assert_array_equal(tokens, [[0], [0]])
    np.testing.assert_array_equal(lengths, [1, 1])
    tokens, lengths = pad_sequences(np.zeros(0, np.int32), np.array([0]))
    assert tokens.shape == (0, 1) and lengths.shape == (0,)


def test_pad_sequences_max_len_truncates_from_the_end():
    values = np.arange(1, 10, dtype=np.int32)  # rows: [1..5], [6, 7], [8, 9]
    offsets = np.array([0, 5, 7, 9])
    tokens, lengths = pad_sequences(values, offsets, max_len=3)
    np.testing.assert_array_equal(tokens, [[1, 2, 3], [6, 7, 0], [8, 9, 0]])
    np.testing.assert_array_equal(lengths, [3, 2, 2])
    # a max_len above the longest row does not widen the result
    tokens, _ = pad_sequences(values, offsets, max_len=50)
    assert tokens.shape == (3, 5)


def test_pad_sequences_sliced_offsets():
    # Arrow list slices keep offsets into the full values buffer: the first offset is not 0.
    values = np.array([9, 9, 9, 4, 5, 6, 7, 8], dtype=np.int32)
    tokens, lengths = pad_sequences(values, np.array([3, 5, 5, 8]))
    np.testing.assert_array_equal(tokens, [[4, 5, 0], [0, 0, 0], [6, 7, 8]])
    np.testing.assert_array_equal(lengths, [2, 1, 3])


@pytest.mark.parametrize("start, length", [(0, 4), (1, 3), (2, 2), (3, 1)])
def test_pad_sequences_matches_arrow_slices(start, length):
    rows = [[1, 2], [3], [], [4, 5, 6]]
    sliced = pa.array(rows, pa.list_(pa.int32())).slice(start, length)
    tokens, lengths = pad_sequences(sliced.values.to_numpy(), sliced.offsets.to_numpy())
    expect = rows[start:start + length]
    width = max(1, max(len(r) for r in expect))
    assert tokens.shape == (length, width)
    for row, got, n in zip(expect, tokens.tolist(), lengths.tolist(), strict=True):
        assert got == row + [0] * (width - len(row))
        assert n == max(1, len(row))


def test_pad_sequences_vectorised_large_batch():
    rng = np.random.default_rng(0)
    lens = rng.integers(0, 12, size=2000)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    values = rng.integers(2, 100, size=offsets[-1]).astype(np.int32)
    tokens, lengths = pad_sequences(values, offsets, max_len=8)
    assert tokens.shape == (2000, 8)
    np.testing.assert_array_equal(lengths, np.maximum(np.minimum(lens, 8), 1))
    i = int(np.flatnonzero(lens > 8)[0])
    np.testing.assert_array_equal(tokens[i], values[offsets[i]:offsets[i] + 8])
    expect = np.zeros((2000, 8), dtype=np.int64)  # the per-row reference
    for row, (a, b) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
        seq = values[a:b][:8]
        expect[row, :len(seq)] = seq
    np.testing.assert_array_equal(tokens, expect)

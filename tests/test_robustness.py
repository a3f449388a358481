"""mmcore.robustness: seeded test-time corruptions and MultiBench's robustness figures."""

from __future__ import annotations

import numpy as np
import pytest

from mmcore.robustness import (
    CORRUPTIONS,
    LEVELS,
    UNK_ID,
    Ragged,
    effective_robustness,
    gaussian_noise,
    minmax_normalise,
    missing_rows,
    occlusion,
    occlusion_patch,
    relative_robustness,
    token_dropout,
    token_replacement,
)


@pytest.fixture
def texts() -> Ragged:
    return Ragged.from_lists([[2, 3, 4], [5], [6, 7]])


@pytest.fixture
def images() -> np.ndarray:
    return np.full((3, 1, 8, 8), 0.5, dtype=np.float32)


def test_levels_are_eleven_tenths():
    assert LEVELS == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert CORRUPTIONS == {"image": ("gaussian_noise", "occlusion", "missing"),
                           "text": ("token_dropout", "token_replacement", "missing")}


# --- images ---------------------------------------------------------------------------------

def test_gaussian_noise_level_zero_is_identity_and_pinned(images):
    assert np.array_equal(gaussian_noise(images, 0.0, seed=0), images)
    noisy = gaussian_noise(images, 0.1, seed=0)
    assert noisy.dtype == np.float32 and noisy.shape == images.shape
    np.testing.assert_allclose(noisy[0, 0, 0, :3], [0.4575, 0.5191, 0.4230], atol=1e-4)
    assert 0.08 < float(np.std(noisy - images)) < 0.12


def test_gaussian_noise_same_draw_scaled_across_levels_and_clipped(images):
    small, large = gaussian_noise(images, 0.1, 0), gaussian_noise(images, 0.3, 0)
    inside = (large > 0) & (large < 1)
    np.testing.assert_allclose((large - 0.5)[inside], 3 * (small - 0.5)[inside], atol=1e-5)
    assert gaussian_noise(images, 1.0, 0).min() == 0.0 and gaussian_noise(images, 1.0, 0).max() == 1
    assert not np.array_equal(gaussian_noise(images, 0.3, 1), large)  # another seed
    assert np.array_equal(gaussian_noise(images, 0.3, 0), large)  # same seed


@pytest.mark.parametrize(("h", "w", "level", "patch"), [
    (8, 8, 0.0, (0, 0)), (8, 8, 0.1, (3, 2)), (8, 8, 0.5, (6, 5)), (8, 8, 0.9, (8, 7)),
    (8, 8, 1.0, (8, 8)), (28, 28, 0.1, (9, 9)), (28, 28, 0.5, (20, 20)), (4, 6, 0.25, (2, 3)),
])
def test_occlusion_patch_sizes(h, w, level, patch):
    assert occlusion_patch(h, w, level) == patch


def test_occlusion_covers_the_patch_in_every_channel():
    images = np.ones((2, 3, 4, 4), dtype=np.float32)
    out = occlusion(images, 0.25, seed=3)
    assert np.array_equal(out[0, 0], [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    assert (out == 0).sum(axis=(2, 3)).tolist() == [[4, 4, 4], [4, 4, 4]]
    assert np.array_equal(out[:, 0], out[:, 2])
    assert np.all(images == 1)  # the input is not modified


def test_occlusion_grows_with_level_and_ends_blank(images):
    zeros = [int((occlusion(images, lv, 0) == 0).sum()) for lv in LEVELS]
    assert zeros == sorted(zeros)
    assert zeros[0] == 0 and zeros[-1] == images.size
    assert np.all(occlusion(images, 1.0, 0, fill=-1.0) == -1.0)


# --- texts ----------------------------------------------------------------------------------

def test_ragged_round_trip(texts):
    assert texts.to_lists() == [[2, 3, 4], [5], [6, 7]]
    assert texts.offsets.tolist() == [0, 3, 4, 6]


def test_token_dropout_pinned_nested_and_total(texts):
    assert token_dropout(texts, 0.0, 0).to_lists() == texts.to_lists()
    assert token_dropout(texts, 0.1, 0).to_lists() == [[2, 4], [5], [6, 7]]
    assert token_dropout(texts, 0.3, 0).to_lists() == [[4], [5], [7]]
    assert token_dropout(texts, 1.0, 0).to_lists() == [[UNK_ID], [UNK_ID], [UNK_ID]]
    # Common random numbers: what survives a higher level survived every lower one.
    for low, high in zip(LEVELS, LEVELS[1:], strict=False):
        for a, b in zip(token_dropout(texts, low, 0).to_lists(),
                        token_dropout(texts, high, 0).to_lists(), strict=True):
            assert b == [UNK_ID] or set(b) <= set(a)


def test_token_dropout_share_on_many_tokens():
    many = Ragged.from_lists([[2, 3, 4, 5, 6, 7, 8, 9, 10, 11]] * 500)
    kept = len(token_dropout(many, 0.3, seed=1).values)
    assert kept == pytest.approx(3500, rel=0.05)


def test_token_replacement_pinned_never_itself_nor_special(texts):
    assert token_replacement(texts, 0.0, 0, vocab_size=10).to_lists() == texts.to_lists()
    assert token_replacement(texts, 0.3, 0, vocab_size=10).to_lists() == [[8, 3, 5], [6], [6, 4]]
    many = Ragged.from_lists([[2, 3, 9]] * 400)
    out = token_replacement(many, 1.0, 0, vocab_size=10)
    assert np.all(out.values != many.values)
    assert out.values.min() >= 2 and out.values.max() <= 9
    assert np.array_equal(out.offsets, many.offsets)
    changed = (token_replacement(many, 0.4, 0, 10).values != many.values).mean()
    assert changed == pytest.approx(0.4, abs=0.03)


def test_token_replacement_needs_two_words(texts):
    with pytest.raises(ValueError, match="at least 2 words"):
        token_replacement(texts, 0.5, 0, vocab_size=3)


def test_missing_rows_pinned_and_nested():
    assert missing_rows(10, 0.3, 0).tolist() == [False, False, False, True, True,
                                                 False, False, False, False, False]
    assert not missing_rows(10, 0.0, 0).any() and missing_rows(10, 1.0, 0).all()
    assert np.all(missing_rows(50, 0.5, 2) <= missing_rows(50, 0.7, 2))


@pytest.mark.parametrize("level", [-0.1, 1.5])
def test_level_outside_unit_interval_is_an_error(texts, images, level):
    with pytest.raises(ValueError, match="level must be in"):
        token_dropout(texts, level, 0)
    with pytest.raises(ValueError, match="level must be in"):
        occlusion(images, level, 0)


def test_images_must_be_four_dimensional():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        gaussian_noise(np.zeros((3, 64), dtype=np.float32), 0.1, 0)


# --- figures --------------------------------------------------------------------------------

def test_relative_robustness_is_area_under_the_curve():
    assert relative_robustness([1.0] * 11) == pytest.approx(1.0)
    linear = [1 - lv for lv in LEVELS]
    assert relative_robustness(linear) == pytest.approx(0.5)
    assert relative_robustness([0.9, 0.5, 0.1], levels=[0.0, 0.5, 1.0]) == pytest.approx(0.5)
    # MultiBench's helper: sum over i of (r[i] + r[i+1]) * 0.1 / 2
    curve = [0.95, 0.9, 0.88, 0.8, 0.7, 0.66, 0.5, 0.42, 0.3, 0.2, 0.1]
    expected = sum((curve[i] + curve[i + 1]) * 0.1 / 2 for i in range(10))
    assert relative_robustness(curve) == pytest.approx(expected)


def test_effective_robustness_against_a_reference():
    ref = [0.9, 0.8, 0.7]
    assert effective_robustness(ref, ref) == 0.0  # exactly: a table shows 0, not -2.2e-16
    curve = [0.93, 0.71, 0.42, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    assert effective_robustness(curve, curve) == 0.0
    # Same drop from a lower start: no difference once the start is equalised.
    assert effective_robustness([0.5, 0.4, 0.3], ref) == pytest.approx(0.0)
    # Keeps 0.1 and 0.2 more than the reference at levels 1 and 2.
    assert effective_robustness([0.9, 0.9, 0.9], ref) == pytest.approx(0.3)
    assert effective_robustness([0.8, 0.6, 0.4], ref) == pytest.approx(-0.3)


def test_curve_length_must_match_levels():
    with pytest.raises(ValueError, match="one value per level"):
        relative_robustness([0.9, 0.8])
    with pytest.raises(ValueError, match="one value per level"):
        effective_robustness([0.9, 0.8], [0.9, 0.8, 0.7])


def test_minmax_normalise():
    assert minmax_normalise({"a": 0.2, "b": 0.6, "c": 0.4}) == pytest.approx(
        {"a": 0.0, "b": 1.0, "c": 0.5})
    assert minmax_normalise({"a": 0.3, "b": 0.3}) == {"a": 0.0, "b": 0.0}

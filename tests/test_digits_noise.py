"""The built-in digits' image corruption (`data.image_noise`): seeded, the same on every read."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from mmcore.config import DataConfig, ImageNoise, load_config
from mmcore.data.digits import DigitsSource, corrupt_digits


def _images(source: DigitsSource) -> np.ndarray:
    table = pa.Table.from_batches(list(source.batches(500)))
    return np.stack(table.column("image").to_numpy(zero_copy_only=False)).astype(np.float32)


def _source(seed: int = 0, **noise: float) -> DigitsSource:
    return DigitsSource(DataConfig(image_noise=ImageNoise(**noise)), seed)


def test_no_noise_leaves_images_untouched():
    images = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    assert corrupt_digits(images, ImageNoise(gaussian=0, occlusion=0), seed=0) is images


def test_corruption_pinned_on_three_images():
    images = np.full((3, 8, 8), 0.5, dtype=np.float32)
    out = corrupt_digits(images, ImageNoise(gaussian=0.0, occlusion=0.25), seed=0)
    # One 4x4 patch per image, at a seeded place.
    assert (out == 0).sum(axis=(1, 2)).tolist() == [16, 16, 16]
    assert [np.argwhere(o == 0)[0].tolist() for o in out] == [[3, 0], [0, 4], [2, 1]]
    noisy = corrupt_digits(images, ImageNoise(gaussian=0.2, occlusion=0.0), seed=0)
    np.testing.assert_allclose(noisy[0, 0, :3], [0.4029, 0.6945, 0.4936], atol=1e-4)


def test_source_yields_the_same_corrupted_images_on_every_read():
    source = _source(gaussian=0.2, occlusion=0.2)
    first, second = _images(source), _images(source)
    assert np.array_equal(first, second)  # preprocessing reads the source twice
    assert np.array_equal(first, _images(_source(gaussian=0.2, occlusion=0.2)))
    clean = _images(_source(gaussian=0.0, occlusion=0.0))
    assert first.shape == clean.shape == (1797, 64)
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert not np.array_equal(first, clean)
    assert not np.array_equal(first, _images(_source(seed=1, gaussian=0.2, occlusion=0.2)))


def test_texts_do_not_change_with_image_noise():
    noisy, clean = _source(gaussian=0.3), _source(gaussian=0.0)
    texts = [pa.Table.from_batches(list(s.batches(2000))).column("text").to_pylist()
             for s in (noisy, clean)]
    assert texts[0] == texts[1]


def test_noise_settings_are_recorded_and_validated():
    source = _source(gaussian=0.2, occlusion=0.1)
    assert json.loads(source.info.extra["image_noise"]) == {"gaussian": 0.2, "occlusion": 0.1}
    with pytest.raises(ValueError, match="image_noise.gaussian"):
        load_config(overrides=["data.image_noise.gaussian=1.5"])
    with pytest.raises(ValueError, match="image_noise.blur"):
        load_config(overrides=["data.image_noise.blur=0.1"])

"""The built-in default dataset: scikit-learn's bundled handwritten digits with generated texts.

1,797 real 8x8 scans of 10 digit classes (UCI optdigits), shipped inside scikit-learn, so the
default pipeline needs no network. Clean, a small CNN reads them almost perfectly; the images
can be corrupted (`data.image_noise`: an occluding patch and pixel noise) so that neither
modality is near-perfect alone and a comparison of learning modes measures more than noise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from mmcore.config import DataConfig, ImageNoise
from mmcore.data.digit_texts import WORDS, generate_digit_texts
from mmcore.data.source import SourceInfo, raw_batch
from mmcore.robustness import gaussian_noise, occlusion

# Salt for the image-noise seed, so that the built-in corruption never draws the same numbers as
# a test-time corruption (mmcore.robustness) with the same seed.
_NOISE_STREAM = 0xD1617


def corrupt_digits(images: np.ndarray, noise: ImageNoise, seed: int) -> np.ndarray:
    """(N, 8, 8) images in [0, 1] -> the same images occluded, then noised, per `noise`."""
    if noise.occlusion == 0 and noise.gaussian == 0:
        return images
    derived = int(np.random.default_rng([seed, _NOISE_STREAM]).integers(2**31))
    out = occlusion(images[:, None], noise.occlusion, derived)
    return gaussian_noise(out, noise.gaussian, derived)[:, 0]


class DigitsSource:
    def __init__(self, cfg: DataConfig, seed: int):
        import sklearn
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = corrupt_digits(bunch.images.astype(np.float32) / 16.0, cfg.image_noise, seed)
        self._images = images.reshape(len(images), -1)
        self._labels = bunch.target.astype(np.int64)
        self._texts: list[str] | None = None
        if cfg.text != "none":
            noise = cfg.text_noise
            self._texts, _ = generate_digit_texts(
                self._labels, uninformative=noise.uninformative, ambiguous=noise.ambiguous,
                wrong=noise.wrong, seed=seed,
            )
        self.info = SourceInfo(
            name="digits",
            class_names=list(WORDS),
            image_shape=(1, 8, 8),
            has_text=self._texts is not None,
            extra={"sklearn": sklearn.__version__, "pixel_max": "16",
                   "image_noise": json.dumps(cfg.image_noise.model_dump(), sort_keys=True)},
        )

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        for start in range(0, len(self._labels), batch_rows):
            stop = min(start + batch_rows, len(self._labels))
            cols = {
                "id": [f"digits-{i:04d}" for i in range(start, stop)],
                "label": self._labels[start:stop],
                "image": list(self._images[start:stop]),
                "origin": [f"sklearn:load_digits:{i}" for i in range(start, stop)],
            }
            if self._texts is not None:
                cols["text"] = self._texts[start:stop]
            yield raw_batch(cols)

"""The built-in default dataset: scikit-learn's bundled handwritten digits with generated texts.

1,797 real 8x8 scans of 10 digit classes (UCI optdigits), shipped inside scikit-learn, so the
default pipeline needs no network.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from mmcore.config import DataConfig
from mmcore.data.digit_texts import WORDS, generate_digit_texts
from mmcore.data.source import SourceInfo, raw_batch


class DigitsSource:
    def __init__(self, cfg: DataConfig, seed: int):
        import sklearn
        from sklearn.datasets import load_digits

        bunch = load_digits()
        self._images = (bunch.images.astype(np.float32) / 16.0).reshape(len(bunch.images), -1)
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
            extra={"sklearn": sklearn.__version__, "pixel_max": "16"},
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

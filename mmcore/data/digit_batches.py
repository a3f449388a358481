"""The built-in digits as a stream of batches (`mmpipe data batches`), with an optional shift.

The 1,797 digits (with the built-in image corruption and generated texts of `data.digits`) are
shuffled with a seed and cut into N batch folders named by date, `2026-12-01`, `2026-12-02`, ...
Each holds a `manifest.csv` (id, label, image_path, text) and its images as 8-bit PNGs, a layout
the manifest source reads. From batch K on a shift can be injected, of size X:

- `noise`: Gaussian pixel noise of std X added (`mmcore.robustness.gaussian_noise`);
- `occlusion`: a patch hiding a share X of each image (`mmcore.robustness.occlusion`);
- `vocab`: a share X of the texts drawn from another vocabulary (Spanish descriptions);
- `balance`: rows of classes 5-9 dropped with probability X (a changed class balance).
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
from PIL import Image

from mmcore.config import DataConfig
from mmcore.data.digit_texts import generate_digit_texts
from mmcore.data.digits import corrupt_digits
from mmcore.robustness import gaussian_noise, occlusion

SHIFTS = ("noise", "occlusion", "vocab", "balance")
SPANISH = ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"]
SPANISH_TEMPLATES = ["un {w} escrito a mano", "el número {w}", "un {w} pequeño",
                     "la cifra {w}, trazada deprisa"]
FIRST_DAY = dt.date(2026, 12, 1)


def _shifted(images: np.ndarray, labels: np.ndarray, texts: list[str], shift: str, size: float,
             seed: int) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """One batch's rows with the shift applied; the last value: which rows are kept."""
    rng = np.random.default_rng([seed, 0x5F1F7])
    keep = np.ones(len(labels), dtype=bool)
    if shift == "noise":
        images = gaussian_noise(images[:, None], size, seed)[:, 0]
    elif shift == "occlusion":
        images = occlusion(images[:, None], size, seed)[:, 0]
    elif shift == "vocab":
        texts = [SPANISH_TEMPLATES[rng.integers(len(SPANISH_TEMPLATES))].format(
                     w=SPANISH[label]) if rng.random() < size else text
                 for label, text in zip(labels.tolist(), texts, strict=True)]
    elif shift == "balance":
        keep = ~((labels >= 5) & (rng.random(len(labels)) < size))
    return images, labels, texts, keep


def _write_batch(folder: Path, ids: list[str], images: np.ndarray, labels: np.ndarray,
                 texts: list[str]) -> None:
    (folder / "images").mkdir(parents=True)
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "image_path", "text"])
        for sample, image, label, text in zip(ids, images, labels.tolist(), texts, strict=True):
            name = f"images/{sample}.png"
            pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / name)
            writer.writerow([sample, label, name, text])


def _digits(seed: int, copies: int) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Ids, corrupted images, labels and generated texts of the digits, `copies` times (copy k
    drawn with seed `seed + 7919 k`: copy 0 is the built-in source's rows)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    cfg, n = DataConfig(), len(bunch.target)
    ids, images, texts = [], [], []
    for copy in range(copies):
        drawn = seed + 7919 * copy
        images.append(corrupt_digits(bunch.images.astype(np.float32) / 16.0, cfg.image_noise,
                                     drawn))
        texts += generate_digit_texts(bunch.target, uninformative=cfg.text_noise.uninformative,
                                      ambiguous=cfg.text_noise.ambiguous,
                                      wrong=cfg.text_noise.wrong, seed=drawn)[0]
        ids += [f"digits-{i:04d}" + (f"-c{copy}" if copy else "") for i in range(n)]
    labels = np.tile(bunch.target.astype(np.int64), copies)
    return ids, np.concatenate(images), labels, texts


def write_digit_batches(out: str | Path, batches: int, seed: int = 0,
                        shift_from: int | None = None, shift: str | None = None,
                        shift_size: float = 0.5, copies: int = 1) -> list[Path]:
    """Write `batches` batch folders of the built-in digits into `out` (which must not hold
    batches yet); from batch `shift_from` (1-based) on, `shift` of `shift_size`. `copies`: a
    larger stream, each digit that many times with its own image noise and text (ids
    `digits-0042`, `digits-0042-c1`, ...). Returns the folders in order."""
    if shift is not None and shift not in SHIFTS:
        raise ValueError(f"shift must be one of {SHIFTS}, not {shift!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: write batches into a new folder")
    ids, images, labels, texts = _digits(seed, copies)
    order = np.random.default_rng(seed).permutation(len(labels))
    folders = []
    for index, rows in enumerate(np.array_split(order, batches)):
        rows = np.sort(rows)
        b_images, b_labels = images[rows], labels[rows]
        b_texts = [texts[i] for i in rows]
        keep = np.ones(len(rows), dtype=bool)
        if shift is not None and shift_from is not None and index + 1 >= shift_from:
            b_images, b_labels, b_texts, keep = _shifted(b_images, b_labels, b_texts, shift,
                                                         shift_size, seed + index)
        folder = out / (FIRST_DAY + dt.timedelta(days=index)).isoformat()
        _write_batch(folder, [ids[i] for i in rows[keep]], b_images[keep],
                     b_labels[keep], [t for t, k in zip(b_texts, keep, strict=True) if k])
        folders.append(folder)
    return folders

"""Graceful fusion, small and seeded: shared embeddings in Parquet where the image is the strong
modality and the text the weak one, a blank image that encodes as a confident wrong class (as a
fully occluded digit does), and a destroyed image that is not blank (as a pure-noise one). With
the missing embedding, modality dropout, corruption augmentation and the confidence gates, every
operator with a blank or destroyed image stays within 2 points of the text alone; the control,
without them, falls far below it. An impostor image, destroyed but encoded as a clean image of
another class (as a text of random words is by a bag of words), is told apart only by the raw
input's evidence, which the gates read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from mmcore.config import TrainingConfig
from mmcore.fusion.fusion_classifier import BLANK, EVIDENCE, LEVEL
from mmcore.io.parquet import embedding_table, read_embeddings, write_table
from mmcore.modalities import MODALITIES
from mmcore.modalities.text import EVIDENCE_BUCKETS
from mmcore.stages.corruption_augment import add_evidence
from mmcore.stages.training import load_classifier, run_training

CLASSES, DIM, ROWS = 4, 8, 1200
GRACEFUL = {"missing_embedding": True, "modality_dropout": 0.3, "corruption_copies": 1,
            "confidence_gates": True}
OFF = {"missing_embedding": False, "modality_dropout": 0.0, "corruption_copies": 0,
       "confidence_gates": False}


def _shared(folder: Path, seed: int) -> dict[str, np.ndarray]:
    """shared_image/text.parquet: image = class centre + small noise, text = centre + large
    noise (about 70% right alone); returns the centres and the labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (CLASSES, DIM)).astype(np.float32)
    labels = rng.integers(CLASSES, size=ROWS)
    splits = np.array(["train"] * 800 + ["val"] * 150 + ["test"] * 250)
    ids = [f"r{i}" for i in range(ROWS)]
    noise = {"image": 0.3, "text": 1.1}
    for m, scale in noise.items():
        matrix = centres[labels] + rng.normal(0, scale, (ROWS, DIM)).astype(np.float32)
        write_table(folder / f"shared_{m}.parquet",
                    embedding_table(ids, splits, labels, matrix.astype(np.float32)))
    return {"centres": centres, "labels": labels, "splits": splits}


def _blank_like_occluded(centres: np.ndarray, n: int) -> np.ndarray:
    """What the image encoder makes of a blank image: a confident class 0."""
    return np.repeat(centres[:1] * 2.5, n, axis=0)


def _destroyed(rng: np.random.Generator, n: int) -> np.ndarray:
    """What the image encoder makes of a pure-noise image: not blank, far from every class."""
    return rng.normal(0, 2.0, (n, DIM)).astype(np.float32)


def _augment(centres: np.ndarray):
    """Corrupted copies (level 1): the image replaced by its blank encoding (flagged blank), or
    by a destroyed one (not flagged), on half the rows each."""
    def augment(shared, labels, copies, seed):
        rng = np.random.default_rng(seed)
        train = np.flatnonzero(shared["image"]["split"] == "train")
        rows = np.tile(train, copies)
        image = shared["image"]["embedding"][rows].copy()
        blank = rng.random(len(rows)) < 0.5
        image[blank] = _blank_like_occluded(centres, int(blank.sum()))
        image[~blank] = _destroyed(rng, int((~blank).sum()))
        return {"image": image, "text": shared["text"]["embedding"][rows],
                BLANK + "image": blank, BLANK + "text": np.zeros(len(rows), dtype=bool),
                LEVEL + "image": np.ones(len(rows), dtype=np.float32),
                LEVEL + "text": np.zeros(len(rows), dtype=np.float32), "label": labels[rows]}
    return augment


def _accuracy(model, inputs: dict[str, torch.Tensor], labels: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(inputs).argmax(1).numpy() == labels).mean())


def _impostors(centres: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """A destroyed image that the encoder makes a clean-looking image of a random class."""
    return (centres[rng.integers(CLASSES, size=n)]
            + rng.normal(0, 0.3, (n, DIM))).astype(np.float32)


def _evidence(rng: np.random.Generator, n: int, destroyed: bool) -> np.ndarray:
    """The raw input's evidence (`Modality.evidence`): one statistic, high on destroyed input."""
    return (rng.normal(0, 0.3, (n, 1)) + (3.0 if destroyed else 0.0)).astype(np.float32)


def _add_evidence(shared):
    """Every stored sample is intact."""
    for m, rows in shared.items():
        rows["evidence"] = _evidence(np.random.default_rng(len(m)), len(rows["id"]), False)


def _augment_impostors(centres: np.ndarray):
    """Corrupted copies (level 1): the image replaced by an impostor, with its evidence where
    the rows have evidence."""
    def augment(shared, labels, copies, seed):
        rng = np.random.default_rng(seed)
        rows = np.tile(np.flatnonzero(shared["image"]["split"] == "train"), copies)
        n = len(rows)
        evidence = ({EVIDENCE + "image": _evidence(rng, n, True),
                     EVIDENCE + "text": shared["text"]["evidence"][rows]}
                    if "evidence" in shared["text"] else {})
        return {"image": _impostors(centres, rng, n), "text": shared["text"]["embedding"][rows],
                BLANK + "image": np.zeros(n, dtype=bool), BLANK + "text": np.zeros(n, dtype=bool),
                LEVEL + "image": np.ones(n, dtype=np.float32),
                LEVEL + "text": np.zeros(n, dtype=np.float32), "label": labels[rows], **evidence}
    return augment


@pytest.mark.parametrize("fusion", ["late", "concat"])
def test_a_blank_image_falls_back_to_the_text(tmp_path, fusion):
    data = _shared(tmp_path, seed=0)
    test = data["splits"] == "test"
    truth = data["labels"][test]
    text = torch.from_numpy(read_embeddings(tmp_path / "shared_text.parquet")["embedding"][test])
    image = torch.from_numpy(read_embeddings(tmp_path / "shared_image.parquet")["embedding"][test])
    blank_image = torch.from_numpy(_blank_like_occluded(data["centres"], len(truth)))

    def trained(settings: dict, mode: str = "multimodal", name: str = "") -> torch.nn.Module:
        out = tmp_path / f"{fusion}-{mode}-{name}"
        out.mkdir()
        cfg = TrainingConfig(mode=mode, modality="text", fusion=fusion, epochs=15, **settings)
        run_training(tmp_path, ["image", "text"] if mode == "multimodal" else ["text"],
                     CLASSES, cfg, seed=0, out_dir=out, augment=_augment(data["centres"]))
        return load_classifier(out)[0]

    text_only = _accuracy(trained(OFF, "unimodal", "text"), {"text": text}, truth)
    graceful, control = trained(GRACEFUL, name="graceful"), trained(OFF, name="control")
    blanked = {"image": blank_image, "text": text,
               BLANK + "image": torch.ones(len(truth), dtype=bool)}
    clean = {"image": image, "text": text}

    destroyed = {"image": torch.from_numpy(_destroyed(np.random.default_rng(1), len(truth))),
                 "text": text}

    assert _accuracy(graceful, blanked, truth) >= text_only - 0.02
    assert _accuracy(graceful, {"text": text}, truth) >= text_only - 0.02  # image absent
    assert _accuracy(graceful, destroyed, truth) >= text_only - 0.02  # not blank: the gate
    assert _accuracy(control, blanked, truth) < text_only - 0.2  # trusts the blank image
    assert _accuracy(graceful, clean, truth) >= _accuracy(control, clean, truth) - 0.01
    # The gates, fitted on the copies' corruption levels, tell a destroyed image from a clean one
    with torch.no_grad():
        assert graceful.corruption(destroyed)["image"].mean() > 0.8
        assert graceful.corruption(clean)["image"].mean() < 0.1


def test_an_impostor_image_is_told_apart_by_its_evidence(tmp_path):
    data = _shared(tmp_path, seed=0)
    test = data["splits"] == "test"
    truth = data["labels"][test]
    text = torch.from_numpy(read_embeddings(tmp_path / "shared_text.parquet")["embedding"][test])
    rng = np.random.default_rng(1)
    impostor = {"image": torch.from_numpy(_impostors(data["centres"], rng, len(truth))),
                "text": text,
                EVIDENCE + "image": torch.from_numpy(_evidence(rng, len(truth), True)),
                EVIDENCE + "text": torch.from_numpy(_evidence(rng, len(truth), False))}

    def trained(name: str, mode: str = "multimodal", evidence=_add_evidence) -> torch.nn.Module:
        out = tmp_path / name
        out.mkdir()
        settings = GRACEFUL if mode == "multimodal" else OFF
        cfg = TrainingConfig(mode=mode, modality="text", fusion="concat", epochs=10, **settings)
        run_training(tmp_path, ["image", "text"] if mode == "multimodal" else ["text"],
                     CLASSES, cfg, seed=0, out_dir=out,
                     augment=_augment_impostors(data["centres"]), evidence=evidence)
        return load_classifier(out)[0]

    text_only = _accuracy(trained("text", "unimodal", None), {"text": text}, truth)
    graceful, blind = trained("evidence"), trained("embedding-only", evidence=None)
    assert _accuracy(graceful, impostor, truth) >= text_only - 0.02
    image = torch.from_numpy(read_embeddings(tmp_path / "shared_image.parquet")["embedding"][test])
    clean = {**impostor, "image": image,
             EVIDENCE + "image": torch.from_numpy(_evidence(rng, len(truth), False))}
    # Without evidence the gates cannot tell an impostor from a clean image, and the head,
    # taught that half the images lie, distrusts every one
    with torch.no_grad():
        told = blind.corruption(impostor)["image"].mean() - blind.corruption(clean)["image"].mean()
    assert abs(told) < 0.1
    assert _accuracy(blind, clean, truth) < _accuracy(graceful, clean, truth) - 0.03
    with torch.no_grad():
        assert graceful.corruption(impostor)["image"].mean() > 0.8
        assert graceful.corruption(clean)["image"].mean() < 0.2


def test_evidence_marks_words_and_noise():
    text, image = MODALITIES["text"], MODALITIES["image"]
    bag = text.evidence({"tokens": torch.tensor([[5, 7, 0, 0], [5, 5, 300, 0]])})
    assert bag.shape == (2, EVIDENCE_BUCKETS)
    assert bag[0].nonzero().flatten().tolist() == [5, 7]  # padding is no word
    assert bag[1].nonzero().flatten().tolist() == [5, 300 % EVIDENCE_BUCKETS]
    digit = torch.zeros(1, 1, 8, 8)
    digit[..., 2:6, 3:5] = 1.0  # ink on a background
    noise = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    noisy = (digit + noise).clamp(0, 1)
    of_clean, of_noisy = image.evidence({"image": torch.cat([digit, noisy])})
    assert of_clean[2] == 0 and of_noisy[2] > 0.15  # grey pixels
    assert of_noisy[3] > of_clean[3] and of_noisy[4] > of_clean[4]  # jumps between neighbours


def test_evidence_of_an_unknown_sample_names_it(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    for split in ("train", "val", "test"):
        table = pa.table({"id": [split], "label": [0],
                          "tokens": pa.array([[2, 3]], pa.list_(pa.int32()))})
        write_table(samples / f"{split}.parquet", table, {"vocab_size": 4})
    shared = {"text": {"id": np.array(["test", "b"])}}
    with pytest.raises(ValueError, match=r"samples: no stored sample for 1 text rows.*first: b"):
        add_evidence(samples, shared)

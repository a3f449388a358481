"""Every data source on small real-format files: rows, schema, labels, splits, pixels, and each
way a file or row can be bad (a DataError naming the file, or the right `problem` code)."""

from __future__ import annotations

import gzip
import os
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from data_factories import (
    IDX_NAMES,
    idx_bytes,
    random_pixels,
    write_bytes,
    write_idx_mnist,
    write_image,
    write_image_manifest,
    write_imdb,
    write_manifest,
)
from PIL import Image

from mmcore.config import DataConfig
from mmcore.data.generated_text import BLOCK, GeneratedTextSource, digit_of_class
from mmcore.data.imdb import ImdbSource, clean_review
from mmcore.data.manifest import ImageReadError, ManifestSource, resolve_image
from mmcore.data.mnist import MnistSource
from mmcore.data.pairing import PairedSource
from mmcore.data.source import RAW_SCHEMA, DataError
from mmcore.data.sources import open_source
from mmcore.data.validation import QualityReport, RowValidator, image_checks


def cfg(source: str, path: Path | str | None = None, **kw) -> DataConfig:
    return DataConfig(source=source, path=None if path is None else str(path), **kw)


def read_all(source, batch_rows: int = 4) -> pa.Table:
    """All rows of a source; checks the schema and the batch-size bound on the way."""
    batches = list(source.batches(batch_rows))
    for batch in batches:
        assert batch.schema == RAW_SCHEMA
        assert 0 < batch.num_rows <= batch_rows
    return pa.Table.from_batches(batches, schema=RAW_SCHEMA)


def images_of(table: pa.Table) -> np.ndarray:
    return np.array(table.column("image").to_pylist(), dtype=np.float32)


def problems(table: pa.Table) -> list[tuple[str | None, str | None]]:
    return list(zip(table.column("problem").to_pylist(),
                    table.column("problem_field").to_pylist(), strict=True))


# --- MNIST (IDX) -------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files_plain_and_gz(tmp_path, gz):
    written = write_idx_mnist(tmp_path, n_train=23, n_test=7, gz=gz, size=5, width=7, seed=1)
    source = MnistSource(cfg("mnist", tmp_path), seed=0)
    assert source.info.image_shape == (1, 5, 7)  # any H x W, not only 28 x 28
    assert source.info.class_names == [str(d) for d in range(10)]
    assert not source.info.has_text
    suffix = ".gz" if gz else ""
    assert [p.name for p in source.info.files] == [
        n + suffix for split in ("train", "test") for n in IDX_NAMES[split]]

    table = read_all(source, batch_rows=4)
    assert table.num_rows == 30
    ids = table.column("id").to_pylist()
    assert ids[:2] == ["train-00000", "train-00001"] and ids[-1] == "test-00006"
    assert Counter(table.column("split").to_pylist()) == {"train": 23, "test": 7}
    expected_images = np.concatenate([written[s][0] for s in ("train", "test")])
    expected_labels = np.concatenate([written[s][1] for s in ("train", "test")])
    assert table.column("label").to_pylist() == expected_labels.tolist()
    pixels = images_of(table)
    assert pixels.shape == (30, 35) and pixels.min() >= 0 and pixels.max() <= 1
    np.testing.assert_array_equal(pixels, expected_images.reshape(30, -1) / np.float32(255))
    assert table.column("origin")[0].as_py().endswith(f"train-images-idx3-ubyte{suffix}:0")
    assert table.column("problem").null_count == 30
    assert read_all(source, batch_rows=100).equals(table)  # re-iterable, batch size irrelevant


def test_mnist_prefers_the_plain_file_when_both_exist(tmp_path):
    write_idx_mnist(tmp_path, 4, 2, gz=True, size=4)
    write_idx_mnist(tmp_path, 4, 2, gz=False, size=4)
    assert not any(p.suffix == ".gz" for p in MnistSource(cfg("mnist", tmp_path), 0).info.files)


def test_mnist_class_names_follow_the_largest_label(tmp_path):
    write_idx_mnist(tmp_path, 6, 3, size=4, n_classes=3)
    assert MnistSource(cfg("mnist", tmp_path), 0).info.class_names == ["0", "1", "2"]


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_truncated_file_names_file_and_byte_counts(tmp_path, gz):
    write_idx_mnist(tmp_path, 10, 3, size=4)
    whole = idx_bytes(np.zeros((10, 4, 4), np.uint8))
    path = write_bytes(tmp_path / "train-images-idx3-ubyte", whole[:-5], gz=gz)
    if gz:
        (tmp_path / "train-images-idx3-ubyte").unlink()
    with pytest.raises(DataError) as err:
        MnistSource(cfg("mnist", tmp_path), 0)
    message = str(err.value)
    assert str(path) in message and "truncated" in message
    assert "176 bytes" in message and "found 171" in message  # 16 + 10*4*4 expected


def test_mnist_header_shorter_than_idx_header(tmp_path):
    write_idx_mnist(tmp_path, 4, 2, size=4)
    path = write_bytes(tmp_path / "t10k-labels-idx1-ubyte", b"\x00\x00\x08")
    with pytest.raises(DataError, match="truncated") as err:
        MnistSource(cfg("mnist", tmp_path), 0)
    assert str(path) in str(err.value)


def test_mnist_wrong_magic(tmp_path):
    write_idx_mnist(tmp_path, 4, 2, size=4)
    labels = idx_bytes(np.zeros(4, np.uint8))  # magic 2049 where images (2051) belong
    path = write_bytes(tmp_path / "train-images-idx3-ubyte", labels)
    with pytest.raises(DataError, match="bad magic number 2049, expected 2051") as err:
        MnistSource(cfg("mnist", tmp_path), 0)
    assert str(path) in str(err.value)


def test_mnist_count_mismatch_names_both_files(tmp_path):
    write_idx_mnist(tmp_path, 5, 2, size=4)
    labels = write_bytes(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DataError, match="2 images in .* but 3 labels in") as err:
        MnistSource(cfg("mnist", tmp_path), 0)
    assert str(tmp_path / "t10k-images-idx3-ubyte") in str(err.value)
    assert str(labels) in str(err.value)


@pytest.mark.parametrize("damage", ["flipped", "cut", "not_gzip"])
def test_mnist_corrupt_gzip_names_the_file(tmp_path, damage):
    write_idx_mnist(tmp_path, 30, 3, gz=True, size=8)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    if damage == "flipped":
        data[len(data) // 2: len(data) // 2 + 8] = bytes(8)
    elif damage == "cut":
        data = data[: len(data) - 40]
    else:
        data = bytearray(b"this is not gzip data at all")
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        MnistSource(cfg("mnist", tmp_path), 0)
    assert str(path) in str(err.value)


def test_mnist_missing_file_and_folder(tmp_path):
    write_idx_mnist(tmp_path, 4, 2, size=4)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match="missing t10k-images-idx3-ubyte"):
        MnistSource(cfg("mnist", tmp_path), 0)
    with pytest.raises(DataError, match="not a folder"):
        MnistSource(cfg("mnist", tmp_path / "nowhere"), 0)


def test_mnist_train_and_test_must_share_the_image_size(tmp_path):
    write_idx_mnist(tmp_path, 4, 2, size=4)
    write_bytes(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((2, 5, 5), np.uint8)))
    with pytest.raises(DataError, match="differ in size"):
        MnistSource(cfg("mnist", tmp_path), 0)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_streams_with_bounded_memory(tmp_path, gz):
    write_idx_mnist(tmp_path, 2000, 10, gz=gz, size=28)
    source = MnistSource(cfg("mnist", tmp_path), 0)
    all_float32 = 2010 * 784 * 4  # 6.3 MB if everything were held at once
    tracemalloc.start()
    try:
        rows = sum(batch.num_rows for batch in source.batches(100))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 2010
    assert peak < all_float32 / 5


# --- IMDB (aclImdb layout) ---------------------------------------------------------------------


@pytest.mark.parametrize("point_at", ["parent", "aclImdb"])
def test_imdb_reads_the_aclimdb_layout(tmp_path, point_at):
    root = write_imdb(tmp_path, per_class=2, seed=3)
    source = ImdbSource(cfg("imdb", tmp_path if point_at == "parent" else root), 0)
    assert source.info.class_names == ["neg", "pos"]
    assert source.info.image_shape is None and source.info.has_text
    table = read_all(source, batch_rows=3)
    assert table.num_rows == 8
    assert table.column("id").to_pylist() == [
        "train-neg-0_1", "train-neg-1_1", "train-pos-0_10", "train-pos-1_7",
        "test-neg-0_4", "test-neg-1_3", "test-pos-0_7", "test-pos-1_10"]
    assert table.column("label").to_pylist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert table.column("split").to_pylist() == ["train"] * 4 + ["test"] * 4
    assert table.column("text")[0].as_py() == "A awful film, number 0.\n\nWatched in train."
    assert table.column("origin")[0].as_py() == str(root / "train/neg/0_1.txt")
    assert source.ratings()["test-pos-1_10"] == 10 and len(source.ratings()) == 8
    assert table.column("problem").null_count == 8


def test_imdb_cleans_line_breaks_and_html_entities(tmp_path):
    text = "Great<br />film<BR>really<br/>good &amp; &quot;fun&quot; &#39;x&#39; &lt;3"
    assert clean_review(text) == "Great\nfilm\nreally\ngood & \"fun\" 'x' <3"
    write_imdb(tmp_path, {"train/pos/1_8.txt": text, "test/neg/2_1.txt": "Bad.<br /  >End"})
    texts = read_all(ImdbSource(cfg("imdb", tmp_path), 0)).column("text").to_pylist()
    assert texts == ["Great\nfilm\nreally\ngood & \"fun\" 'x' <3", "Bad.\nEnd"]


def _undecodable_imdb(tmp_path: Path) -> None:
    write_imdb(tmp_path, {
        "train/pos/1_8.txt": b"caf\xc3\xa9 ok",  # valid UTF-8
        "train/neg/2_2.txt": b"bad \xff\xfe bytes",
        "test/pos/3_9.txt": "fine",
        "test/neg/4_1.txt": b"\xe9t\xe9",
    })


def test_imdb_undecodable_bytes_replaced_and_counted(tmp_path):
    _undecodable_imdb(tmp_path)
    source = ImdbSource(cfg("imdb", tmp_path, encoding_errors="replace"), 0)
    table = read_all(source)
    assert table.column("text").to_pylist() == [
        "bad \ufffd\ufffd bytes", "café ok", "\ufffdt\ufffd", "fine"]
    assert table.column("problem").null_count == 4
    assert source.replaced_count == 2
    read_all(source)
    assert source.replaced_count == 2  # counted per pass, not accumulated


def test_imdb_undecodable_bytes_fail_marks_the_row(tmp_path):
    _undecodable_imdb(tmp_path)
    table = read_all(ImdbSource(cfg("imdb", tmp_path, encoding_errors="fail"), 0))
    assert problems(table) == [("undecodable_text", "text"), (None, None),
                               ("undecodable_text", "text"), (None, None)]
    assert table.column("text").to_pylist()[1] == "café ok"


def test_imdb_bad_filename_and_unreadable_file(tmp_path):
    root = write_imdb(tmp_path, {"train/pos/1_8.txt": "ok", "train/pos/notes.txt": "x",
                                 "test/neg/.DS_Store": "hidden files are not reviews"})
    os.symlink(tmp_path / "gone.txt", root / "test/pos/5_7.txt")  # dangling: OSError on read
    table = read_all(ImdbSource(cfg("imdb", tmp_path), 0))
    by_id = dict(zip(table.column("id").to_pylist(), problems(table), strict=True))
    assert by_id == {"train-pos-notes": ("bad_filename", "id"), "train-pos-1_8": (None, None),
                     "test-pos-5_7": ("unreadable_file", "text")}


def test_imdb_missing_split_folder_or_no_reviews(tmp_path):
    root = write_imdb(tmp_path, {})
    with pytest.raises(DataError, match="no review files") as err:
        ImdbSource(cfg("imdb", tmp_path), 0)
    assert str(root) in str(err.value)
    (root / "test/pos").rmdir()
    with pytest.raises(DataError, match="missing folder test/pos") as err:
        ImdbSource(cfg("imdb", tmp_path), 0)
    assert str(root / "test/pos") in str(err.value)
    with pytest.raises(DataError, match="data.text=none"):
        ImdbSource(cfg("imdb", tmp_path, text="none"), 0)


# --- Manifest (CSV / Parquet + image files) ----------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_manifest_reads_csv_and_parquet(tmp_path, fmt):
    path, rows = write_image_manifest(tmp_path, 5, fmt=fmt, size=6, seed=10)
    source = ManifestSource(cfg("manifest", path), 0)
    assert source.info.class_names == ["cat", "dog"]
    assert source.info.image_shape == (1, 6, 6) and source.info.has_text
    assert source.info.files == [path]
    table = read_all(source, batch_rows=2)
    assert table.column("id").to_pylist() == ["m0", "m1", "m2", "m3", "m4"]
    assert table.column("label").to_pylist() == [0, 1, 0, 1, 0]
    assert table.column("text")[1].as_py() == "a photo of a dog"
    assert table.column("split").null_count == 5
    assert table.column("origin").to_pylist()[:2] == [f"{path}:1", f"{path}:2"]
    expected = np.stack([random_pixels(10 + i, 6).reshape(-1) for i in range(5)]) / 255
    np.testing.assert_array_equal(images_of(table), expected.astype(np.float32))
    assert table.column("problem").null_count == 5


def test_manifest_rgb_and_grey_images(tmp_path):
    rgb = random_pixels(1, size=4, rgb=True)
    grey = random_pixels(2, size=4)
    write_image(tmp_path / "rgb.png", rgb)
    write_image(tmp_path / "grey.jpg", np.full((4, 4), 200, np.uint8))  # JPEG too
    write_image(tmp_path / "grey.png", grey)
    path = write_manifest(tmp_path, [
        {"id": "a", "label": 0, "image_path": "rgb.png"},
        {"id": "b", "label": 1, "image_path": "grey.png"},
        {"id": "c", "label": 1, "image_path": "grey.jpg"},
    ])
    as_rgb = ManifestSource(cfg("manifest", path, image_mode="RGB"), 0)
    assert as_rgb.info.image_shape == (3, 4, 4)
    pixels = images_of(read_all(as_rgb)).reshape(3, 3, 4, 4)
    np.testing.assert_array_equal(pixels[0], rgb.transpose(2, 0, 1) / np.float32(255))
    for channel in range(3):  # grey -> RGB repeats the grey channel
        np.testing.assert_array_equal(pixels[1, channel], grey / np.float32(255))
    assert np.abs(pixels[2] - 200 / 255).max() < 0.02  # JPEG is lossy

    as_grey = ManifestSource(cfg("manifest", path, image_mode="L"), 0)
    assert as_grey.info.image_shape == (1, 4, 4)
    luminance = np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255
    np.testing.assert_array_equal(images_of(read_all(as_grey))[0], luminance.reshape(-1))


def test_manifest_resizes_to_image_size(tmp_path):
    big = random_pixels(3, size=10)
    write_image(tmp_path / "big.png", big)
    write_image(tmp_path / "wide.png", np.zeros((4, 9), np.uint8))
    path = write_manifest(tmp_path, [{"id": "a", "label": 0, "image_path": "big.png"},
                                     {"id": "b", "label": 0, "image_path": "wide.png"}])
    source = ManifestSource(cfg("manifest", path, image_size=5), 0)
    assert source.info.image_shape == (1, 5, 5)
    pixels = images_of(read_all(source))
    expected = np.asarray(Image.fromarray(big).resize((5, 5), Image.Resampling.BILINEAR),
                          np.float32) / 255
    np.testing.assert_array_equal(pixels[0], expected.reshape(-1))
    assert pixels.shape == (2, 25)


def test_manifest_first_readable_image_fixes_the_shape(tmp_path):
    write_image(tmp_path / "a.png", random_pixels(0, size=6))
    write_image(tmp_path / "b.png", random_pixels(1, size=8))
    path = write_manifest(tmp_path, [
        {"id": "x", "label": 0, "image_path": "missing.png"},
        {"id": "a", "label": 0, "image_path": "a.png"},
        {"id": "b", "label": 1, "image_path": "b.png"},
    ])
    source = ManifestSource(cfg("manifest", path), 0)
    assert source.info.image_shape == (1, 6, 6)
    batch = next(source.batches(10))
    assert [len(v) if v else None for v in batch.column("image").to_pylist()] == [None, 36, 64]
    report = QualityReport("manifest")
    keep = RowValidator(source.info, report, "skip").check(
        batch, image_checks(batch.column("image"), source.info))
    assert keep.tolist() == [False, True, False]
    assert report.rejected == {"missing_image_file": 1, "wrong_image_size": 1}


def test_manifest_image_paths_must_stay_in_the_manifest_folder(tmp_path):
    data = tmp_path / "data"
    write_image(data / "img/ok.png", random_pixels(0, 4))
    write_image(tmp_path / "outside.png", random_pixels(1, 4))
    os.symlink(tmp_path / "outside.png", data / "link_out.png")
    os.symlink(data / "img/ok.png", data / "link_in.png")
    path = write_manifest(data, [
        {"id": "ok", "label": 0, "image_path": "img/ok.png"},
        {"id": "abs", "label": 0, "image_path": str(data / "img/ok.png")},
        {"id": "dotdot", "label": 0, "image_path": "../outside.png"},
        {"id": "link_out", "label": 0, "image_path": "link_out.png"},
        {"id": "link_in", "label": 0, "image_path": "link_in.png"},
        {"id": "inner_dotdot", "label": 0, "image_path": "img/../img/ok.png"},
    ])
    table = read_all(ManifestSource(cfg("manifest", path), 0))
    escape = ("path_escapes_manifest_folder", "image_path")
    assert problems(table) == [(None, None), escape, escape, escape, (None, None), (None, None)]
    assert table.column("image").null_count == 3
    with pytest.raises(ImageReadError, match="missing_image_file"):
        resolve_image(data.resolve(), "img/bad\x00name.png")


def test_manifest_missing_and_corrupt_images(tmp_path):
    write_image(tmp_path / "ok.png", random_pixels(0, 16))
    png = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG not really an image")
    path = write_manifest(tmp_path, [
        {"id": "ok", "label": 0, "image_path": "ok.png"},
        {"id": "gone", "label": 0, "image_path": "gone.png"},
        {"id": "cut", "label": 0, "image_path": "truncated.png"},
        {"id": "junk", "label": 0, "image_path": "garbage.png"},
        {"id": "empty", "label": 0, "image_path": None},
    ])
    table = read_all(ManifestSource(cfg("manifest", path), 0))
    assert problems(table) == [(None, None), ("missing_image_file", "image_path"),
                               ("corrupt_image", "image_path"), ("corrupt_image", "image_path"),
                               (None, None)]  # an empty cell is a missing image: validation's
    assert table.column("image").null_count == 4


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_manifest_labels_names_indices_and_missing(tmp_path, fmt):
    rows = [{"id": f"r{i}", "label": label, "text": "t"}
            for i, label in enumerate(["dog", "1", "", "bird", "7", "cat"])]
    path = write_manifest(tmp_path, rows, fmt=fmt)
    declared = ManifestSource(cfg("manifest", path, classes=["cat", "dog"]), 0)
    assert declared.info.class_names == ["cat", "dog"]
    table = read_all(declared)
    assert table.column("label").to_pylist() == [1, 1, None, None, 7, 0]
    assert problems(table)[3] == ("unknown_class", "label")
    assert [p for p, _ in problems(table)].count(None) == 5

    inferred = ManifestSource(cfg("manifest", path), 0)
    assert inferred.info.class_names == ["1", "7", "bird", "cat", "dog"]  # sorted unique

    numeric = write_manifest(tmp_path, [{"id": "a", "label": 2, "text": "t"},
                                        {"id": "b", "label": 0, "text": "t"}], fmt=fmt,
                             name="numeric")
    source = ManifestSource(cfg("manifest", numeric), 0)
    assert source.info.class_names == ["0", "1", "2"]
    assert read_all(source).column("label").to_pylist() == [2, 0]


@pytest.mark.parametrize("missing", ["id", "label"])
def test_manifest_missing_required_column(tmp_path, missing):
    row = {"id": "a", "label": "cat", "text": "hello"}
    del row[missing]
    path = write_manifest(tmp_path, [row])
    with pytest.raises(DataError, match=f"missing required column '{missing}'") as err:
        ManifestSource(cfg("manifest", path), 0)
    assert str(path) in str(err.value)


def test_manifest_single_modality_and_splits(tmp_path):
    rows = [{"id": "a", "label": "x", "split": "train", "text": "first"},
            {"id": "b", "label": "y", "split": "test", "text": ""}]
    path = write_manifest(tmp_path, rows)
    source = ManifestSource(cfg("manifest", path), 0)
    assert source.info.modalities == ("text",)
    table = read_all(source)
    assert table.column("split").to_pylist() == ["train", "test"]
    assert table.column("text").to_pylist() == ["first", ""]  # validation counts empty texts
    assert table.column("image").null_count == 2
    with pytest.raises(DataError, match="no modality"):
        ManifestSource(cfg("manifest", path, text="none"), 0)

    image_only, _ = write_image_manifest(tmp_path / "img_only", 2, with_text=False)
    assert ManifestSource(cfg("manifest", image_only), 0).info.modalities == ("image",)


def test_manifest_bad_files(tmp_path):
    with pytest.raises(DataError, match="manifest file not found"):
        ManifestSource(cfg("manifest", tmp_path / "none.csv"), 0)
    header_only = tmp_path / "empty.csv"
    header_only.write_text("id,label,text\n")
    with pytest.raises(DataError, match="no rows") as err:
        ManifestSource(cfg("manifest", header_only), 0)
    assert str(header_only) in str(err.value)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not parquet")
    with pytest.raises(DataError, match="cannot read") as err:
        ManifestSource(cfg("manifest", broken), 0)
    assert str(broken) in str(err.value)


# --- Pairing by class --------------------------------------------------------------------------


def _pair_data(tmp_path: Path) -> tuple[Path, Path]:
    """40+10 digit images; texts for classes 0-8 only (class k has k % 3 + 1 texts)."""
    write_idx_mnist(tmp_path / "mnist", 40, 10, size=4, seed=5)
    rows = [{"id": f"t{k}_{j}", "label": k, "text": f"text {j} of class {k}"}
            for k in range(9) for j in range(k % 3 + 1)]
    rows.append({"id": "bad", "label": 3, "text": ""})  # rejected on the text side
    return tmp_path / "mnist", write_manifest(tmp_path / "texts", rows)


def paired_cfg(images: Path, texts: Path, label_map=None, texts_source="manifest",
               **kw) -> DataConfig:
    pair = {"images": {"source": "mnist", "path": str(images)},
            "texts": {"source": texts_source, "path": str(texts)}, "label_map": label_map}
    return DataConfig(source="paired", pair=pair, **kw)


def test_pairing_by_class_with_round_robin_and_missing_classes(tmp_path):
    images, texts = _pair_data(tmp_path)
    source = open_source(paired_cfg(images, texts), seed=0)
    assert isinstance(source, PairedSource)
    assert source.info.modalities == ("image", "text")
    assert source.info.class_names == [str(d) for d in range(10)]
    assert source.info.extra["pixel_max"] == "255"
    assert source.text_report.rejected == {"empty_text": 1}
    table = read_all(source, batch_rows=7)
    assert table.num_rows == 50
    labels = table.column("label").to_pylist()
    used = Counter()
    for row_id, label, text, problem in zip(table.column("id").to_pylist(), labels,
                                            table.column("text").to_pylist(),
                                            table.column("problem").to_pylist(), strict=True):
        if label == 9:
            assert problem == "no_pair_for_class" and text is None and "|" not in row_id
            continue
        image_id, text_id = row_id.split("|")
        assert image_id.startswith(("train-", "test-")) and problem is None
        assert text_id.startswith(f"t{label}_") and text.endswith(f"of class {label}")
        used[text_id] += 1
    for k in range(9):  # every text of a class used, evenly (round-robin)
        counts = [used[f"t{k}_{j}"] for j in range(k % 3 + 1)]
        assert max(counts) - min(counts) <= 1 and min(counts) >= 1
    assert table.column("problem_field").to_pylist()[labels.index(9)] == "text"
    assert table.column("split").to_pylist() == ["train"] * 40 + ["test"] * 10


def test_pairing_is_reproducible_per_seed_and_independent_of_batch_rows(tmp_path):
    images, texts = _pair_data(tmp_path)
    ids = {seed: [read_all(PairedSource(paired_cfg(images, texts), seed), rows)
                  .column("id").to_pylist() for rows in (3, 64)] for seed in (0, 1)}
    assert ids[0][0] == ids[0][1] and ids[1][0] == ids[1][1]
    assert ids[0][0] != ids[1][0]
    assert ids[0][0][:3] == ["train-00000|t3_0", "train-00001|t5_0", "train-00002|t7_0"]


def test_pairing_maps_labels_and_keeps_splits_apart(tmp_path):
    written = write_idx_mnist(tmp_path / "mnist", 30, 10, size=4, seed=2)
    write_imdb(tmp_path, per_class=3, seed=4)
    source = PairedSource(paired_cfg(tmp_path / "mnist", tmp_path, label_map={0: 3, 1: 8},
                                     texts_source="imdb"), 0)
    assert source.split_aware
    assert source.info.class_names == ["3", "8"]  # the mapped image classes, renumbered
    table = read_all(source, batch_rows=16)
    labels = np.concatenate([written["train"][1], written["test"][1]])
    assert table.num_rows == int(np.isin(labels, [3, 8]).sum())
    assert source.info.extra["image_rows_outside_label_map"] == str(
        int((~np.isin(labels, [3, 8])).sum()))
    for row_id, label, split in zip(table.column("id").to_pylist(),
                                    table.column("label").to_pylist(),
                                    table.column("split").to_pylist(), strict=True):
        text_split, text_class, _ = row_id.split("|")[1].split("-")
        assert text_split == split and text_class == {0: "neg", 1: "pos"}[label]
    with pytest.raises(DataError, match="label_map 1 -> 10"):
        PairedSource(paired_cfg(tmp_path / "mnist", tmp_path, label_map={1: 10},
                                texts_source="imdb"), 0)


def test_pairing_sides_must_have_their_modality(tmp_path):
    images, texts = _pair_data(tmp_path)
    imdb_images = DataConfig(source="paired", pair={
        "images": {"source": "imdb", "path": str(texts)},
        "texts": {"source": "manifest", "path": str(texts)}})
    with pytest.raises(DataError, match="has no images"):
        PairedSource(imdb_images, 0)
    text_manifest_images = imdb_images.model_copy(update={"pair": imdb_images.pair.model_copy(
        update={"images": imdb_images.pair.texts})})
    with pytest.raises(DataError, match="no modality") as err:  # texts ignored on this side
        PairedSource(text_manifest_images, 0)
    assert str(texts) in str(err.value)
    no_texts = DataConfig(source="paired", pair={
        "images": {"source": "mnist", "path": str(images)},
        "texts": {"source": "mnist", "path": str(images)}})
    with pytest.raises(DataError, match="has no texts"):
        PairedSource(no_texts, 0)


# --- Generated texts ---------------------------------------------------------------------------


def test_generated_texts_reproducible_across_batch_rows(tmp_path):
    write_idx_mnist(tmp_path, BLOCK + 77, 5, size=4, seed=9)  # crosses a block boundary
    source = open_source(cfg("mnist", tmp_path, text="generated"), seed=0)
    assert isinstance(source, GeneratedTextSource)
    assert source.info.modalities == ("image", "text")
    assert source.info.extra["pixel_max"] == "255"
    runs = [read_all(source, rows) for rows in (5, 300, BLOCK, 3000)]
    for other in runs[1:]:
        assert other.equals(runs[0])
    texts = runs[0].column("text").to_pylist()
    assert runs[0].column("label").to_pylist()[:3] == [4, 3, 6]
    assert texts[:3] == ["a handwritten number", "a handwritten three", "a bold 6"]
    assert runs[0].column("image").equals(read_all(MnistSource(cfg("mnist", tmp_path), 0),
                                                   64).column("image"))
    other_seed = read_all(open_source(cfg("mnist", tmp_path, text="generated"), seed=1), 64)
    assert other_seed.column("text").to_pylist() != texts


def test_generated_texts_need_digit_classes(tmp_path):
    assert digit_of_class(["3", "5"]).tolist() == [3, 5]
    assert digit_of_class(["zero", "one", "two"]).tolist() == [0, 1, 2]
    path, _ = write_image_manifest(tmp_path, 2, with_text=False)
    with pytest.raises(DataError, match="needs digit classes"):
        open_source(cfg("manifest", path, text="generated"), 0)


def test_generated_texts_refuse_a_source_that_has_texts(tmp_path):
    path, _ = write_image_manifest(tmp_path, 2, classes=("0", "1"))
    with pytest.raises(DataError, match="already has texts"):
        GeneratedTextSource(ManifestSource(cfg("manifest", path), 0),
                            cfg("manifest", path, text="generated"), 0)


def test_gzip_factory_writes_real_gzip(tmp_path):
    path = write_bytes(tmp_path / "x", b"abc", gz=True)
    assert path.name == "x.gz" and gzip.decompress(path.read_bytes()) == b"abc"

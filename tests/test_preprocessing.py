"""mmcore.stages.preprocessing: validate, split, normalise and tokenise a source into Parquet.

Runs the built-in digits source (as the pipeline does: `open_source(load_config().data, seed)`)
and small in-memory sources that implement the `Source` protocol.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmcore.config import load_config
from mmcore.data.digit_texts import WORDS
from mmcore.data.source import DataError, Source, SourceInfo, raw_batch
from mmcore.data.sources import open_source
from mmcore.data.tokenizer import PAD, UNK, TextEncoding, Vocabulary, split_words
from mmcore.io.parquet import read_metadata, to_matrix
from mmcore.stages.preprocessing import SPLIT_CODE, assign_splits, run_preprocessing

SPLITS = ("train", "val", "test")
META = {"stage": "preprocessing", "key": "test-key"}


# ---------------------------------------------------------------------------------------------
# an in-memory source


class ListSource:
    """A tiny `Source`: rows are dicts with RAW_SCHEMA keys; missing keys are null."""

    def __init__(self, rows: list[dict], class_names=("cat", "dog"), image_shape=(1, 2, 2),
                 has_text: bool = True):
        self.rows = rows
        self.info = SourceInfo(name="list", class_names=list(class_names),
                               image_shape=image_shape, has_text=has_text)

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        for start in range(0, len(self.rows), batch_rows):
            chunk = self.rows[start:start + batch_rows]
            yield raw_batch({name: [row.get(name) for row in chunk] for name in
                             ("id", "label", "split", "image", "text", "origin")})


def _good_rows(n: int = 40, seed: int = 0, split=None) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        rows.append({
            "id": f"r{i:03d}", "label": label, "split": split,
            "image": (rng.random(4) * 0.5 + 0.5 * label).astype(np.float32).tolist(),
            "text": f"a {'dog' if label else 'cat'} picture number {i % 3}",
            "origin": f"data/raw.csv:{i}",
        })
    return rows


def _cfg(*overrides: str):
    return load_config(overrides=["data.batch_rows=8", *overrides]).data


def _read(out: Path, split: str) -> pa.Table:
    return pq.read_table(out / f"{split}.parquet")


def _all_ids(out: Path) -> list[str]:
    return [i for s in SPLITS for i in _read(out, s).column("id").to_pylist()]


# ---------------------------------------------------------------------------------------------
# the built-in digits, end to end


def _run_digits(out: Path, *overrides: str) -> dict:
    cfg = load_config(overrides=list(overrides))
    source = open_source(cfg.data, cfg.seed)
    return run_preprocessing(source, cfg.data, cfg.seed, out, dict(META))


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("digits")
    return out, _run_digits(out)


def test_digits_writes_documented_files(digits):
    out, quality = digits
    assert sorted(p.name for p in out.iterdir()) == [
        "quality.json", "test.parquet", "train.parquet", "val.parquet", "vocab.parquet"]
    assert json.loads((out / "quality.json").read_text()) == quality


def test_digits_schema(digits):
    out, _ = digits
    expected = pa.schema([
        ("id", pa.string()), ("label", pa.int64()), ("split", pa.string()),
        ("image", pa.list_(pa.float32(), 64)), ("text", pa.string()),
        ("tokens", pa.list_(pa.int32())),
    ])
    for split in SPLITS:
        schema = pq.read_schema(out / f"{split}.parquet")
        assert schema.remove_metadata().equals(expected), split
        table = _read(out, split)
        assert set(table.column("split").to_pylist()) == {split}
        assert table.column("id").null_count == 0
        assert table.column("text").null_count == 0


def test_digits_schema_metadata(digits):
    out, _ = digits
    for split in SPLITS:
        meta = read_metadata(out / f"{split}.parquet")
        assert meta["stage"] == "preprocessing" and meta["key"] == "test-key"
        assert meta["split"] == split
        assert meta["class_names"] == WORDS
        assert meta["image_shape"] == [1, 8, 8]
        assert len(meta["image_mean"]) == len(meta["image_std"]) == 1
        # the default digits: occluded and noised (data.image_noise), seed 0
        assert meta["image_mean"][0] == pytest.approx(0.2748, abs=1e-3)
        assert meta["image_std"][0] == pytest.approx(0.3317, abs=1e-3)
        assert meta["pixel_max"] == 16.0
        assert meta["modalities"] == ["image", "text"]
        assert meta["max_text_tokens"] == 64 and meta["lowercase"] is True  # auto: the floor
    assert meta["vocab_size"] == pq.read_metadata(out / "vocab.parquet").num_rows


def test_digits_quality_report(digits):
    out, quality = digits
    assert quality["source"] == "digits"
    assert quality["rows_in"] == 1797
    assert quality["rows_in"] == quality["rows_kept"] + quality["rows_rejected"]
    assert quality["rows_rejected"] == 0 and quality["rejected"] == {}
    assert quality["splits"] == {s: _read(out, s).num_rows for s in SPLITS}
    assert quality["splits"] == {"train": 1169, "val": 269, "test": 359}
    assert sorted(_all_ids(out)) == [f"digits-{i:04d}" for i in range(1797)]


def test_digits_split_is_stratified(digits):
    out, quality = digits
    per_split = {s: Counter(_read(out, s).column("label").to_pylist()) for s in SPLITS}
    totals = sum(per_split.values(), Counter())
    for label in range(10):
        n = totals[label]
        assert per_split["test"][label] == int(round(0.20 * n))
        assert per_split["val"][label] == int(round(0.15 * n))
        assert all(per_split[s][label] > 0 for s in SPLITS)
        for s in SPLITS:
            assert quality["classes"][s][WORDS[label]] == per_split[s][label]


def test_digits_images_are_stored_on_the_unit_scale_with_train_statistics(digits):
    """Pixels are stored as the source gives them (0-1); the train split's mean and std go into
    the metadata, and the model's first layer standardises with them."""
    import torch

    from mmcore.modalities.image import Standardize

    out, _ = digits
    train = to_matrix(_read(out, "train").column("image"))
    assert train.shape == (1169, 64) and train.dtype == np.float32
    assert 0.0 <= float(train.min()) and float(train.max()) <= 1.0
    meta = read_metadata(out / "train.parquet")
    assert meta["image_mean"][0] == pytest.approx(float(train.mean()), abs=1e-4)
    assert meta["image_std"][0] == pytest.approx(float(train.std()), abs=1e-4)
    from sklearn.datasets import load_digits

    from mmcore.data.digits import corrupt_digits

    raw = corrupt_digits(load_digits().images / 16.0, load_config().data.image_noise, 0)
    raw = raw.reshape(-1, 64)
    table = _read(out, "train")
    row = int(table.column("id")[0].as_py().split("-")[1])
    np.testing.assert_allclose(train[0], raw[row], atol=1e-6)
    standardised = Standardize(meta["image_mean"], meta["image_std"])(
        {"image": torch.from_numpy(train.reshape(-1, 1, 8, 8).copy())})["image"]
    assert float(standardised.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(standardised.std()) == pytest.approx(1.0, abs=1e-3)


def test_digits_vocabulary_and_tokens(digits):
    out, _ = digits
    vocab_table = pq.read_table(out / "vocab.parquet")
    tokens = vocab_table.column("token").to_pylist()
    assert tokens[:2] == [PAD, UNK]
    assert vocab_table.column("index").to_pylist() == list(range(len(tokens)))
    assert vocab_table.schema.field("index").type == pa.int32()
    counts = vocab_table.column("count").to_pylist()
    assert counts[:2] == [0, 0]
    assert counts[2:] == sorted(counts[2:], reverse=True)
    # counts come from the train texts only
    train_words = Counter(w for t in _read(out, "train").column("text").to_pylist()
                          for w in split_words(t))
    assert dict(zip(tokens[2:], counts[2:], strict=True)) == dict(train_words)
    vocab = Vocabulary(tokens[2:])
    for split in SPLITS:
        table = _read(out, split)
        for text, ids in zip(table.column("text").to_pylist(),
                             table.column("tokens").to_pylist(), strict=True):
            assert ids == vocab.encode(split_words(text)[:32])
    assert 1 not in {i for ids in _read(out, "train").column("tokens").to_pylist() for i in ids}


def test_digits_same_seed_gives_identical_files(digits, tmp_path):
    out, quality = digits
    again = _run_digits(tmp_path / "again")
    assert again == quality
    for name in ("train.parquet", "val.parquet", "test.parquet", "vocab.parquet"):
        a, b = pq.read_table(out / name), pq.read_table(tmp_path / "again" / name)
        assert a.equals(b, check_metadata=True), name
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_digits_other_seed_gives_other_split(digits, tmp_path):
    out, _ = digits
    _run_digits(tmp_path / "seed1", "seed=1")
    assert (set(_read(out, "test").column("id").to_pylist())
            != set(_read(tmp_path / "seed1", "test").column("id").to_pylist()))


def test_digits_limit(tmp_path):
    quality = _run_digits(tmp_path, "data.limit=300", "data.batch_rows=64")
    assert quality["rows_in"] == 300
    assert sorted(_all_ids(tmp_path)) == [f"digits-{i:04d}" for i in range(300)]


# ---------------------------------------------------------------------------------------------
# assign_splits


def test_assign_splits_stratified_and_seeded():
    labels = np.repeat([0, 1, 2], [20, 40, 10])
    given = np.full(len(labels), SPLIT_CODE[None], dtype=np.int8)
    split = assign_splits(labels, given, val=0.15, test=0.2, seed=0)
    assert split.dtype == np.int8
    for label, n in ((0, 20), (1, 40), (2, 10)):
        rows = split[labels == label]
        assert (rows == 2).sum() == round(0.2 * n)
        assert (rows == 1).sum() == round(0.15 * n)
        assert (rows == 0).sum() == n - round(0.2 * n) - round(0.15 * n)
    np.testing.assert_array_equal(split, assign_splits(labels, given, 0.15, 0.2, seed=0))
    assert not np.array_equal(split, assign_splits(labels, given, 0.15, 0.2, seed=1))


def test_assign_splits_respects_given_splits():
    labels = np.arange(60) % 2
    given = np.full(60, SPLIT_CODE["train"], dtype=np.int8)
    given[:10] = SPLIT_CODE["test"]  # the source fixes a test set (MNIST t10k, IMDB test)
    split = assign_splits(labels, given, val=0.2, test=0.2, seed=0)
    np.testing.assert_array_equal(split[:10], 2)  # given test rows stay test
    assert (split[10:] != 2).all()  # no further test rows are carved
    for label in (0, 1):
        rest = split[10:][labels[10:] == label]
        assert (rest == 1).sum() == round(0.2 * 25)  # val carved from train, per class
    # given val rows stay val, and then val is not carved but test is
    given = np.full(60, SPLIT_CODE[None], dtype=np.int8)
    given[50:] = SPLIT_CODE["val"]
    split = assign_splits(labels, given, val=0.2, test=0.2, seed=0)
    np.testing.assert_array_equal(split[50:], 1)
    assert (split[:50] != 1).all()
    assert (split[:50] == 2).sum() == 2 * round(0.2 * 25)


def test_given_splits_end_to_end(tmp_path):
    rows = _good_rows(60)
    for row in rows[:40]:
        row["split"] = "train"
    for row in rows[40:]:
        row["split"] = "test"
    run_preprocessing(ListSource(rows), _cfg(), 0, tmp_path, META)
    assert sorted(_read(tmp_path, "test").column("id").to_pylist()) == [
        f"r{i:03d}" for i in range(40, 60)]
    val = _read(tmp_path, "val").column("id").to_pylist()
    assert len(val) == 2 * round(0.15 * 20)
    assert all(int(i[1:]) < 40 for i in val)  # carved from the given train rows


# ---------------------------------------------------------------------------------------------
# in-memory sources: vocabulary from train only, normalisation, bad rows


def test_vocabulary_is_built_from_train_only(tmp_path):
    rows = _good_rows(40)
    for row in rows[:30]:
        row["split"] = "train"
    rows[3]["text"] = "a lion"  # train only
    for row in rows[30:35]:
        row["split"] = "val"
    for row in rows[35:]:
        row["split"] = "test"
    rows[31]["text"] = "a zebra"  # val only
    rows[36]["text"] = "an okapi"  # test only
    quality = run_preprocessing(ListSource(rows), _cfg(), 0, tmp_path, META)
    assert quality["splits"] == {"train": 30, "val": 5, "test": 5}
    vocab = pq.read_table(tmp_path / "vocab.parquet").to_pylist()
    tokens = [row["token"] for row in vocab]
    assert "lion" in tokens
    assert "zebra" not in tokens and "okapi" not in tokens and "an" not in tokens
    counts = {row["token"]: row["count"] for row in vocab}
    assert counts["a"] == 30  # every train text has one "a"; val/test ones are not counted
    index = {row["token"]: row["index"] for row in vocab}

    def tokens_of(split, sample_id):
        table = _read(tmp_path, split)
        return table.column("tokens")[table.column("id").to_pylist().index(sample_id)].as_py()

    assert tokens_of("val", "r031") == [index["a"], 1]  # zebra -> <unk>
    assert tokens_of("test", "r036") == [1, 1]  # an okapi -> <unk> <unk>
    assert tokens_of("train", "r003") == [index["a"], index["lion"]]


def test_min_token_count_and_truncation(tmp_path):
    rows = _good_rows(40)
    for i, row in enumerate(rows):
        row["text"] = f"once{i} {row['text']}"  # a word seen exactly once per row
    rows[0]["text"] = "rare " + " ".join(["x"] * 10)
    quality = run_preprocessing(ListSource(rows),
                                _cfg("data.min_token_count=2", "data.max_text_tokens=6"),
                                0, tmp_path, META)
    assert quality["modified"] == {"text_truncated": 1}
    vocab = pq.read_table(tmp_path / "vocab.parquet").to_pylist()
    train_counts = Counter(w for t in _read(tmp_path, "train").column("text").to_pylist()
                           for w in split_words(t)[:6])
    assert sum(1 for c in train_counts.values() if c == 1) >= 20
    assert {r["token"]: r["count"] for r in vocab[2:]} == {
        w: c for w, c in train_counts.items() if c >= 2}
    table = pa.concat_tables([_read(tmp_path, s) for s in SPLITS])
    lengths = [len(t) for t in table.column("tokens").to_pylist()]
    assert max(lengths) == 6
    assert table.column("tokens")[table.column("id").to_pylist().index("r000")].as_py()[1:] == [
        next(r["index"] for r in vocab if r["token"] == "x")] * 5


def test_auto_text_length_follows_the_train_split_and_reports_the_cut(tmp_path):
    """`max_text_tokens: auto`: the 95th percentile of the train lengths (rounded up to 16, at
    least 64); val and test texts are cut to the same length, and the registered model's
    `TextEncoding.from_meta` cuts raw text to exactly the stored tokens."""
    rows = _good_rows(200, split="train")
    lengths = {}
    for i, row in enumerate(rows):
        lengths[row["id"]] = 20 + i  # 20 .. 219 words
        row["text"] = " ".join(f"w{i % 7}" for i in range(20 + i))
    rows[5]["split"], rows[6]["split"] = "val", "test"
    rows += [{**_good_rows(1)[0], "id": "long-val", "split": "val",
              "text": "w1 " * 500, "origin": "data/raw.csv:900"},
             {**_good_rows(1)[0], "id": "long-test", "split": "test",
              "text": "w2 " * 500, "origin": "data/raw.csv:901"}]
    lengths |= {"long-val": 500, "long-test": 500}
    quality = run_preprocessing(ListSource(rows), _cfg(), 0, tmp_path, META)
    train = [lengths[r["id"]] for r in rows if r["split"] == "train"]
    expected = int(-(-np.percentile(train, 95) // 16) * 16)
    assert expected == 224  # 95th percentile 209.15 of 198 lengths (20..219, less two)
    meta = read_metadata(tmp_path / "train.parquet")
    assert meta["max_text_tokens"] == expected
    text = quality["text"]
    cut = {i: n - expected for i, n in lengths.items() if n > expected}
    assert sorted(cut) == ["long-test", "long-val"]  # no train text is longer than 219
    assert text["max_text_tokens"] == expected and text["chosen_by"].startswith("auto: the 95th")
    assert text["rows_truncated"] == 2 == quality["modified"]["text_truncated"]
    assert text["rows_truncated_by_split"] == {"train": 0, "val": 1, "test": 1}
    assert text["tokens"] == sum(lengths.values())
    assert text["tokens_dropped"] == sum(cut.values())
    assert text["tokens_kept_share"] == round(1 - sum(cut.values()) / sum(lengths.values()), 4)
    vocab = Vocabulary(pq.read_table(tmp_path / "vocab.parquet").column("token").to_pylist()[2:])
    encoding = TextEncoding.from_meta(meta)
    for split in SPLITS:
        for row in _read(tmp_path, split).to_pylist():
            assert row["tokens"] == vocab.encode(encoding.words(row["text"])[0]), row["id"]
            assert len(row["tokens"]) == min(lengths[row["id"]], expected)
    short = run_preprocessing(ListSource(_good_rows(40)), _cfg(), 0, tmp_path / "short", META)
    assert short["text"]["max_text_tokens"] == 64 and short["text"]["rows_truncated"] == 0
    assert "text_truncated" not in short["modified"]
    fixed = run_preprocessing(ListSource(rows), _cfg("data.max_text_tokens=100"), 0,
                              tmp_path / "fixed", META)
    assert fixed["text"]["chosen_by"] == "data.max_text_tokens"
    assert fixed["text"]["rows_truncated"] == sum(n > 100 for n in lengths.values())


def test_normalisation_uses_train_statistics(tmp_path):
    rows = _good_rows(40)
    run_preprocessing(ListSource(rows), _cfg(), 0, tmp_path, META)
    meta = read_metadata(tmp_path / "train.parquet")
    train_ids = set(_read(tmp_path, "train").column("id").to_pylist())
    pixels = np.array([r["image"] for r in rows if r["id"] in train_ids], dtype=np.float64)
    assert meta["image_mean"][0] == pytest.approx(pixels.mean(), abs=1e-6)
    assert meta["image_std"][0] == pytest.approx(pixels.std(), abs=1e-6)
    train = to_matrix(_read(tmp_path, "train").column("image"))  # stored as given
    np.testing.assert_allclose(np.sort(train.ravel()), np.sort(pixels.ravel()), atol=1e-6)


def test_image_only_and_text_only_sources(tmp_path):
    rows = _good_rows(40)
    run_preprocessing(ListSource(rows, has_text=False), _cfg(), 0, tmp_path / "img", META)
    assert pq.read_schema(tmp_path / "img" / "train.parquet").names == [
        "id", "label", "split", "image"]
    assert not (tmp_path / "img" / "vocab.parquet").exists()
    for row in rows:
        row["image"] = None
    run_preprocessing(ListSource(rows, image_shape=None), _cfg(), 0, tmp_path / "txt", META)
    assert pq.read_schema(tmp_path / "txt" / "train.parquet").names == [
        "id", "label", "split", "text", "tokens"]
    assert read_metadata(tmp_path / "txt" / "train.parquet")["image_mean"] is None


# bad rows: (reason, field, how to break a good row)
BAD = [
    ("non_finite_pixels", "image", {"image": [float("nan"), 0.0, 0.0, 0.0]}),
    ("wrong_image_size", "image", {"image": [0.1, 0.2, 0.3]}),
    ("missing_image", "image", {"image": None}),
    ("empty_text", "text", {"text": "   "}),
    ("missing_text", "text", {"text": None}),
    ("duplicate_id", "id", {"id": "r000"}),
    ("missing_id", "id", {"id": None}),
    ("missing_label", "label", {"label": None}),
    ("label_out_of_range", "label", {"label": 7}),
    ("unknown_split", "split", {"split": "holdout"}),
]


def _with_bad_rows(bad=BAD) -> tuple[list[dict], dict[str, int]]:
    """Good rows with one bad row of each kind mixed in (across batches); reason -> row."""
    rows, where = _good_rows(40), {}
    for k, (reason, _, change) in enumerate(bad):
        position = 3 + 4 * k
        row = {**_good_rows(1)[0], "id": f"bad-{reason}", "text": "a bad row", **change,
               "origin": f"data/raw.csv:{100 + k}"}
        rows.insert(position, row)
        where[reason] = 100 + k
    return rows, where


def test_bad_rows_are_skipped_and_counted(tmp_path):
    rows, _ = _with_bad_rows()
    quality = run_preprocessing(ListSource(rows), _cfg(), 0, tmp_path, META)
    assert quality["rows_in"] == 40 + len(BAD)
    assert quality["rows_kept"] == 40
    assert quality["rows_rejected"] == len(BAD)
    assert quality["rows_in"] == quality["rows_kept"] + quality["rows_rejected"]
    assert quality["rejected"] == {reason: 1 for reason, _, _ in BAD}
    for k, (reason, field, _) in enumerate(BAD):
        assert quality["examples"][reason] == [
            {"origin": f"data/raw.csv:{100 + k}", "field": field}]
    ids = _all_ids(tmp_path)
    assert sorted(ids) == [f"r{i:03d}" for i in range(40)]  # the first r000 is the one kept
    kept = [r for s in SPLITS for r in _read(tmp_path, s).to_pylist() if r["id"] == "r000"]
    assert [r["text"] for r in kept] == ["a cat picture number 0"]
    assert sum(quality["splits"].values()) == 40
    assert json.loads((tmp_path / "quality.json").read_text()) == quality


@pytest.mark.parametrize("bad", BAD, ids=[reason for reason, _, _ in BAD])
def test_bad_row_fails_naming_file_row_and_field(tmp_path, bad):
    reason, field, _ = bad
    rows, where = _with_bad_rows([bad])
    with pytest.raises(DataError) as info:
        run_preprocessing(ListSource(rows), _cfg("data.on_bad_row=fail"), 0, tmp_path, META)
    err = info.value
    message = str(err)
    assert "file data/raw.csv" in message
    assert f"row {where[reason]}" in message
    assert f"field '{field}'" in message
    assert reason in message
    assert (err.file, err.row, err.field, err.reason) == (
        "data/raw.csv", where[reason], field, reason)
    assert not any(tmp_path.iterdir())  # nothing written


def test_bad_row_origin_without_row_number(tmp_path):
    rows = _good_rows(40)
    rows[5]["label"] = None
    rows[5]["origin"] = "inline"
    with pytest.raises(DataError) as info:
        run_preprocessing(ListSource(rows), _cfg("data.on_bad_row=fail"), 0, tmp_path, META)
    assert info.value.file == "inline" and info.value.row is None
    assert str(info.value).startswith("file inline, field 'label'")


def test_source_problem_is_a_bad_row(tmp_path):
    rows = _good_rows(40)
    rows[7]["problem"], rows[7]["problem_field"] = "undecodable_image", "image"

    class ProblemSource(ListSource):
        def batches(self, batch_rows):
            for start in range(0, len(self.rows), batch_rows):
                chunk = self.rows[start:start + batch_rows]
                yield raw_batch({name: [row.get(name) for row in chunk] for name in
                                 ("id", "label", "split", "image", "text", "origin", "problem",
                                  "problem_field")})

    quality = run_preprocessing(ProblemSource(rows), _cfg(), 0, tmp_path / "skip", META)
    assert quality["rejected"] == {"undecodable_image": 1}
    with pytest.raises(DataError, match="row 7, field 'image'"):
        run_preprocessing(ProblemSource(rows), _cfg("data.on_bad_row=fail"), 0,
                          tmp_path / "fail", META)


def test_empty_split_and_absent_class_are_errors(tmp_path):
    with pytest.raises(DataError, match="no usable rows"):
        run_preprocessing(ListSource([{**r, "label": None} for r in _good_rows(10)]), _cfg(),
                          0, tmp_path, META)
    rows = _good_rows(40)
    for row in rows:
        row["split"] = "train" if row["label"] == 1 else "test"
    with pytest.raises(DataError) as info:
        run_preprocessing(ListSource(rows), _cfg(), 0, tmp_path, META)
    assert info.value.reason == "class_absent_from_train"
    assert "classes absent from the train split: ['cat']" in str(info.value)
    assert not any(tmp_path.iterdir())


def test_list_source_meets_the_protocol():
    source: Source = ListSource(_good_rows(10))
    batches = list(source.batches(4))
    assert [b.num_rows for b in batches] == [4, 4, 2]
    assert source.info.modalities == ("image", "text")

"""mmcore.io.parquet: the fixed-size-list contract, metadata, atomic writes, markers, streaming."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmcore.io.parquet import (
    MARKER,
    atomic_writer,
    embedding_array,
    embedding_schema,
    embedding_table,
    iter_batches,
    mark_complete,
    read_marker,
    read_metadata,
    to_matrix,
    write_json,
    write_table,
)


def _matrix(n: int = 5, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))  # float64 on purpose


def test_embedding_array_to_matrix_round_trip():
    m = _matrix()
    arr = embedding_array(m)
    assert arr.type == pa.list_(pa.float32(), 3)
    assert len(arr) == 5
    back = to_matrix(arr)
    assert back.shape == (5, 3)
    assert back.dtype == np.float32  # a numeric matrix, never an object array of rows
    assert back.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(back, m.astype(np.float32))


def test_to_matrix_handles_chunks_and_slices():
    m = _matrix(6, 2)
    arr = embedding_array(m)
    chunked = pa.chunked_array([arr.slice(0, 2), arr.slice(2, 4)])
    np.testing.assert_array_equal(to_matrix(chunked), m.astype(np.float32))
    np.testing.assert_array_equal(to_matrix(arr.slice(3, 2)), m[3:5].astype(np.float32))
    np.testing.assert_array_equal(to_matrix(pa.chunked_array([arr.slice(1, 3)])),
                                  m[1:4].astype(np.float32))


def test_embedding_table_schema_and_parquet_round_trip(tmp_path):
    m = _matrix(4, 3)
    table = embedding_table(["a", "b", "c", "d"], np.array(["train", "train", "val", "test"]),
                            np.array([0, 1, 1, 0]), m)
    assert table.schema == embedding_schema(3)
    path = write_table(tmp_path / "emb.parquet", table, meta={"stage": "features"})
    back = pq.read_table(path)
    assert back.schema.field("embedding").type == pa.list_(pa.float32(), 3)
    assert back.column("label").type == pa.int64()
    np.testing.assert_array_equal(to_matrix(back.column("embedding")), m.astype(np.float32))
    frame = back.drop_columns(["embedding"]).to_pandas()
    assert frame["id"].tolist() == ["a", "b", "c", "d"]
    # pandas sees only strings and integers here; the embedding stays out of object columns
    assert frame["label"].dtype == np.int64


def test_write_table_metadata_round_trip(tmp_path):
    table = pa.table({"x": pa.array([1, 2, 3], pa.int64())})
    meta = {"stage": "preprocessing", "key": "abc123", "upstream": {"a": 1}, "shape": [1, 8, 8]}
    path = write_table(tmp_path / "sub" / "t.parquet", table, meta=meta)
    assert path.exists()
    assert read_metadata(path) == meta
    assert pq.read_table(path).column("x").to_pylist() == [1, 2, 3]
    # no metadata -> {}
    plain = write_table(tmp_path / "plain.parquet", table)
    assert read_metadata(plain) == {}
    # nothing but the output in the folder
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["t.parquet"]


def test_atomic_writer_leaves_nothing_when_the_block_raises(tmp_path):
    path = tmp_path / "out.parquet"
    schema = pa.schema([("x", pa.int64())])
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_writer(path, schema, {"stage": "x"}) as writer:
            writer.write_table(pa.table({"x": [1, 2]}, schema=schema))
            raise RuntimeError("boom")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file either


def test_atomic_writer_keeps_the_old_file_when_the_block_raises(tmp_path):
    path = tmp_path / "out.parquet"
    schema = pa.schema([("x", pa.int64())])
    write_table(path, pa.table({"x": [7]}, schema=schema), meta={"v": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic_writer(path, schema, {"v": 2}) as writer:
            writer.write_table(pa.table({"x": [8, 9]}, schema=schema))
            raise KeyboardInterrupt
    assert pq.read_table(path).column("x").to_pylist() == [7]
    assert read_metadata(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_atomic_writer_success(tmp_path):
    path = tmp_path / "ok.parquet"
    schema = pa.schema([("x", pa.int64())])
    with atomic_writer(path, schema, {"v": 3}) as writer:
        writer.write_table(pa.table({"x": [1]}, schema=schema))
        writer.write_table(pa.table({"x": [2, 3]}, schema=schema))
        assert not path.exists()  # only renamed into place at the end
    assert pq.read_table(path).column("x").to_pylist() == [1, 2, 3]
    assert read_metadata(path) == {"v": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["ok.parquet"]


def test_mark_complete_and_read_marker(tmp_path):
    folder = tmp_path / "stage"
    assert read_marker(folder) is None  # missing folder
    folder.mkdir()
    assert read_marker(folder) is None  # folder without marker
    (folder / "a.bin").write_bytes(b"abc")
    mark_complete(folder, {"key": "k1"})
    assert (folder / MARKER).exists()
    marker = read_marker(folder)
    # Every file but the marker, with its size and SHA-256 (of b"abc", pinned).
    assert marker["key"] == "k1"
    assert list(marker["files"]) == ["a.bin"]
    assert marker["files"]["a.bin"]["size"] == 3
    assert marker["files"]["a.bin"]["sha256"] == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert len(marker["content"]) == 16
    (folder / MARKER).write_text("{not json")
    assert read_marker(folder) is None  # corrupt marker = incomplete
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "a.bin"]


def test_write_json_is_sorted_and_readable(tmp_path):
    path = write_json(tmp_path / "q.json", {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["q.json"]


def test_iter_batches_is_bounded_by_row_groups(tmp_path):
    n, group = 25, 10
    table = pa.table({"i": pa.array(range(n), pa.int64()), "y": pa.array(range(n), pa.int64())})
    path = write_table(tmp_path / "g.parquet", table, row_group_size=group)
    assert pq.ParquetFile(path).num_row_groups == 3
    batches = list(iter_batches(path, columns=["i"]))
    assert [b.num_rows for b in batches] == [10, 10, 5]
    assert all(b.schema.names == ["i"] for b in batches)
    assert [v for b in batches for v in b.column("i").to_pylist()] == list(range(n))

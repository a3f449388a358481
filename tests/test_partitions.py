"""Partitioned stages: feature extraction's embeddings and testing's predictions as datasets of
part files, one per partition of the input.

- The same run with its partitions on a 2-worker Dask LocalCluster (Prefect tasks through
  prefect-dask) and one after another in the flow's process: the part files are the same bytes,
  and the metrics are equal.
- A part that fails: the stage fails with every other part kept in the key's work folder; the
  next attempt reuses them (the very files) and computes that one part alone.
- The completion marker covers every part, and is refused while a part is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmcore.io.parquet import (
    embedding_table,
    mark_complete,
    part_name,
    read_dataset,
    read_marker,
    write_table,
)
from mmcore.io.partitions import run_inline

# Small partitions (data.batch_rows) so tiny data has several per split: of 300 rows, 60 are
# test rows -> 3 prediction parts of 25 rows; the embedding datasets get a dozen parts each.
TINY = ["features.image_epochs=2", "features.text_epochs=2", "shared_space.epochs=3",
        "training.epochs=3", "data.limit=300", "data.batch_rows=25",
        "testing.robustness=false", "training.register_model=false"]


def _part(folder: Path, index: int, count: int, rows: list[int]) -> None:
    table = embedding_table([f"r{r}" for r in rows], ["train"] * len(rows), rows,
                            np.outer(rows, np.ones(2)))
    write_table(folder / part_name(index), table,
                {"part": {"index": index, "of": count, "source": "s"}})


def test_a_dataset_reads_in_part_order_and_is_marked_only_when_whole(tmp_path):
    dataset = tmp_path / "out" / "image.parquet"
    _part(dataset, 1, 3, [3, 4])
    _part(dataset, 0, 3, [1, 2])
    with pytest.raises(ValueError, match=r"image.parquet/part-00002.parquet is missing"):
        mark_complete(tmp_path / "out", {})
    assert read_marker(tmp_path / "out") is None

    _part(dataset, 2, 3, [5])
    marker = mark_complete(tmp_path / "out", {})
    assert sorted(marker["files"]) == [f"image.parquet/{part_name(i)}" for i in range(3)]
    assert read_dataset(dataset).column("label").to_pylist() == [1, 2, 3, 4, 5]
    assert pq.read_table(dataset).num_rows == 5  # pyarrow reads the folder as one table too


def test_run_inline_on_threads_writes_the_parts_it_writes_one_after_another(tmp_path):
    def work(out: Path, meta: dict, rows: list[int]) -> None:
        _part(out.parent, meta["part"]["index"], meta["part"]["of"], rows)

    jobs = [{"meta": {}, "rows": [2 * i, 2 * i + 1]} for i in range(5)]
    alone = run_inline(tmp_path / "one")("image.parquet", work, jobs, "s")
    side_by_side = run_inline(tmp_path / "two", threads=2)("image.parquet", work, jobs, "s")
    assert read_dataset(side_by_side).equals(read_dataset(alone))
    assert read_dataset(alone).column("label").to_pylist() == list(range(10))


def _run(run_dir: Path, *extra: str, stages: list[str] | None = None) -> dict:
    from flows.pipeline import pipeline

    return pipeline(overrides=[*TINY, f"run_dir={run_dir}", *extra], stages=stages)


def _parquet_parts(summary: dict, stage: str) -> dict[str, str]:
    """Every Parquet part of a stage's output with its digest, from the completion marker."""
    marker = read_marker(summary["stages"][stage]["path"])
    return {name: f["sha256"] for name, f in marker["files"].items() if "/part-" in name}


@pytest.mark.slow
def test_partitions_on_two_dask_workers_give_the_inline_run_bit_for_bit(tmp_path,
                                                                       prefect_harness):
    inline = _run(tmp_path, "dask.partitions=inline")
    expected = {stage: _parquet_parts(inline, stage) for stage in ("feature_extraction",
                                                                   "testing")}
    for stage in expected:  # computed again below, on Dask
        shutil.rmtree(inline["stages"][stage]["path"])
    on_dask = _run(tmp_path, "dask.partitions=dask", "dask.workers=2")

    # Feature extraction's new output has the old content, so fusion and training built on it
    # are hits (the marker's content digest covers every part).
    assert {s: v["state"] for s, v in on_dask["stages"].items()} == {
        "preprocessing": "hit", "feature_extraction": "miss", "shared_space": "hit",
        "training": "hit", "testing": "miss"}
    for stage, datasets in [("feature_extraction", ["image.parquet", "text.parquet"]),
                            ("testing", ["predictions.parquet"])]:
        parts = _parquet_parts(on_dask, stage)
        assert parts == expected[stage]
        for dataset in datasets:
            names = sorted(n for n in parts if n.startswith(f"{dataset}/"))
            assert names == [f"{dataset}/{part_name(i)}" for i in range(len(names))]
            assert len(names) >= 3 if stage == "feature_extraction" else len(names) == 3
        summary = read_marker(on_dask["stages"][stage]["path"])["summary"]
        assert {v["where"] for v in summary["partitions"].values()} == {"dask"}
    features = read_dataset(Path(on_dask["stages"]["feature_extraction"]["path"])
                            / "image.parquet")
    assert features.num_rows == 300
    assert features.column("split").to_pylist() == sorted(
        features.column("split").to_pylist(), key=["train", "val", "test"].index)
    assert on_dask["metrics"] == inline["metrics"]
    assert not list((tmp_path / "stages").glob("*/.*.parts"))  # work folders gone


@pytest.mark.slow
def test_a_failed_part_reruns_alone_and_the_others_are_reused(tmp_path, prefect_harness,
                                                             monkeypatch):
    import mmcore.stages.feature_extraction as fe

    embed_part = fe.embed_part

    def failing_third_image_part(out: Path, **job):
        if job["modality"] == "image" and out.name == part_name(2):
            raise RuntimeError("injected: this part's worker lost its disk")
        embed_part(out=out, **job)

    stages = ["preprocessing", "feature_extraction"]
    monkeypatch.setattr(fe, "embed_part", failing_third_image_part)
    with pytest.raises(Exception, match=r"1 of \d+ parts of image.parquet failed"):
        _run(tmp_path, "dask.partitions=inline", stages=stages)
    (work,) = (tmp_path / "stages" / "feature_extraction").glob(".*.parts")
    kept = {p.name: p.stat().st_ino for p in (work / "image.parquet").glob("part-*.parquet")}
    count = len(kept) + 1
    assert count > 3 and sorted(kept) == [part_name(i) for i in range(count) if i != 2]

    computed: list[str] = []

    def counting(out: Path, **job):
        computed.append(f"{job['modality']}/{out.name}")
        embed_part(out=out, **job)

    monkeypatch.setattr(fe, "embed_part", counting)
    again = _run(tmp_path, "dask.partitions=inline", stages=stages)
    assert [c for c in computed if c.startswith("image/")] == [f"image/{part_name(2)}"]
    ref = again["stages"]["feature_extraction"]
    output = Path(ref["path"]) / "image.parquet"
    assert {name: (output / name).stat().st_ino for name in kept} == kept  # the very files
    assert not work.exists()
    marker = read_marker(ref["path"])
    assert marker["summary"]["partitions"]["image.parquet"] == {
        "parts": count, "reused": count - 1, "where": "inline"}
    assert marker["summary"]["partitions"]["text.parquet"]["reused"] == 0
    assert f"image.parquet/{part_name(2)}" in marker["files"]


def test_auto_sends_parts_to_a_cluster_only_when_one_is_named_and_the_input_is_large():
    from mmcore.config import load_config
    from tasks.parallel.partitions import where

    assert where(load_config(), 10**7, 8) == "inline"  # one machine: threads, no cluster
    named = load_config(overrides=["dask.address=tcp://127.0.0.1:8786"])
    assert where(named, 10**7, 8) == "dask"
    assert where(named, 1_000, 8) == "inline"
    assert where(named, 10**7, 1) == "inline"
    assert where(load_config(overrides=["dask.partitions=dask"]), 10, 2) == "dask"

"""The bad-input contract, end to end, in one place.

Every kind of bad input is built as real files under tmp_path (CSV/Parquet manifests with PNG and
JPEG images, IDX files plain and gzipped, aclImdb folders) and pushed through
`run_preprocessing(open_source(cfg.data, cfg.seed), cfg.data, cfg.seed, out_dir, {})` with a
config from `load_config`, exactly as the pipeline's preprocessing task does.

- Row-level kinds (two bad rows among good ones), `data.on_bad_row=skip`: quality.json counts the
  rows under their reason, the written train/val/test Parquet files hold exactly the good rows,
  `examples` quote the bad rows' origins, and always rows_in == rows_kept + rows_rejected.
- The same kinds with `data.on_bad_row=fail`: a DataError naming the file, the row and the field
  of the first bad row, and nothing at all in out_dir (no Parquet file, no temporary file).
- Kept-but-changed kinds (too many tokens, undecodable bytes replaced): counted in `modified`.
- File-, dataset- and config-level kinds: DataError (ConfigError) naming the file (the key, the
  split), and nothing written.

NaN and inf pixels cannot come from a manifest: its pixels are read from PNG/JPEG files as
byte/255 (a Parquet manifest holds paths, not pixels). Those two kinds therefore read a real
manifest through `PoisonPixels`, a Source wrapper that sets pixels of chosen rows to NaN/inf and
passes everything else through unchanged.

Unreadable files are chmod 000, which does not stop root (CI runs as root). As root, those cases
read their source through `AsNobody`, which runs the real source's reads in a forked child that
has dropped to uid/gid 65534 (as `setpriv --reuid=65534 --regid=65534 --clear-groups` would),
so the open still fails with PermissionError inside the source; validation, the report and the
files stay in the test process.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import stat
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_factories import (
    idx_bytes,
    random_pixels,
    write_bytes,
    write_idx_mnist,
    write_image,
    write_imdb,
    write_manifest,
)

from mmcore.config import ConfigError, load_config
from mmcore.data.source import RAW_SCHEMA, DataError, Source
from mmcore.data.sources import open_source
from mmcore.stages.preprocessing import run_preprocessing

SPLITS = ("train", "val", "test")
CLASSES = ("cat", "dog")
SIZE = 6  # good manifest images are SIZE x SIZE grey
N_GOOD = 12  # good manifest rows; enough for a stratified val and test per class
BAD_AT = (3, 10)  # 0-based positions of the two bad rows in a manifest: data rows 4 and 11
SPLIT_OF = ("train", "train", "train", "train", "val", "test")  # split column, by row % 6


# ---------------------------------------------------------------------------------------------
# running the stage as the pipeline does, and the checks every case shares


def opt(key: str, value) -> str:
    """A `key=value` override whose value survives YAML parsing unchanged (paths, odd text)."""
    return f"{key}={json.dumps(value)}"


def preprocess(out: Path, *overrides: str, config_file: Path | None = None,
               wrap: Callable[[Source], Source] | None = None) -> dict:
    """load_config -> open_source -> run_preprocessing, small batches so bad rows straddle them."""
    cfg = load_config(config_file, ["data.batch_rows=5", *overrides])
    source = open_source(cfg.data, cfg.seed)
    if wrap is not None:
        source = wrap(source)
    return run_preprocessing(source, cfg.data, cfg.seed, out, {})


def kept_rows(out: Path) -> list[dict]:
    return [row for s in SPLITS for row in pq.read_table(out / f"{s}.parquet").to_pylist()]


def check_report(quality: dict, out: Path) -> list[dict]:
    """The invariants of every successful run; returns the rows written to the split files."""
    assert quality["rows_in"] == quality["rows_kept"] + quality["rows_rejected"]
    assert quality["rows_rejected"] == sum(quality["rejected"].values())
    assert json.loads((out / "quality.json").read_text()) == quality
    rows = kept_rows(out)
    assert len(rows) == quality["rows_kept"] == sum(quality["splits"].values())
    assert {s: sum(1 for r in rows if r["split"] == s) for s in SPLITS} == quality["splits"]
    names = {p.name for p in out.iterdir()}
    assert names - {"vocab.parquet"} == {"quality.json", *(f"{s}.parquet" for s in SPLITS)}
    return rows


def assert_nothing_written(out: Path) -> None:
    """No Parquet file, no temporary file, nothing: out_dir is absent or empty."""
    assert not out.exists() or sorted(p.name for p in out.rglob("*")) == []


def origin(file: str, row: int | None) -> str:
    return file if row is None else f"{file}:{row}"


# ---------------------------------------------------------------------------------------------
# row-level kinds


@dataclass
class Built:
    """What a row-level case wrote and what the stage must make of it."""

    overrides: list[str]
    good: dict[str, str | None]  # ids that must be kept -> their text (None: not compared)
    bad: list[tuple[str, int | None]]  # (file, row) of each bad row, in source order
    wrap: Callable[[Source], Source] | None = None
    id_of: Callable[[str], str] = str  # written id -> source id


@dataclass(frozen=True)
class RowKind:
    name: str
    reason: str
    field: str
    build: Callable[[Path, str | None], Built]
    formats: tuple[str | None, ...] = (None,)
    marks: tuple = ()


def good_manifest_rows(folder: Path, split: bool = False) -> tuple[list[dict], dict[str, str]]:
    """N_GOOD rows with their own images (every third a JPEG), alternating classes."""
    rows, good = [], {}
    for i in range(N_GOOD):
        label = CLASSES[i % 2]
        image = f"img/g{i}.{'jpg' if i % 3 == 2 else 'png'}"
        write_image(folder / image, random_pixels(i, SIZE))
        text = f"a photo of a {label} number {i}"
        row = {"id": f"g{i}", "label": label, "image_path": image, "text": text}
        if split:
            row["split"] = SPLIT_OF[i % 6]
        rows.append(row)
        good[row["id"]] = text
    return rows, good


def manifest_kind(name: str, reason: str, field_name: str,
                  bad: list[dict] | Callable[[Path], list[dict]], *,
                  prepare: Callable[[Path], None] | None = None, options: tuple[str, ...] = (),
                  split: bool = False, wrap: Callable[[Source], Source] | None = None,
                  formats: tuple[str, ...] = ("csv", "parquet"), marks: tuple = ()) -> RowKind:
    """A manifest of N_GOOD good rows with two rows changed by `bad` inserted at BAD_AT."""

    def build(tmp: Path, fmt: str | None) -> Built:
        folder = tmp / "data"
        rows, good = good_manifest_rows(folder, split)
        if prepare is not None:
            prepare(folder)
        changes = bad(folder) if callable(bad) else bad
        for position, change in zip(BAD_AT, changes, strict=True):
            row = {"id": f"bad{position}", "label": "cat", "image_path": "img/g0.png",
                   "text": "a bad row"}
            if split:
                row["split"] = "train"
            rows.insert(position, {**row, **change})
        path = write_manifest(folder, rows, fmt)
        return Built([opt("data.source", "manifest"), opt("data.path", str(path)), *options],
                     good, [(str(path), p + 1) for p in BAD_AT], wrap)

    return RowKind(name, reason, field_name, build, formats, marks)


class PoisonPixels:
    """A real source with the pixels of chosen rows overwritten (NaN, inf: no file can carry
    them through the manifest loader)."""

    def __init__(self, source: Source, ids: set[str], values: list[float]):
        self.source, self.ids, self.values = source, ids, values
        self.info = source.info

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        at = RAW_SCHEMA.get_field_index("image")
        image_field = RAW_SCHEMA.field("image")
        for batch in self.source.batches(batch_rows):
            images = batch.column("image").to_pylist()
            for i, sample_id in enumerate(batch.column("id").to_pylist()):
                if sample_id in self.ids:
                    images[i][: len(self.values)] = self.values
            yield batch.set_column(at, image_field, pa.array(images, image_field.type))


NOBODY = 65534  # uid and gid of `nobody` on Debian; needs no passwd entry


class AsNobody:
    """A real source whose batches are read in a forked child running as uid/gid NOBODY, with
    no supplementary groups; the batches come back as an Arrow stream. For root, to whom chmod
    000 means nothing: the child gets PermissionError like any other user."""

    def __init__(self, source: Source):
        self.source, self.info = source, source.info
        # the child must reach the source's folder: pytest makes tmp_path and the folders above
        # it 0700, and a umask may have kept files from others
        folder = Path(source.root)
        for above in (folder, *folder.parents):
            _add_mode(above, stat.S_IXOTH)
        for path in folder.rglob("*"):
            if path.is_dir():
                _add_mode(path, stat.S_IROTH | stat.S_IXOTH)
            elif stat.S_IMODE(path.stat().st_mode):  # the locked files stay 000
                _add_mode(path, stat.S_IROTH)

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        data_r, data_w = os.pipe()
        err_r, err_w = os.pipe()
        with warnings.catch_warnings():  # Python >= 3.12 warns on fork with threads around;
            warnings.simplefilter("ignore", DeprecationWarning)  # the child starts none
            pid = os.fork()
        if pid == 0:
            code, doing = 1, f"switching to uid {NOBODY} (needs CAP_SETUID and CAP_SETGID)"
            try:
                os.close(data_r)
                os.close(err_r)
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
                doing = f"reading the source as uid {NOBODY}"
                with os.fdopen(data_w, "wb") as sink, \
                        pa.ipc.new_stream(sink, RAW_SCHEMA) as writer:
                    for batch in self.source.batches(batch_rows):
                        writer.write_batch(batch)
                code = 0
            except BaseException:
                os.write(err_w, f"{doing}: {traceback.format_exc()}".encode())
            finally:
                os._exit(code)
        os.close(data_w)
        os.close(err_w)
        try:
            with os.fdopen(data_r, "rb") as stream:
                batches = list(pa.ipc.open_stream(stream))
        except pa.ArrowException:
            batches = []  # the child failed: its traceback says why
        _, status = os.waitpid(pid, 0)
        with os.fdopen(err_r, "rb") as err:
            why = err.read().decode(errors="replace")
        if os.waitstatus_to_exitcode(status) != 0:
            pytest.fail(f"the child reading as uid {NOBODY} failed (exit status "
                        f"{os.waitstatus_to_exitcode(status)}), {why}", pytrace=False)
        yield from batches


def _add_mode(path: Path, bits: int) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & bits != bits:
        path.chmod(mode | bits)


def unprivileged(source: Source) -> Source:
    """The source as it is for a user that file permissions apply to; as root, AsNobody."""
    return AsNobody(source) if os.geteuid() == 0 else source


def lock(path: Path) -> None:
    """chmod 000; as root, the case reads its source through AsNobody."""
    path.chmod(0)
    if os.geteuid() != 0 and os.access(path, os.R_OK):
        pytest.fail(f"chmod 000 leaves {path} readable to uid {os.geteuid()}, which is not "
                    "root: run the tests as root or as a user without CAP_DAC_OVERRIDE",
                    pytrace=False)


def poison_nan(source: Source) -> Source:
    return PoisonPixels(source, {f"bad{p}" for p in BAD_AT}, [math.nan])


def poison_inf(source: Source) -> Source:
    return PoisonPixels(source, {f"bad{p}" for p in BAD_AT}, [0.5, math.inf, -math.inf])


def _corrupt_images(folder: Path) -> None:
    (folder / "img/bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is no PNG stream")
    (folder / "img/bad.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))


def _truncated_images(folder: Path) -> None:
    for name, seed in (("cut.png", 50), ("cut.jpg", 51)):
        path = write_image(folder / "img" / name, random_pixels(seed, SIZE))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


def _odd_sized_images(folder: Path) -> None:
    write_image(folder / "img/big.png", random_pixels(60, SIZE + 2))
    write_image(folder / "img/narrow.png", random_pixels(61, SIZE)[:, :-1])


def _outside_image(folder: Path) -> None:
    write_image(folder.parent / "outside.png", random_pixels(70, SIZE))


def _absolute_paths(folder: Path) -> list[dict]:
    # inside the folder but absolute, and absolute outside it: both break the contract
    return [{"image_path": str((folder / "img/g0.png").resolve())},
            {"image_path": str(folder.parent / "outside.png")}]


def _symlinks_out(folder: Path) -> None:
    _outside_image(folder)
    os.symlink(folder.parent / "outside.png", folder / "img/link.png")
    write_image(folder.parent / "elsewhere/x.png", random_pixels(71, SIZE))
    os.symlink(folder.parent / "elsewhere", folder / "img/linkdir")


def _locked_images(folder: Path) -> None:
    for name, seed in (("locked.png", 80), ("locked.jpg", 81)):
        lock(write_image(folder / "img" / name, random_pixels(seed, SIZE)))


MANIFEST_KINDS = [
    manifest_kind("corrupt_image", "corrupt_image", "image_path",
                  [{"image_path": "img/bad.png"}, {"image_path": "img/bad.jpg"}],
                  prepare=_corrupt_images),
    manifest_kind("truncated_image", "corrupt_image", "image_path",
                  [{"image_path": "img/cut.png"}, {"image_path": "img/cut.jpg"}],
                  prepare=_truncated_images),
    manifest_kind("wrong_image_size", "wrong_image_size", "image",
                  [{"image_path": "img/big.png"}, {"image_path": "img/narrow.png"}],
                  prepare=_odd_sized_images),
    manifest_kind("nan_pixels", "non_finite_pixels", "image", [{}, {}], wrap=poison_nan),
    manifest_kind("inf_pixels", "non_finite_pixels", "image", [{}, {}], wrap=poison_inf),
    manifest_kind("missing_image_file", "missing_image_file", "image_path",
                  [{"image_path": "img/nope.png"}, {"image_path": "img/sub/gone.jpg"}]),
    manifest_kind("empty_image_path", "missing_image", "image",
                  [{"image_path": None}, {"image_path": "   "}]),
    manifest_kind("unreadable_image_file", "unreadable_file", "image_path",
                  [{"image_path": "img/locked.png"}, {"image_path": "img/locked.jpg"}],
                  prepare=_locked_images, wrap=unprivileged),
    manifest_kind("path_escape_absolute", "path_escapes_manifest_folder", "image_path",
                  _absolute_paths, prepare=_outside_image),
    manifest_kind("path_escape_dotdot", "path_escapes_manifest_folder", "image_path",
                  [{"image_path": "../outside.png"}, {"image_path": "img/../../outside.png"}],
                  prepare=_outside_image),
    manifest_kind("path_escape_symlink", "path_escapes_manifest_folder", "image_path",
                  [{"image_path": "img/link.png"}, {"image_path": "img/linkdir/x.png"}],
                  prepare=_symlinks_out),
    manifest_kind("empty_text", "empty_text", "text", [{"text": ""}, {"text": ""}]),
    # the second one is a quoted multi-line CSV field: later origins still count data rows
    manifest_kind("whitespace_only_text", "empty_text", "text",
                  [{"text": "\t \n  "}, {"text": "   "}]),
    manifest_kind("missing_text", "missing_text", "text", [{"text": None}, {"text": None}],
                  formats=("parquet",)),  # a CSV cannot tell a missing text from an empty one
    manifest_kind("duplicate_id", "duplicate_id", "id",
                  [{"id": "g0", "text": "the duplicate"}, {"id": "g1", "text": "the duplicate"}]),
    manifest_kind("missing_id", "missing_id", "id", [{"id": None}, {"id": "   "}]),
    manifest_kind("id_in_two_splits", "id_in_two_splits", "id",
                  [{"id": "g0", "split": "test"}, {"id": "g4", "split": "train"}], split=True),
    manifest_kind("unknown_split", "unknown_split", "split",
                  [{"split": "holdout"}, {"split": "Train"}], split=True),
    manifest_kind("missing_label", "missing_label", "label", [{"label": None}, {"label": "  "}]),
    manifest_kind("label_not_a_declared_class", "unknown_class", "label",
                  [{"label": "bird"}, {"label": "Cat"}], options=("data.classes=[cat, dog]",)),
    manifest_kind("label_index_out_of_range", "label_out_of_range", "label",
                  [{"label": "2"}, {"label": "-1"}], options=("data.classes=[cat, dog]",)),
]


# IMDB: good reviews, train 5 and test 2 per class (val is carved from train)
def good_reviews() -> tuple[dict[str, str], dict[str, str]]:
    files, good = {}, {}
    for split, n in (("train", 5), ("test", 2)):
        for cls, stars in (("neg", 2), ("pos", 8)):
            for i in range(n):
                files[f"{split}/{cls}/{i}_{stars}.txt"] = f"A {cls} review {i}<br />from &amp; on"
                good[f"{split}-{cls}-{i}_{stars}"] = f"A {cls} review {i}\nfrom & on"
    return files, good


DIRECTORY = object()  # a review entry that is a folder, so reading it fails even as root


def imdb_kind(name: str, reason: str, field_name: str, bad: dict[str, object], *,
              options: tuple[str, ...] = (), locked: bool = False, marks: tuple = ()) -> RowKind:
    """An aclImdb tree of good reviews plus the `bad` entries (listed in source order)."""

    def build(tmp: Path, fmt: str | None) -> Built:
        files, good = good_reviews()
        root = write_imdb(tmp, files)
        for relative, content in bad.items():
            path = root / relative
            if content is DIRECTORY:
                path.mkdir()
                continue
            path.write_bytes(content.encode() if isinstance(content, str) else content)
            if locked:
                lock(path)
        return Built([opt("data.source", "imdb"), opt("data.path", str(tmp)), *options], good,
                     [(str(root / relative), None) for relative in bad],
                     unprivileged if locked else None)

    return RowKind(name, reason, field_name, build, (None,), marks)


IMDB_KINDS = [
    imdb_kind("undecodable_review_encoding_fail", "undecodable_text", "text",
              {"train/neg/90_2.txt": b"caf\xe9 au lait", "test/pos/91_9.txt": b"\xff\xfe ok"},
              options=("data.encoding_errors=fail",)),
    imdb_kind("empty_review", "empty_text", "text",
              {"train/neg/90_2.txt": "", "test/pos/91_9.txt": "<br /><br /> &nbsp;"}),
    imdb_kind("unreadable_review_folder", "unreadable_file", "text",
              {"train/neg/90_2.txt": DIRECTORY, "test/pos/91_9.txt": DIRECTORY}),
    imdb_kind("unreadable_review_chmod", "unreadable_file", "text",
              {"train/neg/90_2.txt": "locked", "test/pos/91_9.txt": "locked"}, locked=True),
    imdb_kind("review_file_name_not_id_rating", "bad_filename", "id",
              {"train/neg/notes.txt": "not a review", "test/pos/12.txt": "no rating"}),
]


def _paired_build(tmp: Path, fmt: str | None) -> Built:
    """MNIST digits 0/1 paired with IMDB neg/pos, but IMDB has no test/pos reviews: the test
    images of class 1 have no text of their class and split."""
    written = write_idx_mnist(tmp / "mnist", n_train=12, n_test=6, size=4, n_classes=2, seed=1)
    files, _ = good_reviews()
    write_imdb(tmp / "texts", {k: v for k, v in files.items() if not k.startswith("test/pos")})
    images = str(tmp / "mnist" / "t10k-images-idx3-ubyte")
    test_labels = written["test"][1].tolist()
    good = {f"train-{i:05d}": None for i in range(12)}
    good.update({f"test-{i:05d}": None for i, label in enumerate(test_labels) if label == 0})
    bad = [(images, i) for i, label in enumerate(test_labels) if label == 1]
    overrides = ["data.source=paired", "data.pair.images.source=mnist",
                 opt("data.pair.images.path", str(tmp / "mnist")),
                 "data.pair.texts.source=imdb", opt("data.pair.texts.path", str(tmp / "texts"))]
    return Built(overrides, good, bad, id_of=lambda written_id: written_id.split("|")[0])


ROW_KINDS = [*MANIFEST_KINDS, *IMDB_KINDS,
             RowKind("paired_class_without_texts", "no_pair_for_class", "text", _paired_build)]
ROW_PARAMS = [pytest.param(kind, fmt, id=kind.name if fmt is None else f"{kind.name}-{fmt}",
                           marks=kind.marks)
              for kind in ROW_KINDS for fmt in kind.formats]


def test_the_table_covers_every_row_reason():
    reasons = {kind.reason for kind in ROW_KINDS}
    assert reasons >= {
        "corrupt_image", "wrong_image_size", "non_finite_pixels", "missing_image_file",
        "missing_image", "path_escapes_manifest_folder", "empty_text", "missing_text",
        "undecodable_text", "unreadable_file", "bad_filename", "duplicate_id", "missing_id",
        "id_in_two_splits", "unknown_split", "missing_label", "unknown_class",
        "label_out_of_range", "no_pair_for_class"}
    assert len({kind.name for kind in ROW_KINDS}) == len(ROW_KINDS) >= 22


@pytest.mark.parametrize(("kind", "fmt"), ROW_PARAMS)
def test_bad_rows_are_skipped_and_counted(tmp_path, kind, fmt):
    built = kind.build(tmp_path, fmt)
    out = tmp_path / "out"
    quality = preprocess(out, *built.overrides, wrap=built.wrap)
    rows = check_report(quality, out)
    assert quality["rejected"] == {kind.reason: len(built.bad)}
    assert quality["rows_in"] == len(built.good) + len(built.bad)
    written = [built.id_of(row["id"]) for row in rows]
    assert sorted(written) == sorted(built.good)  # exactly the good ones, each once
    texts = {built.id_of(row["id"]): row.get("text") for row in rows}
    assert {k: texts[k] for k, v in built.good.items() if v is not None} == {
        k: v for k, v in built.good.items() if v is not None}
    assert quality["examples"] == {kind.reason: [
        {"origin": origin(file, row), "field": kind.field} for file, row in built.bad[:3]]}


@pytest.mark.parametrize(("kind", "fmt"), ROW_PARAMS)
def test_bad_row_fails_naming_file_row_and_field(tmp_path, kind, fmt):
    built = kind.build(tmp_path, fmt)
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        preprocess(out, *built.overrides, "data.on_bad_row=fail", wrap=built.wrap)
    err, (file, row) = info.value, built.bad[0]
    assert (str(err.file), err.row, err.field, err.reason) == (file, row, kind.field, kind.reason)
    message = str(err)
    assert f"file {file}" in message and f"field '{kind.field}'" in message
    assert kind.reason in message
    if row is not None:
        assert f"row {row}," in message
    assert_nothing_written(out)


# ---------------------------------------------------------------------------------------------
# kept but changed: counted in `modified`, never rejected, the same with on_bad_row=fail


def _long_texts(tmp: Path) -> tuple[Built, dict[str, int], Callable[[list[dict]], None]]:
    long = " ".join(f"word{i}" for i in range(40))
    build = manifest_kind("long", "", "", [{"id": "long3", "text": long},
                                           {"id": "long10", "text": long}],
                          options=("data.max_text_tokens=8",)).build
    built = build(tmp, "csv")
    built.good.update({"long3": long, "long10": long})  # kept, with the text as written

    def check(rows: list[dict]) -> None:
        lengths = {row["id"]: len(row["tokens"]) for row in rows}
        assert lengths["long3"] == lengths["long10"] == 8
        assert max(lengths.values()) == 8

    return built, {"text_truncated": 2}, check


def _replaced_bytes(tmp: Path) -> tuple[Built, dict[str, int], Callable[[list[dict]], None]]:
    files, good = good_reviews()
    files.update({"train/neg/90_2.txt": b"caf\xe9 au lait", "test/pos/91_9.txt": b"\xff\xfe ok"})
    write_imdb(tmp, files)
    good.update({"train-neg-90_2": "caf\ufffd au lait", "test-pos-91_9": "\ufffd\ufffd ok"})
    built = Built([opt("data.source", "imdb"), opt("data.path", str(tmp)),
                   "data.encoding_errors=replace"], good, [])
    return built, {"undecodable_text_replaced": 2}, lambda rows: None


@pytest.mark.parametrize("on_bad_row", ["skip", "fail"])
@pytest.mark.parametrize("make", [_long_texts, _replaced_bytes],
                         ids=["text_over_max_text_tokens", "undecodable_review_replaced"])
def test_changed_rows_are_kept_and_counted(tmp_path, make, on_bad_row):
    built, modified, check = make(tmp_path)
    out = tmp_path / "out"
    quality = preprocess(out, *built.overrides, f"data.on_bad_row={on_bad_row}")
    rows = check_report(quality, out)
    assert quality["rejected"] == {} and quality["examples"] == {}
    assert quality["modified"] == modified
    assert quality["rows_kept"] == quality["rows_in"] == len(built.good)
    assert {row["id"]: row["text"] for row in rows} == built.good
    check(rows)


# ---------------------------------------------------------------------------------------------
# file-, dataset- and config-level kinds: one error naming the file (key, split), nothing written


@dataclass
class Setup:
    overrides: list[str]
    names: list[str]  # must all appear in the error message
    config_file: Path | None = None


@dataclass(frozen=True)
class FileKind:
    name: str
    error: type[Exception]
    reason: str | None  # DataError.reason; None for config errors
    build: Callable[[Path], Setup]
    marks: tuple = ()


def _mnist(tmp: Path, gz: bool = False) -> tuple[Path, list[str]]:
    folder = tmp / "mnist"
    write_idx_mnist(folder, 12, 4, gz=gz, size=4)
    return folder, [opt("data.source", "mnist"), opt("data.path", str(folder))]


def idx_truncated(tmp: Path) -> Setup:
    folder, overrides = _mnist(tmp)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    return Setup(overrides, [str(path), "truncated", "208 bytes, found 203"])


def idx_truncated_gz(tmp: Path) -> Setup:
    folder, overrides = _mnist(tmp, gz=True)
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-5]))
    return Setup(overrides, [str(path), "truncated"])


def idx_longer_than_header(tmp: Path) -> Setup:
    folder, overrides = _mnist(tmp)
    path = folder / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00\x01")
    return Setup(overrides, [str(path), "longer than its header says"])


def idx_count_mismatch(tmp: Path) -> Setup:
    folder, overrides = _mnist(tmp)
    labels = write_bytes(folder / "t10k-labels-idx1-ubyte", idx_bytes(np.zeros(3, np.uint8)))
    return Setup(overrides, [str(folder / "t10k-images-idx3-ubyte"), str(labels),
                             "4 images", "3 labels"])


def idx_bad_magic(tmp: Path) -> Setup:
    folder, overrides = _mnist(tmp)
    path = write_bytes(folder / "train-images-idx3-ubyte", idx_bytes(np.zeros(12, np.uint8)))
    return Setup(overrides, [str(path), "bad magic number 2049, expected 2051"])


def idx_missing_file(tmp: Path) -> Setup:
    folder, overrides = _mnist(tmp)
    (folder / "train-labels-idx1-ubyte").unlink()
    return Setup(overrides, [str(folder / "train-labels-idx1-ubyte")])


def _damaged_gzip(how: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        folder, overrides = _mnist(tmp, gz=True)
        path = folder / "train-images-idx3-ubyte.gz"
        data = bytearray(path.read_bytes())
        if how == "flipped":
            data[len(data) // 2: len(data) // 2 + 8] = bytes(8)
        elif how == "cut":
            data = data[:-6]
        else:
            data = bytearray(idx_bytes(np.zeros((12, 4, 4), np.uint8)))  # plain bytes, .gz name
        path.write_bytes(bytes(data))
        return Setup(overrides, [str(path), "cannot read"])

    return build


def _manifest_opts(path: Path, *more: str) -> list[str]:
    return [opt("data.source", "manifest"), opt("data.path", str(path)), *more]


def manifest_missing(tmp: Path) -> Setup:
    path = tmp / "data" / "nowhere.csv"
    return Setup(_manifest_opts(path), [str(path), "not found"])


def manifest_header_only(tmp: Path) -> Setup:
    path = tmp / "manifest.csv"
    path.write_text("id,label,image_path,text\n")
    return Setup(_manifest_opts(path), [str(path), "no rows"])


def manifest_parquet_no_rows(tmp: Path) -> Setup:
    path = tmp / "manifest.parquet"
    pq.write_table(pa.table({name: pa.array([], pa.string())
                             for name in ("id", "label", "image_path", "text")}), path)
    return Setup(_manifest_opts(path), [str(path), "no rows"])


def manifest_zero_bytes(tmp: Path) -> Setup:
    path = tmp / "manifest.csv"
    path.write_bytes(b"")
    return Setup(_manifest_opts(path), [str(path), "cannot read"])


def manifest_not_parquet(tmp: Path) -> Setup:
    path = tmp / "manifest.parquet"
    path.write_bytes(b"PAR1 this is not a Parquet file PAR1")
    return Setup(_manifest_opts(path), [str(path), "cannot read"])


def manifest_without_label_column(tmp: Path) -> Setup:
    rows, _ = good_manifest_rows(tmp / "data")
    path = write_manifest(tmp / "data", [{k: v for k, v in r.items() if k != "label"}
                                         for r in rows])
    return Setup(_manifest_opts(path), [str(path), "missing required column 'label'"])


def manifest_no_readable_image(tmp: Path) -> Setup:
    rows = [{"id": f"r{i}", "label": CLASSES[i % 2], "image_path": f"img/none{i}.png"}
            for i in range(6)]
    path = write_manifest(tmp / "data", rows)
    return Setup(_manifest_opts(path), [str(path), "image_path", "data.image_size"])


def manifest_all_rows_bad(tmp: Path) -> Setup:
    rows, _ = good_manifest_rows(tmp / "data")
    path = write_manifest(tmp / "data", [{**row, "text": " "} for row in rows])
    return Setup(_manifest_opts(path), ["no usable rows", "12 rows in, 0 kept",
                                        "empty_text: 12"])


def imdb_no_reviews(tmp: Path) -> Setup:
    root = write_imdb(tmp, {})
    return Setup([opt("data.source", "imdb"), opt("data.path", str(tmp))],
                 [str(root), "no review files"])


def imdb_missing_class_folder(tmp: Path) -> Setup:
    root = write_imdb(tmp, {"train/pos/1_8.txt": "fine"})
    (root / "test/neg").rmdir()
    return Setup([opt("data.source", "imdb"), opt("data.path", str(tmp))],
                 [str(root / "test/neg"), "missing folder test/neg"])


def split_without_samples(tmp: Path) -> Setup:
    # 2 rows per class: round(0.15 * 2) == 0 val rows per class
    rows, _ = good_manifest_rows(tmp / "data")
    path = write_manifest(tmp / "data", rows[:4])
    return Setup(_manifest_opts(path), ["split 'val' has no samples"])


def class_absent_from_train(tmp: Path) -> Setup:
    rows, _ = good_manifest_rows(tmp / "data", split=True)
    for row in rows:
        if row["label"] == "dog":
            row["split"] = "test"
    path = write_manifest(tmp / "data", rows)
    return Setup(_manifest_opts(path), ["absent from the train split", "['dog']"])


def declared_class_never_seen(tmp: Path) -> Setup:
    rows, _ = good_manifest_rows(tmp / "data")
    path = write_manifest(tmp / "data", rows)
    return Setup(_manifest_opts(path, "data.classes=[cat, dog, bird]"),
                 ["absent from the train split", "['bird']"])


def manifest_without_path(tmp: Path) -> Setup:
    return Setup(["data.source=manifest"], ["data.path"])


def _config(overrides: list[str], key: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        return Setup(overrides, [key])

    return build


def config_file_unknown_key(tmp: Path) -> Setup:
    path = tmp / "config.yaml"
    path.write_text("data:\n  source: digits\n  on_bad_rows: skip\n")
    return Setup([], [str(path), "data.on_bad_rows"], config_file=path)


def config_file_not_yaml(tmp: Path) -> Setup:
    path = tmp / "config.yaml"
    path.write_text("data: [source: digits\n")
    return Setup([], [str(path), "cannot read config"], config_file=path)


FILE_KINDS = [
    FileKind("idx_truncated", DataError, "truncated_file", idx_truncated),
    FileKind("idx_truncated_gz", DataError, "truncated_file", idx_truncated_gz),
    FileKind("idx_longer_than_header", DataError, "bad_length", idx_longer_than_header),
    FileKind("idx_count_mismatch", DataError, "count_mismatch", idx_count_mismatch),
    FileKind("idx_bad_magic", DataError, "bad_magic", idx_bad_magic),
    FileKind("idx_missing_file", DataError, "missing_file", idx_missing_file),
    FileKind("idx_corrupt_gzip_flipped", DataError, "unreadable_file", _damaged_gzip("flipped")),
    FileKind("idx_corrupt_gzip_cut", DataError, "unreadable_file", _damaged_gzip("cut")),
    FileKind("idx_gz_not_gzip", DataError, "unreadable_file", _damaged_gzip("plain")),
    FileKind("manifest_missing", DataError, "missing_file", manifest_missing),
    FileKind("manifest_header_only", DataError, "empty_dataset", manifest_header_only),
    FileKind("manifest_parquet_no_rows", DataError, "empty_dataset", manifest_parquet_no_rows),
    FileKind("manifest_zero_bytes", DataError, "unreadable_manifest", manifest_zero_bytes),
    FileKind("manifest_not_parquet", DataError, "unreadable_manifest", manifest_not_parquet),
    FileKind("manifest_without_label_column", DataError, "missing_column",
             manifest_without_label_column),
    FileKind("manifest_no_readable_image", DataError, "no_readable_image",
             manifest_no_readable_image),
    FileKind("all_rows_bad", DataError, "empty_dataset", manifest_all_rows_bad),
    FileKind("imdb_no_reviews", DataError, "empty_dataset", imdb_no_reviews),
    FileKind("imdb_missing_class_folder", DataError, "missing_folder", imdb_missing_class_folder),
    FileKind("split_without_samples", DataError, "empty_split", split_without_samples),
    FileKind("class_absent_from_train", DataError, "class_absent_from_train",
             class_absent_from_train),
    FileKind("declared_class_never_seen", DataError, "class_absent_from_train",
             declared_class_never_seen),
    FileKind("manifest_without_path", DataError, None, manifest_without_path),
    FileKind("config_unknown_key", ConfigError, None,
             _config(["data.colour=red"], "data.colour")),
    FileKind("config_unknown_key_in_file", ConfigError, None, config_file_unknown_key),
    FileKind("config_file_not_yaml", ConfigError, None, config_file_not_yaml),
    FileKind("config_wrong_type_int", ConfigError, None,
             _config(["data.batch_rows=many"], "data.batch_rows")),
    FileKind("config_wrong_type_list", ConfigError, None,
             _config(["data.classes=cat"], "data.classes")),
    FileKind("config_wrong_type_bool", ConfigError, None,
             _config(["data.lowercase=[1, 2]"], "data.lowercase")),
    FileKind("config_value_not_a_choice", ConfigError, None,
             _config(["data.on_bad_row=ignore"], "data.on_bad_row")),
    FileKind("config_value_out_of_range", ConfigError, None,
             _config(["data.max_text_tokens=0"], "data.max_text_tokens")),
]


@pytest.mark.parametrize("kind", [pytest.param(k, id=k.name, marks=k.marks) for k in FILE_KINDS])
def test_bad_file_dataset_or_config_is_one_error_naming_it(tmp_path, kind):
    setup = kind.build(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(kind.error) as info:
        preprocess(out, *setup.overrides, config_file=setup.config_file)
    if kind.error is DataError:
        assert info.value.reason == kind.reason
    for name in setup.names:
        assert name in str(info.value)
    assert_nothing_written(out)


# ---------------------------------------------------------------------------------------------
# property: random mixes of good and bad manifest rows


MIXED_BAD = [  # (reason, change to a row; None = the id of an earlier good row)
    ("corrupt_image", {"image_path": "img/bad.png"}),
    ("corrupt_image", {"image_path": "img/cut.png"}),
    ("wrong_image_size", {"image_path": "img/big.png"}),
    ("missing_image_file", {"image_path": "img/nope.png"}),
    ("path_escapes_manifest_folder", {"image_path": "../outside.png"}),
    ("missing_image", {"image_path": None}),
    ("empty_text", {"text": "  "}),
    ("missing_label", {"label": None}),
    ("unknown_class", {"label": "bird"}),
    ("label_out_of_range", {"label": "5"}),
    ("missing_id", {"id": None}),
    ("duplicate_id", None),
]
FIELD_OF = {"corrupt_image": "image_path", "missing_image_file": "image_path",
            "path_escapes_manifest_folder": "image_path", "wrong_image_size": "image",
            "missing_image": "image", "empty_text": "text", "missing_label": "label",
            "unknown_class": "label", "label_out_of_range": "label", "missing_id": "id",
            "duplicate_id": "id"}


@pytest.mark.parametrize("seed", range(5))
def test_random_mix_of_good_and_bad_rows(tmp_path, seed):
    rng = np.random.default_rng(seed)
    folder = tmp_path / "data"
    (folder / "img").mkdir(parents=True)
    _corrupt_images(folder)
    _truncated_images(folder)
    _odd_sized_images(folder)
    _outside_image(folder)
    n_rows = 30
    bad_at = set(rng.choice(np.arange(1, n_rows), int(rng.integers(6, 13)), replace=False))
    rows, good_ids, expected = [], [], Counter()
    examples: dict[str, list[int]] = {}
    for i in range(n_rows):  # row 0 is good: the first readable image fixes the size
        if i in bad_at:
            reason, change = MIXED_BAD[int(rng.integers(len(MIXED_BAD)))]
            if change is None:
                change = {"id": str(rng.choice(good_ids))}
            row = {"id": f"x{i}", "label": "cat", "image_path": "img/p0.png", "text": "bad",
                   **change}
            expected[reason] += 1
            examples.setdefault(reason, []).append(i + 1)
        else:
            label = CLASSES[len(good_ids) % 2]
            image = f"img/p{i}.png"
            write_image(folder / image, random_pixels(100 * seed + i, SIZE))
            row = {"id": f"p{i}", "label": label, "image_path": image, "text": f"a {label} {i}"}
            good_ids.append(row["id"])
        rows.append(row)
    path = write_manifest(folder, rows, ("csv", "parquet")[seed % 2])
    out = tmp_path / "out"
    quality = preprocess(out, *_manifest_opts(path, "data.classes=[cat, dog]"),
                         f"data.batch_rows={(3, 7, 30)[seed % 3]}")
    kept = check_report(quality, out)
    assert quality["rows_in"] == n_rows
    assert quality["rejected"] == dict(expected)
    assert sorted(row["id"] for row in kept) == sorted(good_ids)
    assert quality["examples"] == {
        reason: [{"origin": f"{path}:{n}", "field": FIELD_OF[reason]} for n in numbers[:3]]
        for reason, numbers in examples.items()}


# ---------------------------------------------------------------------------------------------
# a file damaged between the two passes: the error leaves nothing behind


class OnSecondPass:
    """A real source; `change` runs once, as the second (writing) pass starts reading."""

    def __init__(self, source: Source, change: Callable[[], None]):
        self.source, self.change, self.passes = source, change, 0
        self.info = source.info

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        self.passes += 1
        if self.passes == 2:
            self.change()
        yield from self.source.batches(batch_rows)


def test_idx_file_truncated_between_passes_leaves_nothing_behind(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_mnist(folder, 30, 8, gz=True, size=4, n_classes=2)
    path = folder / "train-images-idx3-ubyte.gz"

    def truncate() -> None:  # the last train record goes missing after pass 1
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-16]))

    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        preprocess(out, "data.source=mnist", opt("data.path", str(folder)),
                   wrap=lambda source: OnSecondPass(source, truncate))
    assert str(path) in str(info.value)
    assert out.is_dir()  # pass 2 had opened its temporary files in it
    assert_nothing_written(out)


def _image_corrupted_between_passes(tmp_path: Path) -> tuple[Path, Path, Callable]:
    rows, _ = good_manifest_rows(tmp_path / "data")
    path = write_manifest(tmp_path / "data", rows)

    def corrupt() -> None:
        (tmp_path / "data/img/g10.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")

    return path, tmp_path / "out", corrupt


def test_image_corrupted_between_passes_leaves_nothing_behind(tmp_path):
    path, out, corrupt = _image_corrupted_between_passes(tmp_path)
    with pytest.raises(DataError):
        preprocess(out, *_manifest_opts(path), wrap=lambda source: OnSecondPass(source, corrupt))
    assert out.is_dir()
    assert_nothing_written(out)


# ---------------------------------------------------------------------------------------------
# bugs found while writing this file, fixed since: each test failed before its fix


def test_image_corrupted_between_passes_is_a_data_error(tmp_path):
    path, out, corrupt = _image_corrupted_between_passes(tmp_path)
    with pytest.raises(DataError) as info:
        preprocess(out, *_manifest_opts(path), wrap=lambda source: OnSecondPass(source, corrupt))
    assert str(path) in str(info.value) or "g10.png" in str(info.value)


def test_no_usable_rows_error_names_the_file(tmp_path):
    setup = manifest_all_rows_bad(tmp_path)
    with pytest.raises(DataError) as info:
        preprocess(tmp_path / "out", *setup.overrides)
    path = tmp_path / "data" / "manifest.csv"
    assert str(path) in str(info.value)


@pytest.mark.parametrize("declared", [True, False], ids=["classes_declared", "classes_inferred"])
@pytest.mark.parametrize("label", ["--1", "²"])
def test_label_that_only_looks_like_an_integer(tmp_path, label, declared):
    folder = tmp_path / "data"
    rows, _ = good_manifest_rows(folder)
    if not declared:
        rows = [{**row, "label": str(CLASSES.index(row["label"]))} for row in rows]
    rows.insert(5, {**rows[0], "id": "odd", "label": label})
    path = write_manifest(folder, rows)
    options = ["data.classes=[cat, dog]"] if declared else []
    quality = preprocess(tmp_path / "out", *_manifest_opts(path, *options))
    check_report(quality, tmp_path / "out")
    if declared:
        assert quality["rejected"] == {"unknown_class": 1}


def test_csv_row_with_too_many_fields_is_not_silently_cut(tmp_path):
    rows, good = good_manifest_rows(tmp_path / "data")
    path = write_manifest(tmp_path / "data", rows)
    lines = path.read_text().splitlines()
    lines[6] = lines[6].replace("a photo of", "a photo, of")  # data row 6: g5
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    try:
        quality = preprocess(out, *_manifest_opts(path))
    except DataError as err:  # a whole-file error naming the file is one acceptable fix
        assert str(path) in str(err)
        assert_nothing_written(out)
        return
    rows_out = check_report(quality, out)  # a rejected row is the other
    assert quality["rows_rejected"] == 1
    assert "g5" not in {row["id"] for row in rows_out}


@pytest.mark.parametrize("encoding_errors", ["replace", "fail"])
def test_undecodable_bytes_in_a_csv_manifest_follow_encoding_errors(tmp_path, encoding_errors):
    rows, _ = good_manifest_rows(tmp_path / "data")
    path = write_manifest(tmp_path / "data", rows)
    path.write_bytes(path.read_bytes().replace(b"a photo of a dog number 5",
                                               b"a caf\xe9 photo of a dog"))
    out = tmp_path / "out"
    quality = preprocess(out, *_manifest_opts(path, f"data.encoding_errors={encoding_errors}"))
    check_report(quality, out)
    if encoding_errors == "replace":
        assert quality["rows_kept"] == N_GOOD
        assert quality["modified"].get("undecodable_text_replaced") == 1
    else:
        assert quality["rejected"] == {"undecodable_text": 1}
        assert quality["examples"]["undecodable_text"][0]["origin"] == f"{path}:6"


def test_replaced_count_respects_limit(tmp_path):
    files, _ = good_reviews()
    files.update({f"test/pos/{90 + i}_9.txt": b"caf\xe9" for i in range(3)})
    write_imdb(tmp_path, files)
    # source order: train/neg 5, train/pos 5, test/neg 2, test/pos 2 + 3 undecodable
    out = tmp_path / "out"
    quality = preprocess(out, "data.source=imdb", opt("data.path", str(tmp_path)),
                         "data.limit=15")  # cuts after the first undecodable review
    check_report(quality, out)
    assert quality["rows_in"] == 15
    assert quality["modified"]["undecodable_text_replaced"] == 1

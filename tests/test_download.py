"""mmcore.data.download against a real HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mmcore.data import download as dl
from mmcore.data.download import (
    ChecksumError,
    DownloadError,
    IncompleteDownloadError,
    UnsafeArchiveError,
    download_dataset,
    download_file,
    extract_tar,
    parse_checksum,
)

PAYLOAD = bytes(range(256)) * 40  # 10 KiB, several chunks at chunk_size=1024
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
OPTS = {"progress": False, "chunk_size": 1024, "timeout": 5.0}


class Server:
    """A tiny file server; `files` maps a name to bytes, `hits` records (path, Range header)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {"data.bin": PAYLOAD}
        self.hits: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        """Root URL of the server."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, mode: str, name: str = "data.bin") -> str:
        """URL of `name` served in `mode` (files, cutoff, norange, corrupt, missing)."""
        return f"{self.base}/{mode}/{name}"

    def count(self, name: str = "data.bin") -> int:
        """How many requests asked for `name`."""
        with self.lock:
            return sum(path.endswith("/" + name) for path, _ in self.hits)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                """Keep test output quiet."""

            def do_GET(self) -> None:
                """Serve /<mode>/<name> with the behaviour `mode` names."""
                rng = self.headers.get("Range")
                with server.lock:
                    server.hits.append((self.path, rng))
                _, mode, name = self.path.split("/", 2)
                body = server.files.get(name)
                if mode == "missing" or body is None:
                    self.send_error(404, "Not Found")
                    return
                if mode == "corrupt":
                    body = body[::-1]
                if mode == "norange":
                    rng = None
                if mode == "cutoff" and rng is None:  # promise all, send half, hang up
                    self._send(200, body, len(body), send=len(body) // 2)
                    self.close_connection = True
                    return
                if rng:
                    start = int(rng.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    extra = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
                    self._send(206, body[start:], len(body) - start, **extra)
                    return
                self._send(200, body, len(body))

            def _send(self, status: int, body: bytes, length: int, send: int | None = None,
                      **headers: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(length))
                for key, value in headers.items():
                    self.send_header(key.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(body[: len(body) if send is None else send])
                self.wfile.flush()

        return Handler


@pytest.fixture(scope="module")
def module_server() -> Iterator[Server]:
    server = Server()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=5)


@pytest.fixture
def server(module_server: Server) -> Server:
    module_server.hits.clear()
    module_server.files = {"data.bin": PAYLOAD}
    return module_server


def test_good_file_downloads_and_verifies(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "data.bin"
    assert download_file(server.url("files"), dest, PAYLOAD_SHA, **OPTS) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("data.bin.part").exists()


def test_md5_prefixed_checksum_is_accepted(server: Server, tmp_path: Path) -> None:
    md5 = "md5:" + hashlib.md5(PAYLOAD).hexdigest()
    assert download_file(server.url("files"), tmp_path / "d", md5, **OPTS).read_bytes() == PAYLOAD


def test_parse_checksum_rejects_garbage() -> None:
    assert parse_checksum("SHA256:" + PAYLOAD_SHA.upper()) == ("sha256", PAYLOAD_SHA)
    with pytest.raises(ValueError, match="malformed"):
        parse_checksum("sha256:abc")
    with pytest.raises(ValueError, match="unknown hash"):
        parse_checksum("nope:abc")


def test_cut_off_keeps_part_and_rerun_resumes(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    part = tmp_path / "data.bin.part"
    with pytest.raises(IncompleteDownloadError, match="kept .*rerun resumes"):
        download_file(server.url("cutoff"), dest, PAYLOAD_SHA, **OPTS)
    assert not dest.exists()
    assert part.read_bytes() == PAYLOAD[: len(PAYLOAD) // 2]

    download_file(server.url("cutoff"), dest, PAYLOAD_SHA, **OPTS)
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert server.hits[-1][1] == f"bytes={len(PAYLOAD) // 2}-"


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes from some other file")
    download_file(server.url("norange"), tmp_path / "data.bin", PAYLOAD_SHA, **OPTS)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert server.hits[-1][1] is not None  # we asked to resume; the server said 200


def test_part_longer_than_file_restarts(server: Server, tmp_path: Path) -> None:
    (tmp_path / "data.bin.part").write_bytes(b"x" * (len(PAYLOAD) + 5))
    download_file(server.url("files"), tmp_path / "data.bin", PAYLOAD_SHA, **OPTS)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert [r for _, r in server.hits] == [f"bytes={len(PAYLOAD) + 5}-", None]


def test_wrong_checksum_raises_and_leaves_nothing(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    with pytest.raises(ChecksumError) as info:
        download_file(server.url("corrupt"), dest, PAYLOAD_SHA, **OPTS)
    message = str(info.value)
    assert "data.bin" in message and PAYLOAD_SHA in message
    assert hashlib.sha256(PAYLOAD[::-1]).hexdigest() in message
    assert list(tmp_path.iterdir()) == []


def test_404_names_the_url(server: Server, tmp_path: Path) -> None:
    url = server.url("missing")
    with pytest.raises(DownloadError, match="404") as info:
        download_file(url, tmp_path / "data.bin", PAYLOAD_SHA, **OPTS)
    assert url in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="cannot reach http://127.0.0.1:9/x"):
        download_file("http://127.0.0.1:9/x", tmp_path / "x", PAYLOAD_SHA, **OPTS)


def test_present_correct_file_is_skipped(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(PAYLOAD)
    download_file(server.url("files"), dest, PAYLOAD_SHA, **OPTS)
    assert server.count() == 0


def test_present_wrong_file_is_redownloaded_and_reported(
        server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"tampered")
    with caplog.at_level(logging.WARNING, logger=dl.__name__):
        download_file(server.url("files"), dest, PAYLOAD_SHA, **OPTS)
    assert dest.read_bytes() == PAYLOAD and server.count() == 1
    assert "downloading it again" in caplog.text


def _targz(members: dict[str, bytes], *, link: tuple[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize("evil", [
    {"members": {"aclImdb/ok.txt": b"ok", "../evil": b"pwned"}},
    {"members": {"aclImdb/ok.txt": b"ok", "aclImdb/../../evil": b"pwned"}},
    {"members": {"aclImdb/ok.txt": b"ok"}, "link": ("aclImdb/evil", "../../evil")},
])
def test_archive_escaping_dest_is_rejected(tmp_path: Path, evil: dict) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_targz(evil["members"], link=evil.get("link")))
    into = tmp_path / "out"
    into.mkdir()
    with pytest.raises(UnsafeArchiveError, match="evil"):
        extract_tar(archive, into, "aclImdb")
    assert list(into.iterdir()) == []  # nothing extracted, temp folder cleaned up
    assert not (tmp_path / "evil").exists()


def test_download_dataset_fake_mnist(server: Server, tmp_path: Path) -> None:
    names = list(dl.DATASETS["mnist"])
    server.files = {name: name.encode() * 50 for name in names}
    urls = {name: server.url("files", name) for name in names}
    sums = {name: hashlib.sha256(server.files[name]).hexdigest() for name in names}
    paths = download_dataset("mnist", tmp_path, urls=urls, checksums=sums, **OPTS)
    assert paths == [tmp_path / name for name in names]
    assert all(p.read_bytes() == server.files[p.name] for p in paths)
    hits = len(server.hits)
    assert download_dataset("mnist", tmp_path, urls=urls, checksums=sums, **OPTS) == paths
    assert len(server.hits) == hits  # all present and verified: no requests


def test_download_dataset_fake_imdb_extracts(server: Server, tmp_path: Path) -> None:
    blob = _targz({"aclImdb/train/pos/0_9.txt": b"great", "aclImdb/README": b"hi"})
    server.files = {"aclImdb_v1.tar.gz": blob}
    name = "aclImdb_v1.tar.gz"
    paths = download_dataset("imdb", tmp_path, urls={name: server.url("files", name)},
                             checksums={name: hashlib.sha256(blob).hexdigest()}, **OPTS)
    assert paths == [tmp_path / name, tmp_path / "aclImdb"]
    assert (tmp_path / "aclImdb/train/pos/0_9.txt").read_bytes() == b"great"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_download_dataset_rejects_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        download_dataset("cifar", tmp_path)
    with pytest.raises(ValueError, match="not in mnist"):
        download_dataset("mnist", tmp_path, urls={"typo.gz": "http://127.0.0.1:9/"})


def test_registry_checksums_are_well_formed() -> None:
    for files in dl.DATASETS.values():
        for url, checksum in files.values():
            assert url.startswith("https://")
            parse_checksum(checksum)
    for checksum in dl.MNIST_MD5.values():
        parse_checksum(checksum)


def test_text_progress_bar_renders_bytes_and_percent() -> None:
    out = io.StringIO()
    bar = dl._TextProgress("f.gz", total=2 << 20, done=0, stream=out)
    bar.update(1 << 20)
    bar.close()
    assert "f.gz: 1.0/2.0 MiB (50%)" in out.getvalue()


def test_no_progress_output_when_stderr_is_not_a_tty(
        server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    download_file(server.url("files"), tmp_path / "d", PAYLOAD_SHA,
                  progress=True, chunk_size=1024, timeout=5.0)
    assert capsys.readouterr().err == ""

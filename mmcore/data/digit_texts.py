"""Seeded English descriptions of digits, some deliberately unhelpful.

The built-in dataset pairs each digit image with one of these texts. A configurable share is
uninformative ("a scanned digit"), ambiguous ("a 1 or a 7") or wrong (names another digit), so
that text alone is not perfect and fusing it with the image has something to win.
"""

from __future__ import annotations

import numpy as np

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
INFORMATIVE = [
    "a handwritten {w}",
    "the digit {d}",
    "{w}, slightly slanted",
    "a neat {w}",
    "the number {w}",
    "a {w} written quickly",
    "a bold {d}",
    "{w} in thin ink",
    "a small {w}",
    "digit {d}, hand drawn",
]
UNINFORMATIVE = [
    "a scanned digit",
    "a handwritten number",
    "some ink on paper",
    "a digit",
    "a character from a form",
]
AMBIGUOUS = ["a {a} or a {b}", "either {a} or {b}", "looks like {a} or {b}"]
# Digits that people (and classifiers) confuse; the ambiguous partner of each digit.
CONFUSABLE = {0: 6, 1: 7, 2: 7, 3: 8, 4: 9, 5: 6, 6: 5, 7: 1, 8: 3, 9: 4}
KINDS = ("informative", "uninformative", "ambiguous", "wrong")


def _fill(template: str, digit: int) -> str:
    return template.format(w=WORDS[digit], d=digit)


def generate_digit_texts(
    labels: np.ndarray, *, uninformative: float, ambiguous: float, wrong: float, seed: int
) -> tuple[list[str], list[str]]:
    """One text per label, and the kind of each text (one of KINDS)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    draw = rng.random(n)
    kinds = np.select(
        [draw < uninformative, draw < uninformative + ambiguous,
         draw < uninformative + ambiguous + wrong],
        ["uninformative", "ambiguous", "wrong"],
        default="informative",
    )
    picks = rng.integers(0, 1 << 30, size=(n, 2))
    texts = []
    for label, kind, (p0, p1) in zip(labels.tolist(), kinds.tolist(), picks.tolist(),
                                         strict=True):
        if kind == "uninformative":
            text = UNINFORMATIVE[p0 % len(UNINFORMATIVE)]
        elif kind == "ambiguous":
            pair = [label, CONFUSABLE[label]]
            if p1 % 2:
                pair.reverse()
            text = AMBIGUOUS[p0 % len(AMBIGUOUS)].format(a=pair[0], b=pair[1])
        elif kind == "wrong":
            other = (label + 1 + p1 % 9) % 10
            text = _fill(INFORMATIVE[p0 % len(INFORMATIVE)], other)
        else:
            text = _fill(INFORMATIVE[p0 % len(INFORMATIVE)], label)
        texts.append(text)
    return texts, kinds.tolist()

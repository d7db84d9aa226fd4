"""Long texts: truncate at the model's limit, or embed every window of the text and average.

The splitting is the tokenizers library's own: with a truncation stride, an `Encoding` keeps
the rest of a long text in `encoding.overflowing`, as further windows of at most max_length
tokens (special tokens included) that each repeat the last `window_overlap(max_length)` tokens
of the window before (tokenize.py sets the stride). `window` mode runs every window through the
model and returns the normalised mean of the windows' vectors, so no token is silently lost.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from tokenizers import Encoding

LONG_TEXT = ("truncate", "window")


class TokenCounts(NamedTuple):
    """Per text: tokens the model sees (summed over windows in `window` mode), and whether the
    text was longer than the model's limit (cut in `truncate` mode, split in `window` mode)."""

    tokens: np.ndarray  # (n,) int64
    over_limit: np.ndarray  # (n,) bool


def check_mode(long_text: str) -> str:
    if long_text not in LONG_TEXT:
        raise ValueError(f"unknown long_text {long_text!r}; choose one of {LONG_TEXT}")
    return long_text


def sequences(encodings: Sequence[Encoding], long_text: str) -> tuple[list[Encoding], np.ndarray]:
    """The sequences to run through the model, and for each the index of the text it belongs to."""
    if long_text == "truncate":
        return list(encodings), np.arange(len(encodings))
    seqs: list[Encoding] = []
    owner: list[int] = []
    for i, enc in enumerate(encodings):
        for window in (enc, *enc.overflowing):
            seqs.append(window)
            owner.append(i)
    return seqs, np.asarray(owner, dtype=np.int64)


def counts(encodings: Sequence[Encoding], long_text: str) -> TokenCounts:
    seqs, owner = sequences(encodings, long_text)
    lengths = np.fromiter((len(s.ids) for s in seqs), dtype=np.int64, count=len(seqs))
    tokens = np.bincount(owner, weights=lengths, minlength=len(encodings)).astype(np.int64)
    over = np.fromiter((bool(e.overflowing) for e in encodings), dtype=bool, count=len(encodings))
    return TokenCounts(tokens, over)


def combine(vectors: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """(windows, dim) unit rows -> (n, dim): each text's normalised mean over its windows."""
    if len(owner) == n:  # no text was split: the rows are the texts' own vectors
        return vectors
    sums = np.zeros((n, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, vectors)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)

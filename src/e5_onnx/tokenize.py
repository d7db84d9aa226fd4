"""Tokenisation with `tokenizers`: explicit truncation, dynamic padding, length-sorted batches.

tokenizer.json may carry padding or truncation settings of its own (a fixed pad length,
a different max length); they are overridden at load so batches are never ragged or
over-padded and the limit is the model's real one.
"""
from __future__ import annotations

import math
from collections import abc
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from tokenizers import Encoding, Tokenizer

from . import cut, unigram
from .manifest import verified_path


def window_overlap(max_length: int) -> int:
    """Tokens shared by consecutive windows of a long text: a quarter of the limit (128 of 512)."""
    return max_length // 4


# What one onnxruntime call costs beyond its padded tokens, in tokens: E5-small INT8 on 2 cores
# takes ~3.4 ms for one 16-token text and ~0.11 ms per token in large calls, so ~1.6 ms (about 14
# tokens) per call (the "us per token of one call" grid of benchmarks/token_budget.py).
CALL_COST_TOKENS = 16


def plan(lengths: Sequence[int], batch_size: int, max_batch_tokens: int,
         call_cost: int = CALL_COST_TOKENS) -> list[int]:
    """Sizes of consecutive batches over `lengths` (sorted longest first) that minimise the padded
    tokens plus `call_cost` per batch, each within `batch_size` texts and `max_batch_tokens`
    padded tokens (always at least one text). A batch pads to its first (longest) text, so one
    long text among short ones gets a small batch of its own instead of widening them all: 12
    random queries pad to ~19 tokens each instead of ~32. Dynamic programming, O(n x batch_size)."""
    n = len(lengths)
    best = [0.0] + [math.inf] * n  # best[j]: the cheapest cost of the first j texts
    cut = [0] * (n + 1)  # cut[j]: where the last batch of that cheapest cut starts
    for j in range(1, n + 1):
        for i in range(j - 1, max(j - batch_size, 0) - 1, -1):
            k, width = j - i, lengths[i]
            if k > 1 and k * width > max_batch_tokens:
                break
            cost = best[i] + call_cost + k * width
            if cost < best[j]:
                best[j], cut[j] = cost, i
    sizes = []
    while n:
        sizes.append(n - cut[n])
        n = cut[n]
    return sizes[::-1]


class Ids(NamedTuple):
    """One sequence's token ids, without the rest of its tokenizers `Encoding` (offsets, token
    strings, overflow windows), which weighs ~20x more: what a long `encode` call keeps."""

    ids: np.ndarray  # (length,) int32


def compact(encodings: Sequence[Encoding]) -> list[Ids]:
    return [Ids(np.asarray(e.ids, dtype=np.int32)) for e in encodings]


@dataclass(frozen=True)
class Batch:
    """A padded batch and where its rows belong in the caller's input order."""

    order: np.ndarray  # (n,) indices into the input texts
    input_ids: np.ndarray  # (n, seq) int64
    attention_mask: np.ndarray  # (n, seq) int64


class Batches(abc.Sequence):
    """One call's batches as `plan` cut them, each padded when it is taken: `tokens` (padded tokens
    per batch) is known before any is."""

    def __init__(self, tokenizer: TextTokenizer, encodings: Sequence[Encoding | Ids], order: np.ndarray,
                 lengths: np.ndarray, sizes: list[int]) -> None:
        self._tokenizer, self._encodings, self._order, self._lengths = tokenizer, encodings, order, lengths
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.tokens = [n * int(lengths[order[start]]) for n, start in zip(sizes, self._starts)]

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> Batch:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        idx = self._order[self._starts[i] : self._starts[i + 1]]
        return self._tokenizer._pad([self._encodings[k] for k in idx], idx, int(self._lengths[idx[0]]))


class TextTokenizer:
    def __init__(self, tokenizer: Tokenizer, max_length: int, pad_id: int, *, local: bool | None = None) -> None:
        tokenizer.no_padding()
        # The stride only shapes `Encoding.overflowing` (the rest of a long text, as overlapping
        # windows: windows.py); the first max_length tokens, which truncation keeps, are unchanged.
        tokenizer.enable_truncation(max_length=max_length, stride=window_overlap(max_length))
        self._tok = tokenizer
        self.max_length = max_length
        self.pad_id = pad_id
        self._cuttable = local  # cut.is_local, worked out when a text first needs it if not given

    @classmethod
    def from_str(cls, tokenizer_json: str, max_length: int, pad_id: int) -> TextTokenizer:
        return cls(Tokenizer.from_str(tokenizer_json), max_length, pad_id)

    @classmethod
    def from_file(cls, path: Path, max_length: int, pad_id: int) -> TextTokenizer:
        """Parsed from disk by `tokenizers`: a Python copy of the file would add 60 MB to peak
        RSS and ~0.15 s to the load for the 17 MB XLM-R tokenizer.json."""
        return cls(Tokenizer.from_file(str(path)), max_length, pad_id)

    @classmethod
    def from_compact(cls, path: Path, max_length: int, pad_id: int) -> TextTokenizer:
        """The same tokenizer from an export's tokenizer_unigram.npz (unigram.py): for
        multilingual-e5-small ~0.14 s of CPU and ~60 MB instead of ~0.85 s and ~280 MB."""
        tokenizer, local = unigram.load(path)
        return cls(tokenizer, max_length, pad_id, local=local)

    @classmethod
    def from_export(cls, model_dir: Path, manifest: dict) -> TextTokenizer:
        """An export's tokenizer, each file checked against its manifest: the compact Unigram
        file if the export has one, else tokenizer.json (exports written before it, WordPiece)."""
        limit, pad_id = manifest["max_length"], manifest["pad_token_id"]
        if unigram.COMPACT in manifest["files"]:
            return cls.from_compact(verified_path(model_dir, manifest, unigram.COMPACT), limit, pad_id)
        return cls.from_file(verified_path(model_dir, manifest, "tokenizer.json"), limit, pad_id)

    def encode(self, texts: Sequence[str], *, head_only: bool = False) -> list[Encoding]:
        """Encodings truncated at max_length. `head_only`: a huge text is first cut to a prefix that
        provably gives the same encoding (cut.py), so it costs its first tokens, not its length;
        `overflowing` then holds the prefix's rest only (still non-empty exactly when truncated)."""
        texts = list(texts)
        if head_only and any(len(t) > self.max_length * cut.CHARS_PER_TOKEN for t in texts):
            if self._cuttable is None:
                self._cuttable = cut.is_local(self._tok)
            if self._cuttable:
                texts = [cut.head(self._tok, t, self.max_length) for t in texts]
        return self._tok.encode_batch(texts, add_special_tokens=True)

    def batches(
        self, texts: Sequence[str], batch_size: int, max_batch_tokens: int
    ) -> Batches:
        """Group texts of similar token length; each batch pads to its own longest text.

        A batch holds at most `batch_size` texts and at most `max_batch_tokens`
        padded tokens (always at least one text): onnxruntime's attention keeps a
        batch x heads x length x length score tensor, so the token budget is what bounds memory.
        """
        return self.batch_encodings(self.encode(texts), batch_size, max_batch_tokens)

    def batch_encodings(
        self, encodings: Sequence[Encoding | Ids], batch_size: int, max_batch_tokens: int
    ) -> Batches:
        """`batches` for texts already tokenised (or windows of them, or their `compact` ids):
        longest first, cut by `plan`, each padded when it is taken."""
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(-lengths, kind="stable")
        return Batches(self, encodings, order, lengths, plan(lengths[order].tolist(), batch_size, max_batch_tokens))

    def _pad(self, encodings: list[Encoding | Ids], order: np.ndarray, width: int) -> Batch:
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
        return Batch(order=order, input_ids=ids, attention_mask=mask)

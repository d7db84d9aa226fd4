"""A SentencePiece Unigram tokenizer loaded from a compact file instead of its 17 MB tokenizer.json.

`tokenizers` builds a Unigram model's vocabulary into a byte trie with a hash map per node:
for multilingual-e5-small's 250,002 pieces (2.6 MB of text, 782,760 trie nodes) that is ~250 MB
resident and ~0.6 s of CPU, whatever the input format (`models.Unigram` built from Python lists
costs the same). Here the same `tokenizers.Tokenizer` pipeline is kept (added tokens, the
normaliser's precompiled charsmap, the pre-tokeniser, the post-processor, truncation and its
overflow windows) and only the Unigram segmentation of each pre-token runs in Python, on a dict
of the pieces: ~60 MB and ~0.14 s of CPU to load (benchmarks/README.md, "Multilingual cold start").

The segmentation is tokenizers' `Unigram::encode_optimized` step for step (Viterbi over the
pieces that match at each character, strict `>` so the first best path wins, an unknown
character scored min_score - 10 and runs of them fused into one token looked up as a piece),
and the tokens carry the same byte offsets, so the Encodings are tokenizers' own. It is set
on the pre-tokenised splits (`PreTokenizedString.tokenize`), which the model step then skips;
the model is a WordLevel holding only the added tokens, which fixes their ids at load.

File `tokenizer_unigram.npz` (written by the exporter, listed in manifest.json with its sha256):
`config` (tokenizer.json without the vocabulary, UTF-8 JSON; its model holds the number of pieces
and `reach_of` them), `pieces` (the pieces in id order, UTF-8, joined by "\\n"), `scores` (float64,
one per piece).
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Token, Tokenizer, pre_tokenizers

from . import cut

COMPACT = "tokenizer_unigram.npz"
SEPARATOR = "\n"
UNK_PENALTY = 10.0  # tokenizers' K_UNK_PENALTY: an unknown character scores min_score - 10
CACHE_WORDS = 20_000  # pre-tokens whose tokens are kept (tokenizers keeps 10,000), ~12 MB; cleared when full
CACHE_MAX_BYTES = 256  # tokenizers caches pre-tokens shorter than this only


class UnigramSegmenter:
    """The Unigram segmentation of one pre-token, as a custom tokenizers pre-tokeniser step."""

    def __init__(self, pieces: Sequence[str], scores: Sequence[float], unk_id: int,
                 reach: dict[str, int] | None = None) -> None:
        """`reach`: the most characters in a piece starting with each character, where more than
        one (`reach_of(pieces)`, which the exporter stores: a pass over the pieces costs ~50 ms)."""
        self._ids = dict(zip(pieces, range(len(pieces))))
        self._scores = list(scores)
        self._unk_id = unk_id
        self._unk_score = min(self._scores) - UNK_PENALTY
        self._reach = reach_of(pieces) if reach is None else reach
        self._cache: dict[str, list[Token]] = {}

    def pre_tokenize(self, pretok) -> None:
        pretok.tokenize(self.tokens)

    def tokens(self, word: str) -> list[Token]:
        """tokenizers Tokens of one normalised pre-token, offsets in bytes within it."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        result = self._tokens(word) if word else []
        if len(word) < CACHE_MAX_BYTES // 4 or len(word.encode()) < CACHE_MAX_BYTES:
            if len(self._cache) >= CACHE_WORDS:
                self._cache.clear()
            self._cache[word] = result
        return result

    def _tokens(self, word: str) -> list[Token]:
        ids, scores, reach, n = self._ids, self._scores, self._reach, len(word)
        best = [0.0] + [float("-inf")] * n  # best[j]: score of the best path over word[:j]
        start = [0] * (n + 1)  # where the last piece of that path starts
        piece = [-1] * (n + 1)  # its id, -1 for an unknown character
        for i in range(n):
            base = best[i]
            # one character: its piece, or the unknown score (tokenizers adds the unknown candidate
            # after the longer pieces, which end elsewhere: the order changes nothing)
            k = ids.get(word[i])
            score = base + (self._unk_score if k is None else scores[k])
            if score > best[i + 1]:
                best[i + 1], start[i + 1], piece[i + 1] = score, i, -1 if k is None else k
            for j in range(i + 2, min(n, i + reach.get(word[i], 1)) + 1):  # no longer piece starts here
                k = ids.get(word[i:j])
                if k is not None:
                    score = base + scores[k]
                    if score > best[j]:
                        best[j], start[j], piece[j] = score, i, k
        spans: list[list[int]] = []  # [start, end, id] from the end; consecutive unknowns fused
        j = n
        while j > 0:
            i = start[j]
            if piece[j] < 0 and spans and spans[-1][2] < 0:
                spans[-1][0] = i
            else:
                spans.append([i, j, piece[j]])
            j = i
        out, byte, ascii_only = [], 0, word.isascii()
        for i, j, k in reversed(spans):
            value = word[i:j]
            if k < 0:
                k = ids.get(value, self._unk_id)
            end = j if ascii_only else byte + len(value.encode())
            out.append(Token(k, value, (byte, end)))
            byte = end
        return out


def reach_of(pieces: Sequence[str]) -> dict[str, int]:
    """{first character: the most characters in a piece starting with it}, where more than one:
    the Viterbi tries no longer substring from there (4,067 of multilingual-e5-small's characters
    start a longer piece, "\u2581" one of 16; one CJK text of 200k characters tokenised in 2.2 s
    of CPU with one bound for all, 1.0 s with these)."""
    reach: dict[str, int] = {}
    for p in pieces:
        if len(p) > 1 and len(p) > reach.get(p[0], 1):
            reach[p[0]] = len(p)
    return reach


def compact_config(tokenizer_json: dict) -> dict | None:
    """What `write` would put in `config`, or None if this tokenizer is not one `load` rebuilds
    exactly: a Unigram model with an unknown piece, no byte fallback, no piece holding "\\n"."""
    model = tokenizer_json.get("model") or {}
    if (model.get("type") != "Unigram" or model.get("byte_fallback") or model.get("unk_id") is None
            or not model.get("vocab") or any(SEPARATOR in p for p, _ in model["vocab"])):
        return None
    config = dict(tokenizer_json)
    config["model"] = {k: v for k, v in model.items() if k != "vocab"} | {
        "pieces": len(model["vocab"]), "reach": reach_of([p for p, _ in model["vocab"]])}
    return config


def write(tokenizer_json: Path, out: Path) -> bool:
    """Write `out` (tokenizer_unigram.npz) from a tokenizer.json; False, writing nothing, if
    `compact_config` declines it."""
    full = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    config = compact_config(full)
    if config is None:
        return False
    vocab = full["model"]["vocab"]
    blob = SEPARATOR.join(p for p, _ in vocab).encode("utf-8")
    buffer = io.BytesIO()  # np.savez would add ".npz" to a name without it
    np.savez(buffer, config=np.frombuffer(json.dumps(config, ensure_ascii=False).encode("utf-8"), dtype=np.uint8),
             pieces=np.frombuffer(blob, dtype=np.uint8), scores=np.array([s for _, s in vocab], dtype=np.float64))
    Path(out).write_bytes(buffer.getvalue())
    return True


def load(path: Path) -> tuple[Tokenizer, bool]:
    """The tokenizers.Tokenizer that tokenizer.json describes, from its compact file, and whether
    it is local (cut.is_local, judged before the segmenter is attached: a custom step has no
    serialised state to judge; the segmentation itself works within a pre-token)."""
    with np.load(path, allow_pickle=False) as z:
        config = json.loads(z["config"].tobytes().decode("utf-8"))
        pieces = z["pieces"].tobytes().decode("utf-8").split(SEPARATOR)
        scores = z["scores"].tolist()
    model = config["model"]
    if not (len(pieces) == len(scores) == model["pieces"]) or not 0 <= model["unk_id"] < len(pieces):
        raise ValueError(f"{path}: {len(pieces)} pieces and {len(scores)} scores where its config says "
                         f"{model['pieces']} (unk_id {model['unk_id']}): the file is damaged; re-export the model")
    unk = pieces[model["unk_id"]]
    # Only the added tokens' ids are looked up in the model (when they are registered at load).
    vocab = {t["content"]: t["id"] for t in config.get("added_tokens", [])} | {unk: model["unk_id"]}
    config["model"] = {"type": "WordLevel", "vocab": vocab, "unk_token": unk}
    tokenizer = Tokenizer.from_str(json.dumps(config))
    local = cut.is_local(tokenizer)
    segmenter = pre_tokenizers.PreTokenizer.custom(UnigramSegmenter(pieces, scores, model["unk_id"], model.get("reach")))
    first = [tokenizer.pre_tokenizer] if tokenizer.pre_tokenizer is not None else []
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(first + [segmenter])
    return tokenizer, local

"""Cut a huge text to a prefix before tokenising it, when that provably keeps its first tokens.

`tokenizers` tokenises a whole text before truncating it and keeps the rest as overflowing
encodings: a 10 MB text took 12.8 s and 1.4 GB peak RSS (benchmarks/huge_text.py) to yield 512
tokens. No bound on characters per token makes a plain cut safe (normalisers drop zero-width and
control characters, so a million characters may give no token, and a cut word tokenises
differently), so the cut is checked instead:

1. The tokenizer is local: its normaliser works character by character or per grapheme cluster
   (BERT, NFC/NFD/NFKC/NFKD, lowercase, strip accents, SentencePiece's precompiled charsmap,
   strip, prepend, a Replace of runs of 2+ spaces), its pre-tokeniser splits at whitespace (BERT, Whitespace, WhitespaceSplit,
   Metaspace with split), its model tokenises each pre-token alone, no added token holds
   whitespace, and truncation keeps the right-hand end off.
2. The cut is between an ASCII letter or digit and a space followed by one: a grapheme and
   pre-token boundary, where such a tokenizer starts a new word whatever follows. The prefix's
   tokens are then the full text's first tokens, up to the cut.
3. The prefix alone overflows max_length, so truncation keeps the same first tokens from both.
Otherwise (no such cut point, a prefix that does not overflow even when grown, another
tokenizer) the whole text is tokenised, as before.
"""
from __future__ import annotations

import json
import re

from tokenizers import Tokenizer

CHARS_PER_TOKEN = 16  # first prefix tried: max_length x 16 characters; grown 4x while it does not overflow
_CUT = re.compile(r"(?<=[A-Za-z0-9]) (?=[A-Za-z0-9])")
_LOCAL_NORMALIZERS = {"BertNormalizer", "NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents",
                      "Precompiled", "Strip", "Prepend"}
# Replace normalisers that only ever match two or more spaces: never the single space of a cut
_SPACE_RUNS = ({"Regex": " {2,}"}, {"Regex": "  +"})
_WHITESPACE_SPLITTERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
_LOCAL_MODELS = {"WordPiece", "Unigram", "WordLevel", "BPE"}


def _state(component) -> dict | None:
    return None if component is None else json.loads(component.__getstate__())


def _parts(state: dict | None, key: str) -> list[dict]:
    if state is None:
        return []
    return [p for s in state[key] for p in _parts(s, key)] if state["type"] == "Sequence" else [state]


def is_local(tokenizer: Tokenizer) -> bool:
    """Condition 1 above, read from the tokenizer's own configuration."""
    normalizers = _parts(_state(tokenizer.normalizer), "normalizers")
    pre = _parts(_state(tokenizer.pre_tokenizer), "pretokenizers")
    splits = [p["type"] in _WHITESPACE_SPLITTERS or (p["type"] == "Metaspace" and p.get("split", True)) for p in pre]
    truncation = tokenizer.truncation or {}
    return (
        all(n["type"] in _LOCAL_NORMALIZERS or (n["type"] == "Replace" and n["pattern"] in _SPACE_RUNS)
            for n in normalizers)
        and any(splits)
        and all(s or p["type"] in ("Punctuation", "Digits") for s, p in zip(splits, pre))
        and type(tokenizer.model).__name__ in _LOCAL_MODELS  # by class: the model's state is its whole vocabulary
        and not any(any(c.isspace() for c in t.content) for t in tokenizer.get_added_tokens_decoder().values())
        and truncation.get("direction", "right") == "right"
    )


def head(tokenizer: Tokenizer, text: str, max_length: int) -> str:
    """`text`, or a prefix of it whose encoding under `tokenizer` (truncated at max_length) is the
    text's own. Call only if is_local(tokenizer)."""
    limit = max_length * CHARS_PER_TOKEN
    while len(text) > limit:
        cut = _CUT.search(text, limit)
        if cut is None:
            return text
        prefix = text[: cut.start()]
        if tokenizer.encode(prefix).overflowing:  # condition 3
            return prefix
        limit = cut.start() * 4
    return text

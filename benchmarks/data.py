"""Loaders for the shared evaluation data (../shared/data): STS Benchmark, SciFact (BEIR), Tatoeba."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """../shared beside the checkout, or $E5_ONNX_SHARED."""
    candidates = [os.environ.get("E5_ONNX_SHARED"), ROOT.parent / "shared", Path("/work/shared")]
    for c in candidates:
        if c and (Path(c) / "models").is_dir() and (Path(c) / "data").is_dir():
            return Path(c)
    raise FileNotFoundError(
        f"shared assets not found (looked in {[str(c) for c in candidates if c]}); "
        "set E5_ONNX_SHARED to the folder holding models/ and data/"
    )


STSB_LANGS = ("en", "de", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "zh")


def stsb(lang: str = "en", split: str = "test") -> list[tuple[str, str, float]]:
    """(sentence1, sentence2, score 0-5) rows of STSb in one language."""
    path = shared_dir() / "data" / "stsb-multi-mt" / "data" / f"stsb-{lang}-{split}.csv"
    with open(path, encoding="utf-8", newline="") as f:
        return [(a, b, float(s)) for a, b, s in csv.reader(f)]


def stsb_sentences(lang: str = "en", splits: tuple[str, ...] = ("test",)) -> list[str]:
    """Every distinct STSb sentence of the splits (both sides of each pair), sorted: a fixed list
    for seeded samples."""
    return sorted({s for split in splits for a, b, _ in stsb(lang, split) for s in (a, b)})


def scifact(split: str = "test") -> tuple[dict[str, dict], dict[str, str], dict[str, dict[str, int]]]:
    """corpus {doc_id: {title, text}}, the split's queries {qid: text}, qrels {qid: {doc_id: relevance}}."""
    base = shared_dir() / "data" / "scifact"
    corpus = {}
    with open(base / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            corpus[d["_id"]] = {"title": d.get("title", ""), "text": d["text"]}
    qrels: dict[str, dict[str, int]] = {}
    with open(base / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        next(f)  # header
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[did] = int(score)
    queries = {}
    with open(base / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            if q["_id"] in qrels:
                queries[q["_id"]] = q["text"]
    return corpus, queries, qrels


def scifact_passages() -> list[str]:
    """SciFact documents as E5 passages: title + abstract."""
    corpus, _, _ = scifact()
    return [f"{d['title']} {d['text']}".strip() for d in corpus.values()]


def tatoeba(lang: str) -> tuple[list[str], list[str]]:
    """Line-aligned (sentences in `lang`, their English translations)."""
    base = shared_dir() / "data" / "tatoeba-laser" / "v1"
    src = (base / f"tatoeba.{lang}-eng.{lang}").read_text(encoding="utf-8").splitlines()
    eng = (base / f"tatoeba.{lang}-eng.eng").read_text(encoding="utf-8").splitlines()
    assert len(src) == len(eng), lang
    return src, eng

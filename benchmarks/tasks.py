"""The fidelity benchmark's tasks: the texts each one embeds and how it scores their embeddings.

STSb Spearman, SciFact nDCG@10 / Recall@100 (exact cosine search) and Tatoeba accuracy, plus the
two statistics fidelity.py reports beside them (paired standard error, per-text cosine).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import spearmanr

from .data import STSB_LANGS, scifact, stsb, tatoeba

TATOEBA_LANGS = ("deu", "fra", "spa", "rus", "cmn", "jpn", "ara", "hin", "kor", "tur", "swh", "ell", "heb", "vie", "ind")
QUERY, PASSAGE = "query: ", "passage: "


@dataclass
class Task:
    name: str  # metric row prefix, e.g. "STSb en"
    kind: str  # "sts" | "retrieval" | "bitext": which goal applies
    groups: dict[str, list[str]]
    score: Callable[[dict[str, np.ndarray]], dict[str, float]]
    # retrieval only: the same metrics from each query's ranked doc indices (benchmarks/compact.py)
    score_top: Callable[[np.ndarray], dict[str, float]] | None = None


def sts_task(lang: str, limit: int | None) -> Task:
    rows = stsb(lang, "test")[:limit]
    gold = np.array([s for _, _, s in rows])

    def score(e):
        cos = np.sum(e["a"] * e["b"], axis=1)
        return {"Spearman": 100 * float(spearmanr(cos, gold).statistic)}

    return Task(f"STSb {lang}", "sts", {"a": [QUERY + a for a, _, _ in rows], "b": [QUERY + b for _, b, _ in rows]},
                score)


def scifact_task(quick: bool, split: str = "test") -> Task:
    """The test split is the benchmark's row. The train split's 809 queries (never used by the
    exporter's calibration, export/calibration.py) search the same corpus: with the test split's
    300 they measure a retrieval difference with ~half its standard error."""
    corpus, queries, qrels = scifact(split)
    qids = sorted(queries, key=int)
    if quick:  # 30 queries, their relevant documents and the first 150 others
        qids = qids[:30]
        keep = {d for q in qids for d in qrels[q]} | set(list(corpus)[:150])
        corpus = {d: v for d, v in corpus.items() if d in keep}
    dids = list(corpus)

    def score(e):
        scores = e["queries"] @ e["docs"].T
        return score_top(np.argsort(-scores, axis=1, kind="stable")[:, :100])

    def score_top(top):
        ndcg, recall = [], []
        for qi, qid in enumerate(qids):
            rel = qrels[qid]
            ranked = [rel.get(dids[j], 0) for j in top[qi]]
            dcg = sum(r / math.log2(i + 2) for i, r in enumerate(ranked[:10]))
            ideal = sorted(rel.values(), reverse=True)[:10]
            idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
            ndcg.append(dcg / idcg if idcg > 0 else 0.0)
            relevant = {d for d, r in rel.items() if r > 0}
            recall.append(len(relevant & {dids[j] for j in top[qi]}) / len(relevant))
        return {"nDCG@10": 100 * float(np.mean(ndcg)), "Recall@100": 100 * float(np.mean(recall)),
                "nDCG@10 per query": [100 * x for x in ndcg]}

    docs = [PASSAGE + f"{corpus[d]['title']} {corpus[d]['text']}".strip() for d in dids]
    name, kind = ("SciFact", "retrieval") if split == "test" else (f"SciFact {split}", f"retrieval-{split}")
    return Task(name, kind, {"queries": [QUERY + queries[q] for q in qids], "docs": docs}, score, score_top)


def tatoeba_task(lang: str, limit: int | None) -> Task:
    src, eng = (lines[:limit] for lines in tatoeba(lang))

    def score(e):
        sim = e["src"] @ e["eng"].T
        target = np.arange(len(sim))
        to_eng = float(np.mean(sim.argmax(axis=1) == target))
        from_eng = float(np.mean(sim.argmax(axis=0) == target))
        return {"acc": 100 * (to_eng + from_eng) / 2}

    return Task(f"Tatoeba {lang}", "bitext", {"src": [QUERY + s for s in src], "eng": [QUERY + s for s in eng]}, score)


def tasks_for(model: str, quick: bool) -> list[Task]:
    limit = 200 if quick else None
    langs = ("en",) if model == "minilm" else (("en", "de", "zh") if quick else STSB_LANGS)
    tasks = [sts_task(lang, limit) for lang in langs] + [scifact_task(quick)]
    if not quick:
        tasks.append(scifact_task(quick, "train"))
    if model == "me5":
        tasks += [tatoeba_task(lang, limit) for lang in (("deu", "cmn", "swh") if quick else TATOEBA_LANGS)]
    return tasks



def paired_se(candidate: dict, reference: dict) -> dict[str, float]:
    """Standard error of the mean per-query difference to torch: what a drop can be told from."""
    return {k: float(np.std(v - reference[k], ddof=1) / math.sqrt(len(v))) for k, v in candidate.items()}


def paired_ci(candidate: dict, reference: dict, rounds: int = 10_000, seed: int = 0) -> dict[str, list[float]]:
    """95% interval of the mean per-query difference to torch, by paired bootstrap over the queries."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in candidate.items():
        diff = np.asarray(v) - np.asarray(reference[k])
        means = diff[rng.integers(0, len(diff), size=(rounds, len(diff)))].mean(axis=1)
        out[k] = [float(x) for x in np.percentile(means, [2.5, 97.5])]
    return out


def pooled(per_query: dict, metric: str, names: list[str]) -> dict[str, np.ndarray]:
    """`metric` per query over several tasks' queries (e.g. SciFact test + train), as one row."""
    rows = [per_query[f"{n} {metric}"] for n in names if f"{n} {metric}" in per_query]
    return {f"{' + '.join(names)} {metric}": np.concatenate(rows)} if len(rows) == len(names) else {}


def cosine_stats(reference: list[np.ndarray], candidate: list[np.ndarray], texts: list[str]) -> dict:
    cos = np.sum(np.concatenate(reference).astype(np.float64) * np.concatenate(candidate), axis=1)
    worst = np.argsort(cos)[:3]
    return {"n": int(cos.size), "mean": float(cos.mean()), "p1": float(np.percentile(cos, 1)), "min": float(cos.min()),
            "worst": [{"cosine": float(cos[i]), "text": texts[i][:100]} for i in worst]}

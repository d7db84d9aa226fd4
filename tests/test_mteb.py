"""The MTEB encoder under mteb's own evaluators, on tiny local tasks (benchmarks/mteb.py's
STSBenchmark and SciFact subclasses over ../shared/data), with no network: every socket
connection other than to this machine fails the test."""
from __future__ import annotations

import math
import socket

import numpy as np
import pytest
from scipy.stats import spearmanr

from e5_onnx import Embedder

QUERY, PASSAGE = "query: ", "passage: "


@pytest.fixture
def no_network(monkeypatch):
    """Refuse (and record) any connection that leaves the machine."""
    attempts = []
    connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not host.startswith(("127.", "::1", "localhost", "/")):
            attempts.append(address)
            raise OSError(f"test_mteb: network access to {address} refused")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    yield attempts
    assert not attempts, f"mteb tried the network: {attempts}"


@pytest.fixture(scope="module")
def fp32(minilm_export) -> Embedder:
    return Embedder(minilm_export, "fp32")


def ndcg_at_10(scores: np.ndarray, doc_ids: list[str], qrels: list[dict[str, int]]) -> float:
    """Mean nDCG@10 with trec_eval's linear gains, computed here from the score matrix."""
    total = 0.0
    for row, rel in zip(scores, qrels):
        ranked = [doc_ids[j] for j in np.argsort(-row, kind="stable")[:10]]
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked))
        ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(rel.values(), reverse=True)[:10]))
        total += dcg / ideal
    return total / len(scores)


def test_mteb_evaluators_score_what_embedder_gives(fp32, no_network):
    import mteb
    from mteb.models.models_protocols import EncoderProtocol

    from benchmarks.mteb import local_scifact, local_sts, run
    from e5_onnx.integrations.mteb import E5Encoder

    encoder = E5Encoder(embedder=fp32)
    assert isinstance(encoder, EncoderProtocol)
    meta = encoder.mteb_model_meta
    assert meta.embed_dim == 384 and meta.max_tokens == fp32.max_length and meta.name.startswith("e5-onnx/")

    sts, retrieval = local_sts(pairs=40), local_scifact(queries=8, docs=40)
    scores = run(encoder, [sts, retrieval])
    sts.load_data(), retrieval.load_data()  # mteb unloads a task's data after evaluating it

    # STS: both sides as queries; mteb's Spearman of the cosines equals ours from Embedder
    rows = sts.dataset["default"]["test"]
    cos = np.sum(fp32.encode_queries(list(rows["sentence1"])) * fp32.encode_queries(list(rows["sentence2"])), axis=1)
    gold = list(rows["score"])
    assert scores["STSBenchmark"]["cosine_spearman"] == pytest.approx(100 * spearmanr(gold, cos).statistic, abs=1e-3)

    # retrieval: queries as "query: ", documents as "passage: title text"
    split = retrieval.dataset["default"]["test"]
    corpus, queries = split["corpus"], split["queries"]
    docs = [f"{r['title']} {r['text']}".strip() for r in corpus]
    matrix = fp32.encode_queries(list(queries["text"])) @ fp32.encode_passages(docs).T
    expected = ndcg_at_10(matrix, list(corpus["id"]), [split["relevant_docs"][q] for q in queries["id"]])
    assert scores["SciFact"]["ndcg_at_10"] == pytest.approx(100 * expected, abs=1e-3)
    assert mteb.__version__.startswith("2.")


def test_mteb_prompt_type_chooses_the_prefix(fp32):
    from datasets import Dataset
    from mteb._create_dataloaders import create_dataloader
    from mteb.types import PromptType

    from benchmarks.mteb import local_sts
    from e5_onnx.integrations.mteb import E5Encoder

    encoder = E5Encoder(embedder=fp32)
    metadata = local_sts().metadata
    texts = ["Sarcopenia is the loss of muscle mass.", "what causes muscle loss", "A man plays a guitar."]
    loader = create_dataloader(Dataset.from_dict({"text": texts}), task_metadata=metadata, batch_size=2)
    for prompt_type, prefix in ((PromptType.document, PASSAGE), (PromptType.query, QUERY), (None, QUERY)):
        got = encoder.encode(loader, task_metadata=metadata, hf_split="test", hf_subset="default",
                             prompt_type=prompt_type)
        np.testing.assert_allclose(got, fp32.encode([prefix + t for t in texts]), atol=1e-6, rtol=0)
        for wrong in ("", prefix + prefix, PASSAGE if prefix == QUERY else QUERY):
            assert np.abs(got - fp32.encode([wrong + t for t in texts])).max() > 1e-3, (prompt_type, wrong)

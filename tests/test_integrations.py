"""The framework adapters (src/e5_onnx/integrations) with each library's real objects, on the
real MiniLM export (fp32: its rows do not depend on the batch, so vectors compare to 1e-6).

For each framework: a retrieval over ~200 SciFact passages returns, for a handful of queries,
the top-5 documents that Embedder.encode_queries / encode_passages give computed directly; and
its query and document vectors equal Embedder's prefixed ones and differ from the unprefixed,
double-prefixed and swapped ones (a dropped or doubled prefix fails here).
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import numpy as np
import pytest

from benchmarks.data import scifact
from e5_onnx import Embedder

N_DOCS, N_QUERIES, TOP = 200, 6, 5
QUERY, PASSAGE = "query: ", "passage: "


@pytest.fixture(scope="module")
def fp32(minilm_export) -> Embedder:
    return Embedder(minilm_export, "fp32")


@pytest.fixture(scope="module")
def corpus(fp32) -> dict:
    """~200 SciFact passages (the relevant documents of the first test queries, then the corpus
    in order; title + the abstract's first 400 characters, to keep the test fast), the queries
    whose 5th and 6th hits are apart (so no tie decides a rank), and Embedder's own top 5."""
    docs, queries, qrels = scifact("test")
    qids = list(queries)[:20]
    ids = list(dict.fromkeys(d for q in qids for d in qrels[q]))
    ids += [d for d in docs if d not in set(ids)][: N_DOCS - len(ids)]
    texts = [f"{docs[d]['title']} {docs[d]['text'][:400]}".strip() for d in ids]
    scores = fp32.encode_queries([queries[q] for q in qids]) @ fp32.encode_passages(texts).T
    order = np.argsort(-scores, axis=1, kind="stable")
    gap = scores[np.arange(len(qids)), order[:, TOP - 1]] - scores[np.arange(len(qids)), order[:, TOP]]
    chosen = [i for i in range(len(qids)) if gap[i] > 1e-3][:N_QUERIES]
    assert len(chosen) == N_QUERIES, gap
    return {"ids": ids, "texts": texts, "queries": [queries[qids[i]] for i in chosen],
            "top": [[ids[j] for j in order[i, :TOP]] for i in chosen]}


SAMPLE_QUERIES = ["what causes muscle loss in older adults", "Vitamin D deficiency and bone fractures"]
SAMPLE_DOCS = ["Sarcopenia is the age-related loss of skeletal muscle mass.", "Bone density falls after menopause."]


def assert_prefixed(embedder: Embedder, got, texts: list[str], prefix: str) -> None:
    """`got` is Embedder's vectors of prefix + text, and not of the text unprefixed, with the
    prefix twice, or with the other prefix."""
    got = np.asarray(got, dtype=np.float32)
    np.testing.assert_allclose(got, embedder.encode([prefix + t for t in texts]), atol=1e-6, rtol=0)
    other = PASSAGE if prefix == QUERY else QUERY
    for wrong in ("", prefix + prefix, other):
        assert np.abs(got - embedder.encode([wrong + t for t in texts])).max() > 1e-3, f"prefix {wrong!r} fits too"


# ---------------------------------------------------------------------------------------------
# LangChain

def test_langchain_vector_store_and_prefixes(fp32, corpus, minilm_export):
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore

    from e5_onnx.integrations.langchain import E5Embeddings

    embeddings = E5Embeddings(embedder=fp32)
    assert isinstance(embeddings, Embeddings)
    store = InMemoryVectorStore(embeddings)
    store.add_texts(corpus["texts"], ids=corpus["ids"])
    for query, top in zip(corpus["queries"], corpus["top"]):
        assert [d.id for d in store.similarity_search(query, k=TOP)] == top
    assert [d.id for d in asyncio.run(store.asimilarity_search(corpus["queries"][0], k=TOP))] == corpus["top"][0]

    assert_prefixed(fp32, embeddings.embed_documents(SAMPLE_DOCS), SAMPLE_DOCS, PASSAGE)
    assert_prefixed(fp32, [embeddings.embed_query(q) for q in SAMPLE_QUERIES], SAMPLE_QUERIES, QUERY)
    assert_prefixed(fp32, asyncio.run(embeddings.aembed_documents(SAMPLE_DOCS)), SAMPLE_DOCS, PASSAGE)
    assert_prefixed(fp32, [asyncio.run(embeddings.aembed_query(q)) for q in SAMPLE_QUERIES], SAMPLE_QUERIES, QUERY)

    # the constructor takes Embedder's arguments; symmetric tasks set the passage prefix to query's
    symmetric = E5Embeddings(minilm_export, "fp32", passage_prefix=QUERY, batch_size=8)
    assert symmetric.e5.embedder.batch_size == 8
    assert_prefixed(fp32, symmetric.embed_documents(SAMPLE_DOCS), SAMPLE_DOCS, QUERY)


class CountingEmbedder(Embedder):
    """A real Embedder that records how many encode calls run at once, and slows each down."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.running = self.most = 0
        self.lock = threading.Lock()

    def encode(self, texts, **kwargs):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.05)
            return super().encode(texts, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize("limit", [1, 2])
def test_langchain_async_never_blocks_the_event_loop_and_is_bounded(minilm_export, corpus, limit):
    from e5_onnx.integrations.langchain import E5Embeddings

    embedder = CountingEmbedder(minilm_export, "fp32")
    embeddings = E5Embeddings(embedder=embedder, max_concurrency=limit)

    async def main():
        gaps, stop = [], asyncio.Event()

        async def ticker():
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        started = time.perf_counter()
        results = await asyncio.gather(*[embeddings.aembed_documents(corpus["texts"][i:60:6]) for i in range(6)])
        took = time.perf_counter() - started
        stop.set()
        await tick
        return results, gaps, took

    results, gaps, took = asyncio.run(main())
    assert [len(r) for r in results] == [len(corpus["texts"][i:60:6]) for i in range(6)]
    assert embedder.most == limit  # bounded, and the bound is used
    # the loop kept ticking while the model ran: its longest stall is a small part of the run
    assert took > 0.3 and max(gaps) < 0.25, (took, max(gaps))


# ---------------------------------------------------------------------------------------------
# LlamaIndex

def test_llamaindex_vector_store_index_and_prefixes(fp32, corpus):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.schema import TextNode

    from e5_onnx.integrations.llamaindex import E5Embedding

    model = E5Embedding(embedder=fp32)
    assert isinstance(model, BaseEmbedding)
    nodes = [TextNode(id_=i, text=t) for i, t in zip(corpus["ids"], corpus["texts"])]
    index = VectorStoreIndex(nodes, embed_model=model)
    retriever = index.as_retriever(similarity_top_k=TOP)
    for query, top in zip(corpus["queries"], corpus["top"]):
        assert [hit.node.node_id for hit in retriever.retrieve(query)] == top
    hits = asyncio.run(retriever.aretrieve(corpus["queries"][1]))
    assert [hit.node.node_id for hit in hits] == corpus["top"][1]

    assert_prefixed(fp32, model.get_text_embedding_batch(SAMPLE_DOCS), SAMPLE_DOCS, PASSAGE)
    assert_prefixed(fp32, [model.get_text_embedding(d) for d in SAMPLE_DOCS], SAMPLE_DOCS, PASSAGE)
    assert_prefixed(fp32, [model.get_query_embedding(q) for q in SAMPLE_QUERIES], SAMPLE_QUERIES, QUERY)
    assert_prefixed(fp32, asyncio.run(model.aget_text_embedding_batch(SAMPLE_DOCS)), SAMPLE_DOCS, PASSAGE)
    assert_prefixed(fp32, [asyncio.run(model.aget_query_embedding(q)) for q in SAMPLE_QUERIES], SAMPLE_QUERIES, QUERY)


# ---------------------------------------------------------------------------------------------
# Chroma

REOPEN = """
import json, sys, warnings
warnings.simplefilter("always")
import chromadb
import e5_onnx.integrations.chroma  # registers "e5-onnx"
with warnings.catch_warnings(record=True) as caught:
    client = chromadb.PersistentClient(sys.argv[1], settings=chromadb.Settings(anonymized_telemetry=False))
    collection = client.get_collection("scifact")  # no embedding_function: built from the stored config
    hits = collection.query(query_texts=json.loads(sys.argv[2]), n_results=5)["ids"]
ef = collection.configuration["embedding_function"]  # what chroma embeds the query_texts with
print(json.dumps({"type": type(ef).__name__, "config": ef.get_config(), "hits": hits,
                  "loaded_once": ef is collection.configuration["embedding_function"],
                  "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}))
"""


def test_chroma_persistent_collection_reopens_with_its_function(fp32, corpus, minilm_export, tmp_path):
    import chromadb

    from e5_onnx.integrations.chroma import E5EmbeddingFunction

    function = E5EmbeddingFunction(minilm_export, "fp32")
    assert function.name() == "e5-onnx" and function.default_space() == "cosine"
    assert_prefixed(fp32, function(SAMPLE_DOCS), SAMPLE_DOCS, PASSAGE)
    assert_prefixed(fp32, function.embed_query(SAMPLE_QUERIES), SAMPLE_QUERIES, QUERY)
    config = function.get_config()
    assert config["model"] == str(minilm_export) and config["variant"] == "fp32"
    rebuilt = E5EmbeddingFunction.build_from_config(json.loads(json.dumps(config)))
    assert_prefixed(fp32, rebuilt.embed_query(SAMPLE_QUERIES), SAMPLE_QUERIES, QUERY)

    client = chromadb.PersistentClient(str(tmp_path / "db"), settings=chromadb.Settings(anonymized_telemetry=False))
    collection = client.create_collection("scifact", embedding_function=function)
    collection.add(ids=corpus["ids"], documents=corpus["texts"])
    assert collection.query(query_texts=corpus["queries"], n_results=TOP)["ids"] == corpus["top"]

    # a fresh process re-opens the directory: the same function, the same hits, no warning
    done = subprocess.run([sys.executable, "-c", REOPEN, str(tmp_path / "db"), json.dumps(corpus["queries"])],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    assert done.returncode == 0, done.stderr[-3000:]
    reopened = json.loads(done.stdout.strip().splitlines()[-1])
    assert reopened["type"] == "E5EmbeddingFunction" and reopened["config"] == config
    assert reopened["hits"] == corpus["top"] and reopened["loaded_once"]
    assert not [w for w in reopened["warnings"] if "Deprecat" in w or "embedding" in w.lower()], reopened["warnings"]


# ---------------------------------------------------------------------------------------------
# Haystack

def test_haystack_pipelines_and_serialisation(fp32, corpus, minilm_export):
    from haystack import Document, Pipeline
    from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
    from haystack.components.writers import DocumentWriter
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    from e5_onnx.integrations.haystack import E5DocumentEmbedder, E5TextEmbedder

    store = InMemoryDocumentStore(index="e5-onnx-test", embedding_similarity_function="cosine")
    indexing = Pipeline()
    indexing.add_component("embed", E5DocumentEmbedder(minilm_export, "fp32"))
    indexing.add_component("write", DocumentWriter(store))
    indexing.connect("embed.documents", "write.documents")
    docs = [Document(id=i, content=t) for i, t in zip(corpus["ids"], corpus["texts"])]
    indexing.run({"embed": {"documents": docs}})
    assert store.count_documents() == N_DOCS and all(d.embedding is None for d in docs)  # inputs untouched

    query = Pipeline()
    query.add_component("embed", E5TextEmbedder(minilm_export, "fp32"))
    query.add_component("retrieve", InMemoryEmbeddingRetriever(store, top_k=TOP))
    query.connect("embed.embedding", "retrieve.query_embedding")
    # to_dict / from_dict of every component (the store comes back by its index name)
    query = Pipeline.loads(query.dumps(), allowed_modules=["e5_onnx.integrations.haystack"])
    for text, top in zip(corpus["queries"], corpus["top"]):
        assert [d.id for d in query.run({"embed": {"text": text}})["retrieve"]["documents"]] == top

    text_embedder = E5TextEmbedder.from_dict(E5TextEmbedder(minilm_export, "fp32", batch_size=4).to_dict())
    assert text_embedder.e5 is None  # loads in warm_up (or the first run), not in the constructor
    text_embedder.warm_up()
    assert text_embedder.e5.embedder.batch_size == 4
    assert_prefixed(fp32, [text_embedder.run(q)["embedding"] for q in SAMPLE_QUERIES], SAMPLE_QUERIES, QUERY)
    out = E5DocumentEmbedder(minilm_export, "fp32").run([Document(content=d) for d in SAMPLE_DOCS])["documents"]
    assert_prefixed(fp32, [d.embedding for d in out], SAMPLE_DOCS, PASSAGE)


# ---------------------------------------------------------------------------------------------
# shared behaviour

@pytest.mark.parametrize("module, extra", [("langchain", "langchain"), ("llamaindex", "llamaindex"),
                                           ("chroma", "chroma"), ("haystack", "haystack"), ("mteb", "mteb")])
def test_a_missing_framework_names_the_pip_command(module, extra):
    """In a process where the framework cannot be imported, importing the adapter is an
    ImportError that says what to install (the runtime itself imports none of them)."""
    top = {"langchain": "langchain_core", "llamaindex": "llama_index", "chroma": "chromadb",
           "haystack": "haystack", "mteb": "mteb"}[module]
    code = (f"import sys; sys.modules[{top!r}] = None\n"
            "import e5_onnx, e5_onnx.integrations\n"
            f"try:\n    import e5_onnx.integrations.{module}\nexcept ImportError as e:\n    print(type(e).__name__, e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("MissingExtraError") and f'pip install "e5-onnx[{extra}]"' in done.stdout, done.stdout


def test_adapter_arguments_are_checked(fp32, minilm_export):
    from e5_onnx.integrations import E5Texts

    with pytest.raises(TypeError, match="unknown Embedder option"):
        E5Texts.open(minilm_export, threadz=2)
    with pytest.raises(ValueError, match="either embedder="):
        E5Texts.open(minilm_export, embedder=fp32)
    with pytest.raises(TypeError, match="query_prefix must be a str"):
        E5Texts.open(embedder=fp32, query_prefix=1)
    with pytest.raises(ValueError, match="max_concurrency"):
        E5Texts.open(embedder=fp32, max_concurrency=0)

"""LangChain: `E5Embeddings`, a `langchain_core.embeddings.Embeddings` over one Embedder.

    from e5_onnx.integrations.langchain import E5Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore.from_texts(docs, E5Embeddings("e5-small-v2"))  # "passage: " + doc
    store.similarity_search("how do cells divide?", k=5)                          # "query: " + query

`embed_documents` adds the passage prefix, `embed_query` the query prefix. The async twins run
inference in this object's own pool of `max_concurrency` threads (default 1: one onnxruntime
call already uses every core), so the event loop never waits on the model and at most
`max_concurrency` calls run at once; the others queue outside the loop.
Needs `pip install "e5-onnx[langchain]"`.
"""
from __future__ import annotations

import os
from typing import Any

from . import E5Texts, require

Embeddings = require("langchain_core.embeddings", "langchain", "langchain-core").Embeddings


class E5Embeddings(Embeddings):
    """E5 embeddings for LangChain; the arguments are `Embedder`'s, plus the two prefixes
    (None: the model's own), `max_concurrency` for the async methods, or `embedder=` to share one."""

    def __init__(self, path_or_name: str | os.PathLike | None = None, variant: str = "int8", *,
                 query_prefix: str | None = None, passage_prefix: str | None = None,
                 max_concurrency: int = 1, embedder: Any = None, **options: Any) -> None:
        self.e5 = E5Texts.open(path_or_name, variant, query_prefix=query_prefix, passage_prefix=passage_prefix,
                               embedder=embedder, max_concurrency=max_concurrency, **options)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Documents for a vector store: `passage: ` + text."""
        return self.e5.passages(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """A search query: `query: ` + text."""
        return self.e5.queries([_one(text)])[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return (await self.e5.apassages(texts)).tolist()

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.e5.aqueries([_one(text)]))[0].tolist()


def _one(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}; use embed_documents for a list")
    return text

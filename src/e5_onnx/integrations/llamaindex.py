"""LlamaIndex: `E5Embedding`, a `llama_index.core` `BaseEmbedding` over one Embedder.

    from llama_index.core import Document, VectorStoreIndex
    from e5_onnx.integrations.llamaindex import E5Embedding

    index = VectorStoreIndex.from_documents(docs, embed_model=E5Embedding("e5-small-v2"))  # "passage: "
    index.as_retriever(similarity_top_k=5).retrieve("how do cells divide?")            # "query: "

Queries get the query prefix, texts (nodes) the passage prefix; the async methods run inference
in the adapter's own bounded thread pool. Needs `pip install "e5-onnx[llamaindex]"`.
"""
from __future__ import annotations

import os
from typing import Any

from . import E5Texts, require

_base = require("llama_index.core.base.embeddings.base", "llamaindex", "llama-index-core")
_bridge = require("llama_index.core.bridge.pydantic", "llamaindex", "llama-index-core")


class E5Embedding(_base.BaseEmbedding):
    """E5 for LlamaIndex; the arguments are `Embedder`'s, plus the two prefixes (None: the
    model's own), or `embedder=` to share one loaded model."""

    _e5: E5Texts = _bridge.PrivateAttr()

    def __init__(self, path_or_name: str | os.PathLike | None = None, variant: str = "int8", *,
                 query_prefix: str | None = None, passage_prefix: str | None = None, embedder: Any = None,
                 max_concurrency: int = 1, embed_batch_size: int = 256, **options: Any) -> None:
        e5 = E5Texts.open(path_or_name, variant, query_prefix=query_prefix, passage_prefix=passage_prefix,
                          embedder=embedder, max_concurrency=max_concurrency, **options)
        super().__init__(model_name=f"e5-onnx:{e5.config['model']}:{e5.embedder.variant}",
                         embed_batch_size=embed_batch_size)
        self._e5 = e5

    @classmethod
    def class_name(cls) -> str:
        return "E5Embedding"

    @property
    def e5(self) -> E5Texts:
        return self._e5

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._e5.queries([query])[0].tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._e5.passages([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._e5.passages(texts).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await self._e5.aqueries([query]))[0].tolist()

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._e5.apassages([text]))[0].tolist()

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return (await self._e5.apassages(texts)).tolist()

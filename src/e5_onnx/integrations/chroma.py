"""Chroma: `E5EmbeddingFunction`, a chromadb `EmbeddingFunction` over one Embedder.

    import chromadb
    from e5_onnx.integrations.chroma import E5EmbeddingFunction

    client = chromadb.PersistentClient("./db")
    docs = client.get_or_create_collection("docs", embedding_function=E5EmbeddingFunction("e5-small-v2"))
    docs.add(ids=["1", "2"], documents=["...", "..."])              # "passage: " + document
    docs.query(query_texts=["how do cells divide?"], n_results=5)   # "query: " + query

`__call__` embeds documents with the passage prefix and `embed_query` queries with the query
prefix (Chroma calls it for `query_texts`). The function is registered under the name "e5-onnx"
with its constructor arguments as config, so a persisted collection re-opens with it in a
process that has imported this module, and cosine is its default space. Needs `pip install "e5-onnx[chroma]"`.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any

from . import E5Texts, require

_types = require("chromadb.api.types", "chroma", "chromadb")
_registry = require("chromadb.utils.embedding_functions", "chroma", "chromadb")


@_registry.register_embedding_function
class E5EmbeddingFunction(_types.EmbeddingFunction[_types.Documents]):
    """E5 for Chroma; the arguments are `Embedder`'s, plus the two prefixes (None: the model's own)."""

    def __init__(self, path_or_name: str | os.PathLike | None = None, variant: str = "int8", *,
                 query_prefix: str | None = None, passage_prefix: str | None = None,
                 embedder: Any = None, **options: Any) -> None:
        self.e5 = E5Texts.open(path_or_name, variant, query_prefix=query_prefix, passage_prefix=passage_prefix,
                               embedder=embedder, **options)

    def __call__(self, input: _types.Documents) -> _types.Embeddings:
        """Documents to store: `passage: ` + text."""
        return list(self.e5.passages(_texts(input)))

    def embed_query(self, input: _types.Documents) -> _types.Embeddings:
        """Query texts: `query: ` + text."""
        return list(self.e5.queries(_texts(input)))

    @staticmethod
    def name() -> str:
        return "e5-onnx"

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine", "ip", "l2"]  # rows have norm 1: all three rank alike

    def get_config(self) -> dict[str, Any]:
        return dict(self.e5.config)

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "E5EmbeddingFunction":
        """The function a persisted collection names. Chroma rebuilds it from the stored config on
        every add and query that gets no embedding_function, so the loaded ones are kept (4 at most)."""
        return _built(json.dumps(config, sort_keys=True))

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        if new_config.get("model", old_config.get("model")) != old_config.get("model"):
            raise ValueError("a collection's embedding model cannot change: its stored vectors came from "
                             f"{old_config.get('model')!r}")

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        if not isinstance(config.get("model"), str):
            raise ValueError(f"an e5-onnx embedding function config needs a model name or directory, got {config!r}")


@functools.lru_cache(maxsize=4)
def _built(config_json: str) -> E5EmbeddingFunction:
    config = json.loads(config_json)
    return E5EmbeddingFunction(config.pop("model"), **config)


def _texts(input: Any) -> list[str]:
    return [input] if isinstance(input, str) else list(input)

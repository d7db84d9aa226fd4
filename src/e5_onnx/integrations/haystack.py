"""Haystack: `E5TextEmbedder` (queries) and `E5DocumentEmbedder` (documents), `@component`s
over one Embedder each, for indexing and query pipelines.

    from haystack import Document, Pipeline
    from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from e5_onnx.integrations.haystack import E5DocumentEmbedder, E5TextEmbedder

    store = InMemoryDocumentStore()
    store.write_documents(E5DocumentEmbedder("e5-small-v2").run(docs)["documents"])  # "passage: "
    query = Pipeline()
    query.add_component("embed", E5TextEmbedder("e5-small-v2"))                    # "query: "
    query.add_component("retrieve", InMemoryEmbeddingRetriever(store, top_k=5))
    query.connect("embed.embedding", "retrieve.query_embedding")
    query.run({"embed": {"text": "how do cells divide?"}})

The model loads in `warm_up()` (the pipeline calls it; `run` does too when it was not), and
`to_dict` / `from_dict` carry the constructor arguments, so a serialised pipeline re-creates
them (Haystack 3 loads classes only from trusted modules: `Pipeline.loads(text,
allowed_modules=["e5_onnx.integrations.haystack"])`). Needs `pip install "e5-onnx[haystack]"`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from . import E5Texts, require

_haystack = require("haystack", "haystack", "haystack-ai")
component, Document = _haystack.component, _haystack.Document
default_to_dict, default_from_dict = _haystack.default_to_dict, _haystack.default_from_dict


class _E5Component:
    """What both embedders share: the arguments, loaded lazily in warm_up, and (de)serialised."""

    def __init__(self, model: str | os.PathLike | None = None, variant: str = "int8", *,
                 query_prefix: str | None = None, passage_prefix: str | None = None, **options: Any) -> None:
        self.model = None if model is None else str(model)
        self.variant, self.query_prefix, self.passage_prefix, self.options = variant, query_prefix, passage_prefix, options
        self.e5: E5Texts | None = None

    def warm_up(self) -> None:
        if self.e5 is None:
            self.e5 = E5Texts.open(self.model, self.variant, query_prefix=self.query_prefix,
                                   passage_prefix=self.passage_prefix, **self.options)

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, model=self.model, variant=self.variant, query_prefix=self.query_prefix,
                               passage_prefix=self.passage_prefix, **self.options)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return default_from_dict(cls, data)

    def _loaded(self) -> E5Texts:
        self.warm_up()
        assert self.e5 is not None
        return self.e5


@component
class E5TextEmbedder(_E5Component):
    """A query (or a symmetric-task text) -> its embedding, with the query prefix."""

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, Any]:
        if not isinstance(text, str):
            raise TypeError(f"E5TextEmbedder takes one str; for a list of Documents use E5DocumentEmbedder, "
                            f"got {type(text).__name__}")
        return {"embedding": self._loaded().queries([text])[0].tolist()}


@component
class E5DocumentEmbedder(_E5Component):
    """Documents -> the same documents with `embedding` set, from the passage prefix + content
    (a document without content is embedded as the empty text). The inputs are not modified."""

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        if not isinstance(documents, list) or not all(isinstance(d, Document) for d in documents):
            raise TypeError("E5DocumentEmbedder takes a list of haystack Documents; for one query text use E5TextEmbedder")
        vectors = self._loaded().passages([d.content or "" for d in documents])
        return {"documents": [dataclasses.replace(d, embedding=v.tolist()) for d, v in zip(documents, vectors)]}

"""MTEB: `E5Encoder`, an encoder for mteb 2.x's evaluators over one Embedder.

    import mteb
    from e5_onnx.integrations.mteb import E5Encoder

    mteb.evaluate(E5Encoder("multilingual-e5-small"), mteb.get_tasks(tasks=["STSBenchmark"]), cache=None)

mteb passes each `encode` a `prompt_type`; the prefix follows the E5 model card: documents
(`PromptType.document`) get `passage: `, and everything else gets `query: `: retrieval queries,
and both sides of symmetric tasks (STS, classification, clustering, bitext mining), which mteb
encodes with no prompt type. `mteb_model_meta` describes the export (name, dimension, max
tokens, ONNX, cosine similarity). Needs `pip install "e5-onnx[mteb]"`.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import E5Texts, require

_abs_encoder = require("mteb.models.abs_encoder", "mteb", "mteb")
_meta = require("mteb.models.model_meta", "mteb", "mteb")
PromptType = require("mteb.types", "mteb", "mteb").PromptType


class E5Encoder(_abs_encoder.AbsEncoder):
    """E5 for MTEB; the arguments are `Embedder`'s, plus the two prefixes (None: the model's own),
    or `embedder=` to share one loaded model. `name` is the model name mteb reports
    ("organization/model"; default "e5-onnx/<model directory>-<variant>")."""

    def __init__(self, path_or_name: str | os.PathLike | None = None, variant: str = "int8", *,
                 query_prefix: str | None = None, passage_prefix: str | None = None, embedder: Any = None,
                 name: str | None = None, **options: Any) -> None:
        self.e5 = E5Texts.open(path_or_name, variant, query_prefix=query_prefix, passage_prefix=passage_prefix,
                               embedder=embedder, **options)
        self.model = self.e5.embedder
        self.mteb_model_meta = model_meta(self.e5, name)

    def encode(self, inputs: Any, *, task_metadata: Any = None, hf_split: str = "", hf_subset: str = "",
               prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
        """Every text of mteb's DataLoader batches, prefixed by `prompt_type` -> (n, dim) float32."""
        texts = [text for batch in inputs for text in batch["text"]]
        return self.e5.passages(texts) if is_document(prompt_type) else self.e5.queries(texts)


def is_document(prompt_type: Any) -> bool:
    """E5's rule: documents are passages; queries and symmetric texts (no prompt type) are queries."""
    return prompt_type is not None and PromptType(prompt_type) == PromptType.document


def model_meta(e5: Any, name: str | None = None, framework: tuple[str, ...] = ("ONNX",)) -> Any:
    """mteb's ModelMeta for an E5 export (what the manifest knows; the rest left unknown)."""
    embedder = e5.embedder
    manifest = embedder.manifest
    source = manifest.get("source") or {}
    if name is None:
        name = f"e5-onnx/{embedder.model_dir.name}-{embedder.variant}"
    return _meta.ModelMeta(
        loader=None, name=name, revision=source.get("revision"), release_date=None, languages=None,
        n_parameters=None, memory_usage_mb=None, max_tokens=embedder.max_length, embed_dim=embedder.dim,
        license=None, open_weights=True, public_training_code=None, public_training_data=None,
        framework=list(framework), reference=None, similarity_fn_name=_meta.ScoringFunction.COSINE,
        use_instructions=True,  # the query / passage prefixes
        training_datasets=None,
    )

"""Adapters that put one `Embedder` behind the interface a framework expects, with E5's prefixes
right by construction: queries get `query: `, documents `passage: ` (both configurable; pass
`passage_prefix="query: "` for a symmetric task such as similarity or clustering).

One module per framework, each an optional extra imported only when used:

    e5_onnx.integrations.langchain   E5Embeddings           pip install "e5-onnx[langchain]"
    e5_onnx.integrations.llamaindex  E5Embedding            pip install "e5-onnx[llamaindex]"
    e5_onnx.integrations.chroma      E5EmbeddingFunction    pip install "e5-onnx[chroma]"
    e5_onnx.integrations.haystack    E5TextEmbedder,
                                     E5DocumentEmbedder     pip install "e5-onnx[haystack]"
    e5_onnx.integrations.mteb        E5Encoder              pip install "e5-onnx[mteb]"

Every adapter takes the `Embedder` constructor's arguments (model name or directory, variant,
threads, batch_size, max_batch_tokens, long_text, spinning) plus the two prefixes, or an
`embedder=` already loaded to share one model between adapters. None holds model logic: the
vectors are `Embedder.encode` of the prefixed texts.
"""
from __future__ import annotations

import asyncio
import importlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..embedder import Embedder, _check_texts
from ..extras import MissingExtraError

# Embedder's keyword arguments, which the adapters pass through and serialise.
EMBEDDER_OPTIONS = ("threads", "batch_size", "max_batch_tokens", "long_text", "spinning")


def require(module: str, extra: str, package: str) -> Any:
    """Import `module`, or raise MissingExtraError naming the pip command for `extra`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name and not module.startswith(error.name.split(".")[0]):
            raise  # the library is there but one of its own imports is broken: show that
        raise MissingExtraError(f'e5_onnx.integrations.{extra} needs {package}, which is not installed: '
                                f'pip install "e5-onnx[{extra}]"') from None


@dataclass
class E5Texts:
    """One Embedder and the two prefixes: the whole of what every adapter does."""

    embedder: Embedder
    query_prefix: str
    passage_prefix: str
    config: dict = field(default_factory=dict)  # JSON-able constructor arguments (to_dict / get_config)
    max_concurrency: int = 1  # async calls running inference at once; one already uses every core
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, path_or_name: str | os.PathLike | None = None, variant: str = "int8", *,
             query_prefix: str | None = None, passage_prefix: str | None = None,
             embedder: Embedder | None = None, max_concurrency: int = 1, **options: Any) -> "E5Texts":
        unknown = set(options) - set(EMBEDDER_OPTIONS)
        if unknown:
            raise TypeError(f"unknown Embedder option(s) {sorted(unknown)}; choose from {EMBEDDER_OPTIONS}")
        for name, prefix in (("query_prefix", query_prefix), ("passage_prefix", passage_prefix)):
            if prefix is not None and not isinstance(prefix, str):
                raise TypeError(f"{name} must be a str or None (the model's own), not {type(prefix).__name__}")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be a positive int, got {max_concurrency!r}")
        if embedder is not None and (path_or_name is not None or options):
            raise ValueError("pass either embedder= (a loaded Embedder) or the arguments to load one, not both")
        if embedder is None:
            embedder = Embedder(path_or_name, variant, **options)
        elif not isinstance(embedder, Embedder):
            raise TypeError(f"embedder must be an e5_onnx.Embedder, not {type(embedder).__name__}")
        config = {"model": str(path_or_name) if path_or_name is not None else str(embedder.model_dir),
                  "variant": embedder.variant, "query_prefix": query_prefix, "passage_prefix": passage_prefix,
                  **{k: v for k, v in options.items() if v is not None}}
        return cls(embedder,
                   embedder.query_prefix if query_prefix is None else query_prefix,
                   embedder.passage_prefix if passage_prefix is None else passage_prefix, config, max_concurrency)

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        """Search queries (or both sides of a symmetric task): the query prefix, then encode."""
        return self.embedder.encode([self.query_prefix + t for t in _check_texts(texts)])

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        """Documents to retrieve: the passage prefix, then encode."""
        return self.embedder.encode([self.passage_prefix + t for t in _check_texts(texts)])


    async def aqueries(self, texts: Sequence[str]) -> np.ndarray:
        """`queries` in this object's thread pool: the event loop goes on while the model runs."""
        return await self._in_pool(self.queries, texts)

    async def apassages(self, texts: Sequence[str]) -> np.ndarray:
        return await self._in_pool(self.passages, texts)

    async def _in_pool(self, fn: Any, texts: Sequence[str]) -> np.ndarray:
        # a pool of max_concurrency threads, not the loop's default executor: at most that many
        # calls run at once, and the rest wait in its queue, not in the event loop
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="e5-onnx")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, texts)

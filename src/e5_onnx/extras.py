"""Optional dependencies (the extras: parquet, ray, serve, the framework integrations).

Core, so that every surface that imports an extra lazily raises the same documented error:
`MissingExtraError` is an ImportError whose message gives the `pip install "e5-onnx[...]"` command.
"""
from __future__ import annotations


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says what to pip install."""

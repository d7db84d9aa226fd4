"""The ASGI app of `e5-onnx serve` (starlette): routes, errors, auth and request metrics.

Routes: POST /v1/embeddings, GET /v1/models, GET /health (503 until the model is loaded),
GET /metrics (Prometheus text). Concurrent requests are batched together (batcher.py) and run on
worker threads sharing one onnxruntime session, so the event loop never waits on inference.
Every error is an OpenAI-style JSON object; no request can get a stack trace. With an API key
set, every route but /health needs `Authorization: Bearer <key>`. The command (flags, uvicorn,
SIGTERM) is server.py.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import os
import sys
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..backends import resolve
from ..compact import params_file, quantize
from ..embedder import Embedder, resolve_model_dir
from ..manifest import load_manifest
from ..session import available_cores
from .batcher import Batcher, QueueFull
from .metrics import Metrics
from .openai_api import ApiError, parse_embeddings_request, parse_json, render_embeddings

log = logging.getLogger("e5_onnx.server")  # the logger name users configure: unchanged by the move
ROUTES = ("/v1/embeddings", "/v1/models", "/health", "/metrics")
# Larger requests are tokenised and their responses written in a thread, off the event loop
# (tokenizers releases the GIL; writing one 384-dim row as JSON takes ~60 us).
INLINE_CHARS, INLINE_TEXTS = 16_384, 32


@dataclass
class Settings:
    model: str
    variant: str | None = None  # None: the backend's default
    backend: str | None = None  # None: $E5_ONNX_BACKEND, else onnxruntime
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int | None = None  # None: the cores this process may use
    threads: int | None = None  # per worker; None: the cores divided among the workers
    served_name: str | None = None
    api_key: str | None = None
    max_inputs: int = 2048
    max_chars: int = 32_768
    max_body_bytes: int = 8 << 20
    max_queue_texts: int = 8192
    max_queue_tokens: int = 131_072
    batch_size: int = 32
    max_batch_tokens: int = 512
    batching: bool = True
    spinning: bool = False
    grace: float = 30.0
    body_timeout: float = 30.0
    log_level: str = "info"
    access_log: bool = False


class Service:
    """What the routes share: the model (loaded in the background), the batcher, the metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_dir = resolve_model_dir(settings.model)
        manifest = load_manifest(self.model_dir)
        self.name = settings.served_name or manifest.get("name") or self.model_dir.name
        self.created = int(os.path.getmtime(self.model_dir / "manifest.json"))
        self.embedder: Embedder | None = None
        self.batcher: Batcher | None = None
        self.ranges = None  # the export's int8 ranges, if it records them (embedding_type int8 / uint8)
        self.centre = None  # and its centre (embedding_type binary-centred / ubinary-centred)
        self.error: BaseException | None = None
        self.server = None  # the uvicorn.Server, to tell /health we are draining, or to stop on a load error
        self.metrics = _metrics(self)

    @property
    def ready(self) -> bool:
        return self.batcher is not None and not (self.server is not None and self.server.should_exit)

    def load(self) -> None:
        s = self.settings
        try:
            workers = s.workers or available_cores()
            threads = s.threads or max(1, available_cores() // workers)
            if resolve(s.backend, s.variant)[0] == "openvino":  # its threads are one-thread streams, one per worker
                threads *= workers
            embedder = Embedder(self.model_dir, s.variant, backend=s.backend, threads=threads, batch_size=s.batch_size,
                                max_batch_tokens=s.max_batch_tokens, spinning=s.spinning)
            if params_file(embedder.manifest, embedder.graph_variant) is not None:
                self.ranges = embedder.compact_ranges()
            if params_file(embedder.manifest, embedder.graph_variant, "centre") is not None:
                self.centre = embedder.compact_centre()
            self.embedder = embedder
            self.batcher = Batcher(embedder, max_queue_texts=s.max_queue_texts, max_queue_tokens=s.max_queue_tokens,
                                   batching=s.batching, workers=workers, on_batch=self._on_batch)
            log.info("model %s (%s, %s) loaded from %s", self.name, embedder.variant, embedder.backend, self.model_dir)
        except Exception as error:  # a tampered or unreadable export: report it and stop the server
            self.error = error
            log.error("could not load the model: %s", error)
            if self.server is not None:
                self.server.should_exit = True

    def _on_batch(self, texts: int, padded_tokens: int, seconds: float) -> None:
        self.metrics.observe("batch_texts", texts)
        self.metrics.observe("batch_padded_tokens", padded_tokens)
        self.metrics.observe("batch_seconds", seconds)


def _metrics(service: Service) -> Metrics:
    m = Metrics()
    m.counter("requests_total", "HTTP requests by route and status (499: the client went away first)")
    m.counter("texts_total", "texts embedded")
    m.counter("tokens_total", "tokens embedded (after truncation)")
    m.counter("truncated_texts_total", "texts cut at the model's token limit")
    m.gauge("queue_texts", "texts accepted and not yet embedded",
            lambda: service.batcher.queued_texts if service.batcher else 0)
    m.gauge("queue_tokens", "tokens accepted and not yet embedded",
            lambda: service.batcher.queued_tokens if service.batcher else 0)
    m.gauge("dropped_texts_total", "texts dropped from the queue because their client went away",
            lambda: service.batcher.dropped_texts if service.batcher else 0, kind="counter")
    m.histogram("batch_texts", "texts per onnxruntime call", (1, 2, 4, 8, 16, 32, 64, 128))
    m.histogram("batch_padded_tokens", "padded tokens per onnxruntime call", (16, 64, 128, 256, 512, 1024, 4096))
    m.histogram("batch_seconds", "seconds per onnxruntime call", (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
    m.histogram("request_seconds", "POST /v1/embeddings latency, seconds",
                (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
    return m


# ---------------------------------------------------------------- routes

async def embeddings(request: Request) -> Response:
    service: Service = request.app.state.service
    if service.batcher is None:  # while draining, requests that still arrive are served: /health says 503
        raise ApiError(503, "the model is still loading", type_="server_error", code="not_ready")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, f"Content-Type must be application/json, not {content_type or 'missing'!r}",
                       code="unsupported_media_type")
    s = service.settings
    body = await _read_body(request, s.max_body_bytes, s.body_timeout)
    if body is None:
        return Response(status_code=499)  # the client left while sending; nobody reads this
    embedder = service.embedder
    req = parse_embeddings_request(parse_json(body), dim=embedder.dim, max_inputs=s.max_inputs, max_chars=s.max_chars,
                                   prefixes={"query": embedder.query_prefix, "passage": embedder.passage_prefix},
                                   has_ranges=service.ranges is not None, has_centre=service.centre is not None)
    large = len(req.texts) > INLINE_TEXTS or sum(map(len, req.texts)) > INLINE_CHARS
    encode = embedder.tokenizer.encode
    encodings = await asyncio.to_thread(encode, req.texts) if large else encode(req.texts)
    try:
        job = service.batcher.submit(encodings, asyncio.get_running_loop())
    except QueueFull as full:
        raise ApiError(429, str(full), type_="rate_limit_error", code="queue_full",
                       headers={"Retry-After": str(full.retry_after)}) from None
    except ValueError as too_big:
        raise ApiError(422, str(too_big), param="input", code="request_too_large") from None
    vectors = await _wait(service, job, request.receive)
    if vectors is None:
        return Response(status_code=499)
    tokens = job.tokens
    truncated = sum(1 for e in encodings if e.overflowing)
    m = service.metrics
    m.inc("texts_total", len(encodings))
    m.inc("tokens_total", tokens)
    m.inc("truncated_texts_total", truncated)
    if req.precision != "float32":  # a row's code depends on its own vector only: batching cannot change it
        vectors = quantize(vectors, req.precision, service.ranges, centre=service.centre)
    args = (vectors, req.encoding_format, service.name, tokens, truncated)
    content = await asyncio.to_thread(render_embeddings, *args) if large else render_embeddings(*args)
    return Response(content, media_type="application/json", headers={"X-Truncated-Texts": str(truncated)})


async def _read_body(request: Request, limit: int, timeout: float) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ApiError(413, f"the body is {declared} bytes; at most {limit} are accepted (E5_ONNX_MAX_BODY_BYTES)",
                       code="body_too_large")

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the body is over {limit} bytes (E5_ONNX_MAX_BODY_BYTES)", code="body_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        if sys.version_info >= (3, 11):  # no extra task per request
            async with asyncio.timeout(timeout):
                return await read()
        return await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the body did not arrive within {timeout:g} s (E5_ONNX_BODY_TIMEOUT)",
                       code="body_timeout") from None
    except ClientDisconnect:
        return None


async def _wait(service: Service, job, receive):
    """The job's vectors, or None if the client disconnected first (its texts leave the queue)."""
    watcher = asyncio.ensure_future(receive())  # the body is read: the next message is http.disconnect
    try:
        await asyncio.wait((job.future, watcher), return_when=asyncio.FIRST_COMPLETED)
        return job.future.result() if job.future.done() else None
    finally:
        watcher.cancel()
        if not job.future.done():
            service.batcher.cancel(job)


async def models(request: Request) -> Response:
    service: Service = request.app.state.service
    return JSONResponse({"object": "list", "data": [_model_card(service)]})


async def model(request: Request) -> Response:
    service: Service = request.app.state.service
    if request.path_params["name"] != service.name:
        raise ApiError(404, f"model {request.path_params['name']!r} is not served here; this server serves "
                       f"{service.name!r}", param="model", code="model_not_found")
    return JSONResponse(_model_card(service))


def _model_card(service: Service) -> dict:
    return {"id": service.name, "object": "model", "created": service.created, "owned_by": "e5-onnx"}


async def health(request: Request) -> Response:
    service: Service = request.app.state.service
    if service.ready:
        return JSONResponse({"status": "ok", "model": service.name})
    status = "error" if service.error else "loading" if service.batcher is None else "shutting down"
    return JSONResponse({"status": status}, status_code=503)


async def metrics(request: Request) -> Response:
    service: Service = request.app.state.service
    return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")


# ---------------------------------------------------------------- errors, auth, request metrics

def _json_error(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def api_error(request: Request, error: ApiError) -> Response:
    return _json_error(error)


async def http_error(request: Request, error: HTTPException) -> Response:
    if error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = f"no route {request.url.path}; routes: {', '.join(ROUTES)}"
    return _json_error(ApiError(error.status_code, message, code="method_not_allowed" if error.status_code == 405
                               else "not_found", headers=error.headers))


async def internal_error(request: Request, error: Exception) -> Response:
    log.exception("internal error on %s", request.url.path)
    return _json_error(ApiError(500, "internal error (logged by the server)", type_="server_error"))


class Guard:
    """ASGI wrapper: Bearer auth (all routes but /health) and per-request metrics."""

    def __init__(self, app, service: Service) -> None:
        self.app, self.service = app, service
        key = service.settings.api_key
        self.expected = f"Bearer {key}".encode() if key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 499

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path = scope["path"]
        if self.expected is not None and path != "/health" and not self._authorized(scope):
            error = ApiError(401, "missing or wrong API key: send Authorization: Bearer <E5_ONNX_API_KEY>",
                             type_="authentication_error", code="invalid_api_key",
                             headers={"WWW-Authenticate": "Bearer"})
            await _json_error(error)(scope, receive, send_and_note)
        else:
            await self.app(scope, receive, send_and_note)
        route = path if path in ROUTES else "other"
        self.service.metrics.inc("requests_total", route=route, status=str(status))
        if route == "/v1/embeddings":
            self.service.metrics.observe("request_seconds", time.perf_counter() - start)

    def _authorized(self, scope) -> bool:
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        return hmac.compare_digest(given, self.expected)


def create_app(service: Service) -> Guard:
    @asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=service.load, name="e5-onnx-load", daemon=True).start()
        yield
        if service.batcher is not None:  # uvicorn has finished (or given up on) the open requests
            await asyncio.to_thread(service.batcher.close, service.settings.grace)

    app = Starlette(
        routes=[Route("/v1/embeddings", embeddings, methods=["POST"]), Route("/v1/models", models),
                Route("/v1/models/{name:path}", model), Route("/health", health), Route("/metrics", metrics)],
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    app.state.service = service
    return Guard(app, service)

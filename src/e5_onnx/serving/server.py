"""`e5-onnx serve`: an OpenAI-compatible embedding server (starlette + uvicorn, the [serve] extra).

Routes: POST /v1/embeddings, GET /v1/models, GET /health (503 until the model is loaded),
GET /metrics (Prometheus text). Concurrent requests are batched together (batcher.py) and run on
worker threads sharing one onnxruntime session, so the event loop never waits on inference.
Every error is an OpenAI-style JSON object; no request can get a stack trace. With
E5_ONNX_API_KEY set, every route but /health needs `Authorization: Bearer <key>`. SIGTERM stops
accepting connections, finishes the accepted requests (within --grace seconds) and exits 0.

This module is the command (flags and environment, uvicorn, signals); the app is app.py.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import Sequence

from ..backends import BACKENDS
from ..embedder import VARIANTS
from .app import Service, Settings, create_app

__all__ = ["Service", "Settings", "create_app", "main", "parse_args"]


# ---------------------------------------------------------------- command line

def parse_args(argv: Sequence[str]) -> Settings:
    env = os.environ.get
    d = Settings(model="")
    p = argparse.ArgumentParser(prog="e5-onnx serve", description=__doc__.split("\n\n")[0],
                                epilog="Every flag also reads the environment variable named beside it; "
                                       "E5_ONNX_API_KEY (environment only) turns on Bearer authentication.")

    def flag(name: str, var: str, default, type_=str, help_: str = "", **kw) -> None:
        p.add_argument(name, type=type_, default=env(var, default), help=f"{help_} (${var}; default {default})", **kw)

    flag("--model", "E5_ONNX_MODEL", None, dest="model", help_="export directory or model name")
    flag("--variant", "E5_ONNX_VARIANT", d.variant, choices=VARIANTS,
         help_="int8 or fp32 (onnxruntime), bf16 or fp32 (openvino); none: the backend's default")
    flag("--backend", "E5_ONNX_BACKEND", d.backend, choices=BACKENDS,
         help_="onnxruntime, openvino (the [openvino] extra) or auto (openvino bf16 on AMX CPUs); none: onnxruntime")
    flag("--host", "E5_ONNX_HOST", d.host, help_="address to bind; 0.0.0.0 listens on every interface")
    flag("--port", "E5_ONNX_PORT", d.port, int)
    flag("--workers", "E5_ONNX_WORKERS", 0, int,
         help_="threads running onnxruntime calls side by side; 0: the cores this process may use")
    flag("--threads", "E5_ONNX_THREADS", 0, int,
         help_="onnxruntime threads per call; 0: the cores this process may use divided among the workers")
    flag("--served-model-name", "E5_ONNX_SERVED_MODEL_NAME", None, dest="served_name",
         help_="the `model` the responses and /v1/models name (default: the export's name)")
    flag("--max-inputs", "E5_ONNX_MAX_INPUTS", d.max_inputs, int, help_="texts per request (else 422)")
    flag("--max-chars", "E5_ONNX_MAX_CHARS", d.max_chars, int, help_="characters per text (else 422)")
    flag("--max-body-bytes", "E5_ONNX_MAX_BODY_BYTES", d.max_body_bytes, int, help_="request body (else 413)")
    flag("--max-queue-texts", "E5_ONNX_MAX_QUEUE_TEXTS", d.max_queue_texts, int,
         help_="texts accepted and not yet embedded (else 429)")
    flag("--max-queue-tokens", "E5_ONNX_MAX_QUEUE_TOKENS", d.max_queue_tokens, int,
         help_="tokens accepted and not yet embedded (else 429)")
    flag("--batch-size", "E5_ONNX_BATCH_SIZE", d.batch_size, int, help_="texts per onnxruntime call")
    flag("--max-batch-tokens", "E5_ONNX_MAX_BATCH_TOKENS", d.max_batch_tokens, int,
         help_="padded tokens per onnxruntime call")
    flag("--batching", "E5_ONNX_BATCHING", "on", choices=("on", "off"),
         help_="pool concurrent requests into shared batches; off: one request at a time")
    flag("--spinning", "E5_ONNX_SPINNING", "off", choices=("on", "off"),
         help_="onnxruntime's worker threads spin between calls; off leaves the event loop its core")
    flag("--grace", "E5_ONNX_GRACE", d.grace, float, help_="seconds to finish accepted requests after SIGTERM")
    flag("--body-timeout", "E5_ONNX_BODY_TIMEOUT", d.body_timeout, float,
         help_="seconds a client may take to send its body (else 408)")
    flag("--log-level", "E5_ONNX_LOG_LEVEL", "info", choices=("debug", "info", "warning", "error"))
    flag("--access-log", "E5_ONNX_ACCESS_LOG", "off", choices=("on", "off"))
    a = p.parse_args(argv)
    for name in ("max_inputs", "max_chars", "max_body_bytes", "max_queue_texts", "max_queue_tokens",
                 "batch_size", "max_batch_tokens"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(a, name)}")
    settings = Settings(**{k: v for k, v in vars(a).items() if k in Settings.__dataclass_fields__})
    for name in ("workers", "threads"):
        if getattr(a, name) < 0:
            p.error(f"--{name} must be 0 (automatic) or positive, got {getattr(a, name)}")
    settings.workers = a.workers or None
    settings.threads = a.threads or None
    settings.batching = a.batching == "on"
    settings.spinning = a.spinning == "on"
    settings.api_key = env("E5_ONNX_API_KEY") or None
    settings.access_log = a.access_log == "on"
    return settings


def main(argv: Sequence[str]) -> int:
    import uvicorn

    settings = parse_args(argv)
    # Requests bring their own concurrency: tokenizers' thread pool would only wake threads that
    # contend with onnxruntime's (one query's encode_batch: 0.23 vs 0.55 ms wall on the event loop).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not settings.model:
        from ..lock import default_model_name

        settings.model = default_model_name()
    service = Service(settings)  # a missing or unknown model fails here, before binding
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    config = uvicorn.Config(create_app(service), host=settings.host, port=settings.port, lifespan="on",
                            log_level=settings.log_level, access_log=settings.access_log,
                            timeout_graceful_shutdown=settings.grace, server_header=False)
    server = uvicorn.Server(config)
    service.server = server
    # uvicorn re-raises SIGTERM / SIGINT after a graceful shutdown; ignore that re-raise so the
    # process exits 0 once every accepted request is answered.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if service.error is not None:
        raise ValueError(f"could not load the model: {service.error}")
    return 0

"""Serving over HTTP, `e5-onnx serve`: an OpenAI-compatible embeddings server (the [serve] extra).

    server.py      the command: flags and environment, uvicorn, SIGTERM
    app.py         the ASGI app (starlette): routes, auth, limits, request metrics
    batcher.py     dynamic batching: concurrent requests pooled, run by per-core workers
    openai_api.py  the OpenAI embeddings protocol, no transport (also used by the Lambda handler)
    metrics.py     Prometheus text exposition

Nothing is imported here: the Lambda handler imports openai_api.py without starlette.
"""

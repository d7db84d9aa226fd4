"""The load generator of serve.py (and the texts of call_parallelism.py): the requests clients send,
a server process, its CPU time and batch statistics.

The load generator is a bare asyncio HTTP/1.1 client (prebuilt request bytes, the status line
and Content-Length parsed, the JSON body not): it shares the two cores with the server, so it has
to cost as little CPU as possible; a full client (httpx, the openai client) costs several times
more per request, which would be measured as the server's slowness.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .data import scifact_passages, stsb_sentences

SEED = 0
# Passages cut to ~100 tokens, so a mixed request (1-16 texts) is ~0.5 s of work on a quiet
# machine and every cell of a few seconds completes requests even at 128 clients.
PASSAGE_CHARS = 400


def workloads(n_requests: int = 2048) -> dict[str, list[list[str]]]:
    """Per workload, the texts of each request (clients cycle through them)."""
    rng = random.Random(SEED)
    sentences = stsb_sentences()
    queries = ["query: " + s for s in rng.sample(sentences, n_requests)]
    passages = ["passage: " + p[:PASSAGE_CHARS] for p in rng.sample(scifact_passages(), n_requests)]
    mixed = []
    for _ in range(n_requests):
        k = rng.randint(1, 16)
        mixed.append([rng.choice(queries) if rng.random() < 0.5 else rng.choice(passages) for _ in range(k)])
    return {"query": [[q] for q in queries], "mixed": mixed}


def http_request(port: int, texts: list[str]) -> bytes:
    body = json.dumps({"input": texts, "model": "e5"}).encode()
    return (f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    return status, await reader.readexactly(length)


async def load(port: int, requests: list[tuple[bytes, int]], clients: int, warm: float, seconds: float) -> dict:
    """`clients` connections, each sending its next request when the last is answered."""
    start = time.perf_counter()
    begin, end = start + warm, start + warm + seconds
    latencies: list[float] = []
    texts = errors = 0

    async def client(k: int) -> None:
        nonlocal texts, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        while (sent := time.perf_counter()) < end:
            payload, n = requests[i % len(requests)]
            i += clients
            writer.write(payload)
            status, body = await read_response(reader)
            done = time.perf_counter()
            if status != 200:
                errors += 1
            elif begin <= done <= end:  # answered in the window: counts even if sent during the warm-up
                latencies.append(done - sent)
                texts += n
        writer.close()

    cpu = time.process_time()
    tasks = [asyncio.ensure_future(client(k)) for k in range(clients)]
    done, pending = await asyncio.wait(tasks, timeout=end - time.perf_counter() + 0.05)
    for task in pending:  # requests still out at the end are abandoned: the server drops their texts
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()  # a client that failed (connection refused, bad response) fails the run
    lat = np.array(latencies or [float("nan")]) * 1000  # nan: no request was answered in the window
    return {"requests_per_s": len(latencies) / seconds, "texts_per_s": texts / seconds, "errors": errors,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "requests": len(latencies), "client_cpu_s": time.process_time() - cpu}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_stats(port: int) -> tuple[float, float, float]:
    """The server's session calls, texts and padded tokens so far (from /metrics)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        text = b"".join(iter(lambda: s.recv(65536), b"")).decode()

    def value(name: str) -> float:
        found = re.search(rf"^e5_onnx_{name} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    return value("batch_texts_count"), value("batch_texts_sum"), value("batch_padded_tokens_sum")


def start_server(model_dir: Path, batching: str, args) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "e5_onnx.cli", "serve", "--model", str(model_dir), "--port", str(port),
                             "--batching", batching, "--log-level", "warning", "--max-queue-tokens", "1000000",
                             *shlex.split(args.server_args)])
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    if b" 200 " in s.recv(4096).split(b"\r\n")[0] + b" ":
                        return proc, port
            except OSError:
                pass
            time.sleep(0.1)
    except BaseException:  # not started: stop it rather than leave it behind
        proc.kill()
        proc.wait(60)
        raise

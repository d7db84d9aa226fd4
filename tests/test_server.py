"""`e5-onnx serve`, tested as a real server process on a free 127.0.0.1 port.

Equality tests use variant="fp32" servers wherever requests share batches (fp32 rows are
bit-for-bit independent of their batch-mates; INT8 rows to cosine >= 0.99999, ~97% of them
bit-identical: issue 12), and INT8 where the batch composition is identical by construction (one
request alone is batched as Embedder.encode batches it, so its rows must match to 1e-6).
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai
import pytest
from tokenizers import Tokenizer

from e5_onnx import Embedder

WORDS = "alpha beta gamma delta protein summit river stone cloud music paper engine garden winter".split()


def sentence(seed: int, words: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=words))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`e5-onnx serve` in a child process; its log goes to a file the failures quote."""

    def __init__(self, model: Path, *flags: str, env: dict | None = None, log: Path, wait: bool = True) -> None:
        self.port = free_port()
        self.log = log
        environ = {**os.environ, **(env or {})}
        args = [sys.executable, "-m", "e5_onnx.cli", "serve", "--port", str(self.port), *flags]
        if model is not None:
            args += ["--model", str(model)]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=environ)
        if wait:
            self.wait_ready()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited {self.proc.returncode}:\n{self.logs()}"
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready in {timeout} s:\n{self.logs()}")

    def request(self, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None,
                timeout: float = 60) -> tuple[int, dict, object]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = dict(headers or {})
            if isinstance(body, dict):
                body = json.dumps(body).encode()
                headers.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            kind = resp.getheader("content-type", "")
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data) if "json" in kind else data.decode()
        finally:
            conn.close()

    def embed(self, texts, timeout: float = 60, **fields) -> tuple[int, dict, object]:
        return self.request("POST", "/v1/embeddings", {"input": texts, "model": "e5", **fields}, timeout=timeout)

    def metric(self, name: str, headers: dict | None = None) -> float:
        status, _, text = self.request("GET", "/metrics", headers=headers)
        assert status == 200
        found = re.search(rf"^e5_onnx_{re.escape(name)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def assert_error(status: int, body: object, want_status: int, fragment: str = "") -> dict:
    assert status == want_status, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)
    assert fragment.lower() in error["message"].lower(), error["message"]
    assert "Traceback" not in error["message"]
    return error


@pytest.fixture(scope="module")
def tiny(tiny_exports) -> Path:
    return tiny_exports["wordpiece-bert"]


@pytest.fixture(scope="module")
def fp32_server(tiny, tmp_path_factory):
    """Small limits, so each one can be crossed with a small request."""
    server = Server(tiny, "--variant", "fp32", "--max-inputs", "64", "--max-chars", "2000",
                    "--max-body-bytes", "65536", "--body-timeout", "1",
                    log=tmp_path_factory.mktemp("srv") / "fp32.log")
    yield server
    assert server.stop() == 0, server.logs()


@pytest.fixture(scope="module")
def tiny_fp32(tiny) -> Embedder:
    return Embedder(tiny, variant="fp32")


# ---------------------------------------------------------------- equality with Embedder

def test_openai_client_equals_embedder_as_floats_and_base64(minilm_export, tmp_path):
    """Real MiniLM weights, fp32: the official client's vectors equal Embedder's (cos >= 0.99999)
    whatever the encoding; usage counts the tokens the model saw; truncation is reported."""
    texts = ["how much protein should a female eat", "summit define", "", "Москва",
             "the longest one " + "river stone cloud " * 300]  # > 512 tokens: truncated
    model = Embedder(minilm_export, variant="fp32")
    want = model.encode(texts)
    server = Server(minilm_export, "--variant", "fp32", "--served-model-name", "minilm-fp32", log=tmp_path / "log")
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0)
        floats = client.embeddings.create(model="minilm-fp32", input=texts, encoding_format="float")
        assert [d.index for d in floats.data] == list(range(len(texts)))
        assert cosines([d.embedding for d in floats.data], want).min() >= 0.99999
        raw = client.embeddings.create(model="minilm-fp32", input=texts, encoding_format="base64")
        decoded = [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in raw.data]
        assert cosines(decoded, want).min() >= 0.99999
        default = client.embeddings.create(model="minilm-fp32", input=texts)  # the client asks for base64 and decodes
        assert cosines([d.embedding for d in default.data], want).min() >= 0.99999
        assert floats.model == "minilm-fp32" and [m.id for m in client.models.list().data] == ["minilm-fp32"]

        tok = Tokenizer.from_file(str(minilm_export / "tokenizer.json"))
        tok.enable_truncation(model.max_length)
        assert floats.usage.prompt_tokens == floats.usage.total_tokens == sum(len(e.ids) for e in tok.encode_batch(texts))
        assert floats.usage.model_extra["truncated_texts"] == 1

        single = client.embeddings.create(model="x", input="summit define", extra_body={"input_type": "query"})
        assert cosines([single.data[0].embedding], model.encode_queries(["summit define"]))[0] >= 0.99999
        response = client.embeddings.with_raw_response.create(model="x", input=texts[-1:], encoding_format="float")
        assert response.headers["x-truncated-texts"] == "1"
    finally:
        assert server.stop() == 0, server.logs()


def test_lone_int8_request_is_batched_like_embedder_encode(tiny, tmp_path):
    """INT8 rows depend on their batch-mates; a request alone must get exactly Embedder.encode's
    batches (length-sorted, token budget, each padded to its own longest), hence its exact rows."""
    texts = [sentence(i, 1 + (i * 7) % 40) for i in range(70)]  # several batches of different widths
    want = Embedder(tiny).encode(texts)
    server = Server(tiny, log=tmp_path / "log")
    try:
        for _ in range(2):  # sequential requests: each alone in the queue
            status, _, body = server.embed(texts)
            assert status == 200, body
            np.testing.assert_allclose(np.array([d["embedding"] for d in body["data"]]), want, atol=1e-6)
    finally:
        assert server.stop() == 0, server.logs()


# ---------------------------------------------------------------- concurrency, overload

def test_64_concurrent_clients_are_each_answered_with_their_own_vectors(minilm_export, tmp_path):
    """A real model (MiniLM INT8, a few ms per call), so requests do arrive while the workers are
    busy: with the tiny model a worker finishes each request before the next one arrives."""
    texts = {i: [sentence(1000 * i + j, 2 + (i + j) % 30) for j in range(1 + i % 5)] for i in range(64)}
    embedder = Embedder(minilm_export)
    want = {i: embedder.encode(t) for i, t in texts.items()}
    server = Server(minilm_export, log=tmp_path / "server.log")
    try:
        start = threading.Barrier(64)

        def client(i):
            start.wait()
            return i, server.embed(texts[i])

        with ThreadPoolExecutor(64) as pool:
            results = list(pool.map(client, range(64)))
        for i, (status, _, body) in results:
            assert status == 200, body
            assert [d["index"] for d in body["data"]] == list(range(len(texts[i])))
            assert cosines([d["embedding"] for d in body["data"]], want[i]).min() >= 0.99999
        calls = server.metric("batch_texts_count")
        assert calls < 64, f"{calls} session calls for 64 concurrent requests: nothing was batched together"
    finally:
        assert server.stop() == 0, server.logs()


def test_overload_gets_429_with_retry_after_then_recovers(tiny, tiny_fp32, tmp_path):
    server = Server(tiny, "--variant", "fp32", "--max-queue-texts", "50", "--max-queue-tokens", "100000",
                    log=tmp_path / "log")
    texts = [sentence(i, 60) for i in range(40)]  # two of these never fit in the queue together
    want = tiny_fp32.encode(texts)
    try:
        statuses = []
        for wave in range(3):  # bounded: stop at the first wave that overflowed
            start = threading.Barrier(24)

            def client(_):
                start.wait()
                return server.embed(texts)

            with ThreadPoolExecutor(24) as pool:
                results = list(pool.map(client, range(24)))
            for status, headers, body in results:
                statuses.append(status)
                if status == 429:
                    assert_error(status, body, 429, "queue is full")
                    assert int(headers["retry-after"]) >= 1
                else:
                    assert status == 200, body
                    assert cosines([d["embedding"] for d in body["data"]], want).min() >= 0.99999
            if 429 in statuses:
                break
        assert 429 in statuses and 200 in statuses, statuses
        assert server.metric("queue_texts") == 0
        status, _, body = server.embed(texts)
        assert status == 200 and len(body["data"]) == 40
        status, _, body = server.embed([sentence(i, 3) for i in range(51)])  # can never fit: not a 429
        assert_error(status, body, 422, "E5_ONNX_MAX_QUEUE_TEXTS")
    finally:
        assert server.stop() == 0, server.logs()


@pytest.mark.parametrize("kind", ["int8", "uint8", "binary", "ubinary", "binary-centred", "ubinary-centred"])
def test_embedding_type_gives_embedder_codes_as_integers_and_base64_bytes(fp32_server, tiny_fp32, kind):
    texts = [sentence(i, 4 + i) for i in range(5)]
    want = tiny_fp32.encode(texts, precision=kind)
    status, _, body = fp32_server.embed(texts, embedding_type=kind)
    assert status == 200, body
    assert np.array_equal(np.array([d["embedding"] for d in body["data"]], dtype=want.dtype), want)
    status, _, body = fp32_server.embed(texts, embedding_type=kind, encoding_format="base64")
    assert status == 200, body
    raw = [np.frombuffer(base64.b64decode(d["embedding"]), dtype=want.dtype) for d in body["data"]]
    assert np.array_equal(np.array(raw), want) and len(base64.b64decode(body["data"][0]["embedding"])) == want.shape[1]
    status, _, body = fp32_server.embed(texts, embedding_type="float")
    assert status == 200 and cosines([d["embedding"] for d in body["data"]], tiny_fp32.encode(texts)).min() >= 0.99999


# ---------------------------------------------------------------- bad requests

JSON = {"Content-Type": "application/json"}
BAD = [
    ("malformed json", JSON, b'{"input": ', 400, "not valid JSON", None),
    ("not an object", JSON, b'["a"]', 400, "JSON object", None),
    ("no input", JSON, b'{"model": "e5"}', 400, "'input' is required", "input"),
    ("input a number", JSON, b'{"input": 5}', 400, "string or a list", "input"),
    ("input an object", JSON, b'{"input": {"a": 1}}', 400, "string or a list", "input"),
    ("an item a number", JSON, b'{"input": ["a", 3]}', 400, "input[1] is a number, not a string; token arrays", "input"),
    ("token arrays", JSON, b'{"input": [[101, 102]]}', 400, "token arrays", "input"),
    ("null item", JSON, b'{"input": ["a", null]}', 400, "input[1] is null, not a string", "input"),
    ("empty input", JSON, b'{"input": []}', 400, "empty list", "input"),
    ("too many inputs", JSON, json.dumps({"input": ["a"] * 65}).encode(), 422, "E5_ONNX_MAX_INPUTS", "input"),
    ("text too long", JSON, json.dumps({"input": ["a", "b" * 2001]}).encode(), 422, "input[1] has 2001", "input"),
    ("body too big", JSON, json.dumps({"input": ["a " * 900] * 40}).encode(), 413, "E5_ONNX_MAX_BODY_BYTES", None),
    ("text/plain", {"Content-Type": "text/plain"}, b'{"input": "a"}', 415, "application/json", None),
    ("no content type", {}, b'{"input": "a"}', 415, "missing", None),
    ("bad encoding_format", JSON, b'{"input": "a", "encoding_format": "int8"}', 400, "choose one of", "encoding_format"),
    ("dimensions not the model's", JSON, b'{"input": "a", "dimensions": 32}', 400, "Matryoshka", "dimensions"),
    ("dimensions a string", JSON, b'{"input": "a", "dimensions": "64"}', 400, "an integer", "dimensions"),
    ("bad input_type", JSON, b'{"input": "a", "input_type": "document"}', 400, "'input_type'", "input_type"),
    ("model a number", JSON, b'{"input": "a", "model": 3}', 400, "'model' must be a string", "model"),
    ("lone surrogate", JSON, b'{"input": ["ok", "x\\ud800y"]}', 400, "input[1] holds an unpaired UTF-16 surrogate escape (U+D800 at character 1)", "input"),
    ("invalid utf-8", JSON, b'{"input": "caf\xe9"}', 400, "not valid UTF-8", None),
    ("unknown embedding_type", JSON, b'{"input": "a", "embedding_type": "int4"}', 400,
     "unknown embedding_type 'int4': choose one of ('float', 'int8', 'uint8', 'binary', 'ubinary', 'binary-centred', "
     "'ubinary-centred')", "embedding_type"),
    ("embedding_type upper case", JSON, b'{"input": "a", "embedding_type": "INT8"}', 400, "choose one of", "embedding_type"),
    ("embedding_type float32", JSON, b'{"input": "a", "embedding_type": "float32"}', 400, "choose one of", "embedding_type"),
    ("embedding_type a number", JSON, b'{"input": "a", "embedding_type": 8}', 400, "unknown embedding_type 8", "embedding_type"),
    ("nested deep", JSON, b'{"input": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", 400, "", None),
]


@pytest.mark.parametrize("name,headers,body,status,fragment,param", BAD, ids=[b[0] for b in BAD])
def test_bad_request_gets_a_json_error_naming_the_problem(fp32_server, name, headers, body, status, fragment, param):
    got, _, response = fp32_server.request("POST", "/v1/embeddings", body, headers)
    error = assert_error(got, response, status, fragment)
    assert error["param"] == param


@pytest.mark.parametrize("method,path,status", [("GET", "/v1/embeddings", 405), ("POST", "/v1/models", 405),
                                                ("GET", "/v2/embeddings", 404), ("DELETE", "/health", 405)])
def test_unknown_routes_and_methods_get_json_errors(fp32_server, method, path, status):
    got, _, body = fp32_server.request(method, path)
    assert_error(got, body, status)


def test_huge_texts_within_limits_are_truncated_and_counted(fp32_server, tiny_fp32):
    texts = [sentence(i, 330)[:2000] for i in range(16)] + ["short"]  # 2,000 characters: far past 64 tokens
    before = fp32_server.metric("truncated_texts_total")
    status, headers, body = fp32_server.embed(texts, dimensions=64)  # the model's own dimension is accepted
    assert status == 200, body
    assert body["usage"]["truncated_texts"] == 16 and headers["x-truncated-texts"] == "16"
    assert cosines([d["embedding"] for d in body["data"]], tiny_fp32.encode(texts)).min() >= 0.99999
    assert fp32_server.metric("truncated_texts_total") - before == 16


def test_slow_body_times_out_with_408_and_blocks_nobody(fp32_server):
    with socket.create_connection(("127.0.0.1", fp32_server.port), timeout=30) as slow:
        slow.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"input\": ")
        status, _, body = fp32_server.embed(["meanwhile"])  # served while the slow body is pending
        assert status == 200, body
        reply = http.client.HTTPResponse(slow)  # --body-timeout 1
        reply.begin()
        assert_error(reply.status, json.loads(reply.read()), 408, "E5_ONNX_BODY_TIMEOUT")


def test_client_leaving_mid_body_does_not_hurt_the_server(fp32_server):
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", fp32_server.port), timeout=30) as gone:
            gone.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 5000\r\n\r\n{\"input\": [\"abc")
    status, _, body = fp32_server.embed(["still here"])
    assert status == 200, body


def test_disconnected_clients_texts_leave_the_queue(minilm_export, tmp_path):
    """Batching off: one request at a time, so the later ones are still queued when their clients
    leave. Every text is either run or dropped, never both, never lost."""
    server = Server(minilm_export, "--batching", "off", log=tmp_path / "log")
    texts = [sentence(i, 150) for i in range(32)]
    payload = json.dumps({"input": texts}).encode()
    request = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    try:
        sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(6)]
        for s in sockets:
            s.sendall(request)
        deadline = time.monotonic() + 30
        while server.metric("queue_texts") < 64 and time.monotonic() < deadline:  # at least 2 jobs waiting
            time.sleep(0.01)
        assert server.metric("queue_texts") >= 64
        for s in sockets:
            s.close()
        while server.metric("queue_texts") > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.metric("queue_texts") == 0
        dropped, run = server.metric("dropped_texts_total"), server.metric("batch_texts_sum")
        assert dropped >= 32, "a whole waiting request should have been dropped"
        assert dropped + run == 6 * 32
        assert server.embed(["after"])[0] == 200
        assert 'route="/v1/embeddings",status="499"' in server.request("GET", "/metrics")[2]
    finally:
        assert server.stop() == 0, server.logs()


# ---------------------------------------------------------------- lifecycle, auth, metrics

def test_sigterm_under_load_answers_every_accepted_request_and_exits_0(minilm_export, tmp_path):
    server = Server(minilm_export, "--variant", "fp32", "--grace", "60", log=tmp_path / "log")
    texts = [sentence(i, 40) for i in range(16)]
    want = Embedder(minilm_export, variant="fp32").encode(texts)
    outcomes: list[tuple[float, float, object]] = []  # (sent, done, status or exception name)
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                status, _, body = server.embed(texts)
                if status == 200:
                    assert cosines([d["embedding"] for d in body["data"]], want).min() >= 0.99999
                outcomes.append((sent, time.monotonic(), status))
            except (OSError, http.client.HTTPException) as gone:  # refused or closed: never accepted
                outcomes.append((sent, time.monotonic(), type(gone).__name__))
                return

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    term = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(90) == 0, server.logs()
    stop.set()
    for t in threads:
        t.join(60)
    before = [o for o in outcomes if o[0] < term - 0.05]
    assert before and all(status == 200 for _, _, status in before), before
    assert any(done > term for _, done, _ in before), "no request was in flight at SIGTERM"
    assert all(status == 200 or isinstance(status, str) for _, _, status in outcomes), outcomes


def test_api_key_guards_every_route_but_health(tiny, tmp_path):
    port_env = {"E5_ONNX_API_KEY": "s3cret", "E5_ONNX_MODEL": str(tiny)}  # configured from the environment
    server = Server(None, env=port_env, log=tmp_path / "log")
    try:
        assert server.request("GET", "/health")[0] == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            for method, path in (("GET", "/metrics"), ("GET", "/v1/models"), ("POST", "/v1/embeddings")):
                status, got, body = server.request(method, path, b"{}", headers)
                assert_error(status, body, 401, "API key")
                assert got["www-authenticate"] == "Bearer"
        good = {"Authorization": "Bearer s3cret"}
        assert server.request("GET", "/metrics", headers=good)[0] == 200
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="s3cret", max_retries=0)
        assert len(client.embeddings.create(model="e5", input=["a", "b"]).data) == 2
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="nope",
                          max_retries=0).embeddings.create(model="e5", input="a")
    finally:
        assert server.stop() == 0, server.logs()


def test_without_api_key_no_header_is_needed(fp32_server):
    assert fp32_server.request("GET", "/metrics")[0] == 200
    assert fp32_server.embed("no key")[0] == 200


def test_health_is_503_until_the_model_is_loaded(minilm_export, tmp_path):
    """fp32 MiniLM: hashing 90 MB and building its session leaves a window in which the server
    listens but has no model; both /health and /v1/embeddings say so with 503."""
    server = Server(minilm_export, "--variant", "fp32", log=tmp_path / "log", wait=False)
    try:
        health: list[int] = []
        embed: list[int] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and 200 not in health:
            assert server.proc.poll() is None, server.logs()
            try:
                status, _, body = server.embed(["early"], timeout=5)
            except OSError:  # not listening yet
                time.sleep(0.005)
                continue
            embed.append(status)
            if status == 503:
                assert_error(status, body, 503, "loading")
            status, _, body = server.request("GET", "/health", timeout=5)
            health.append(status)
            assert body["status"] == ("ok" if status == 200 else "loading")
        print(f"{len(health)} polls; 503 from /health {health.count(503)}, from /v1/embeddings {embed.count(503)}")
        assert embed[0] == 503 and health[0] == 503 and health[-1] == 200, (embed, health)
        assert health == sorted(health, reverse=True) and embed == sorted(embed, reverse=True)  # 503s, then 200s
        assert server.embed(["ready"])[0] == 200
    finally:
        assert server.stop() == 0, server.logs()


def test_metrics_count_what_was_served(fp32_server):
    def scrape() -> str:
        return fp32_server.request("GET", "/metrics")[2]

    texts = ["one text", "two texts here", "three"]
    before = {k: fp32_server.metric(k) for k in ("texts_total", "tokens_total")}
    status, _, body = fp32_server.embed(texts)
    assert status == 200
    assert fp32_server.metric("texts_total") - before["texts_total"] == 3
    assert fp32_server.metric("tokens_total") - before["tokens_total"] == body["usage"]["prompt_tokens"]
    text = scrape()
    assert re.search(r'^e5_onnx_requests_total\{route="/v1/embeddings",status="200"\} [1-9]', text, re.M)
    for name in ("batch_texts", "request_seconds"):
        buckets = [float(v) for v in re.findall(rf'^e5_onnx_{name}_bucket\{{le="[^"]+"\}} (\S+)$', text, re.M)]
        count = float(re.search(rf"^e5_onnx_{name}_count (\S+)$", text, re.M).group(1))
        assert buckets == sorted(buckets) and buckets[-1] == count > 0
    for line in text.splitlines():  # Prometheus text format: comments or "name{labels} value"
        assert line.startswith("# ") or re.fullmatch(r"[a-z_][a-z0-9_]*(\{[^}]*\})? -?[0-9.e+-]+", line), line


def test_export_failing_its_hash_check_stops_the_server_with_one_line(tiny, tmp_path):
    """The manifest is read before binding; the files are hashed in the background load, whose
    failure must end the process (exit 1, the reason on one line) rather than leave it serving 503s."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    with open(broken / "tokenizer.json", "a") as f:
        f.write(" ")
    server = Server(broken, log=tmp_path / "log", wait=False)
    assert server.proc.wait(120) == 1, server.logs()
    errors = [line for line in server.logs().splitlines() if "e5-onnx serve: error:" in line]
    assert len(errors) == 1 and "sha256 mismatch" in errors[0] and "Traceback" not in server.logs()


def test_cli_errors_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "e5_onnx.cli", "serve", "--model", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "e5_onnx.cli", "serve", "--port", "many"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--port" in proc.stderr


def test_workers_and_threads_read_flags_and_environment(monkeypatch, capsys):
    from e5_onnx.serving.server import parse_args

    monkeypatch.setenv("E5_ONNX_WORKERS", "3")
    settings = parse_args(["--model", "m", "--threads", "2"])
    assert (settings.workers, settings.threads) == (3, 2)
    monkeypatch.delenv("E5_ONNX_WORKERS")
    assert (parse_args(["--model", "m"]).workers, parse_args(["--model", "m"]).threads) == (None, None)  # automatic
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--model", "m", "--workers", "-1"])
    assert exit_.value.code == 2 and "--workers must be 0 (automatic) or positive" in capsys.readouterr().err

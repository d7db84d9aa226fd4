"""A Lambda Runtime API (2018-06-01) on 127.0.0.1 for tests: the four endpoints a runtime client uses.

GET  /2018-06-01/runtime/invocation/next           -> the next queued event (blocks until there is one)
POST /2018-06-01/runtime/invocation/{id}/response  -> 202, recorded
POST /2018-06-01/runtime/invocation/{id}/error     -> 202, recorded with Lambda-Runtime-Function-Error-Type
POST /2018-06-01/runtime/init/error                -> 202, recorded

Headers on `next` as Lambda sends them: Lambda-Runtime-Aws-Request-Id, -Deadline-Ms,
-Invoked-Function-Arn, -Trace-Id. An unknown or already answered request id gets 400.
Times are recorded so a test can report init (first `next`) and per-invocation latency.
"""
from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a killed runtime resets its pending `next`
        pass

PREFIX = "/2018-06-01/runtime"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:e5-test"


@dataclass
class Invocation:
    request_id: str
    body: bytes
    handed_out: float = 0.0  # perf_counter when `next` returned it
    answered: float = 0.0
    kind: str = ""  # "response" or "error"
    answer: bytes = b""
    error_type: str = ""
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def seconds(self) -> float:
        return self.answered - self.handed_out

    def json(self):
        return json.loads(self.answer)


class RuntimeApi:
    """Start with `with RuntimeApi() as api:`; `api.address` is AWS_LAMBDA_RUNTIME_API."""

    def __init__(self):
        self.pending: queue.Queue[Invocation] = queue.Queue()
        self.invocations: dict[str, Invocation] = {}
        self.init_errors: list[tuple[str, dict]] = []  # (Lambda-Runtime-Function-Error-Type, body)
        self.first_next: float | None = None
        self.init_error_event = threading.Event()
        self.lock = threading.Lock()
        self.server = QuietServer(("127.0.0.1", 0), self._handler_class())
        self.address = "127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RuntimeApi:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def invoke(self, event, timeout: float = 300, alive=lambda: True) -> Invocation:
        """Queue `event` (a JSON value, or raw bytes) and wait for the runtime's answer; TimeoutError
        if none comes in `timeout` s or `alive()` turns false (the runtime exited)."""
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        inv = Invocation(str(uuid.uuid4()), body)
        with self.lock:
            self.invocations[inv.request_id] = inv
        self.pending.put(inv)
        deadline = time.monotonic() + timeout
        while not inv.done.wait(0.5):
            if not alive() or time.monotonic() > deadline:
                raise TimeoutError(f"no answer to invocation {inv.request_id}")
        return inv

    def _handler_class(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path != PREFIX + "/invocation/next":
                    return self._reply(404, b'{"errorMessage":"not found"}')
                with api.lock:
                    if api.first_next is None:
                        api.first_next = time.perf_counter()
                inv = api.pending.get()
                inv.handed_out = time.perf_counter()
                self._reply(200, inv.body, {
                    "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                    "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 300_000),
                    "Lambda-Runtime-Invoked-Function-Arn": ARN,
                    "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                error_type = self.headers.get("Lambda-Runtime-Function-Error-Type", "")
                if self.path == PREFIX + "/init/error":
                    api.init_errors.append((error_type, json.loads(body or b"{}")))
                    api.init_error_event.set()
                    return self._reply(202, b'{"status":"OK"}')
                parts = self.path[len(PREFIX):].split("/")  # "", "invocation", id, kind
                if not self.path.startswith(PREFIX) or len(parts) != 4 or parts[3] not in ("response", "error"):
                    return self._reply(404, b'{"errorMessage":"not found"}')
                with api.lock:
                    inv = api.invocations.get(parts[2])
                    if inv is None or inv.kind:
                        return self._reply(400, b'{"errorMessage":"unknown or answered request id"}')
                    inv.kind, inv.answer, inv.error_type, inv.answered = parts[3], body, error_type, time.perf_counter()
                self._reply(202, b'{"status":"OK"}')
                inv.done.set()

        return Handler

"""The server's batcher in-process: which jobs share a pool, in which order pools run.

`test_server.py` covers the batcher through HTTP; these tests drive `Batcher` directly so they can
see each session call (`on_batch`) and the order in which requests are answered.
"""
from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from e5_onnx import Embedder
from e5_onnx.serving.batcher import Batcher


@pytest.fixture(scope="module")
def embedder(tiny_exports) -> Embedder:
    return Embedder(tiny_exports["wordpiece-bert"], batch_size=4, max_batch_tokens=512)


def texts_of(job: int, n: int) -> list[str]:
    return [f"request {job} text {i} " + "word " * (3 + (7 * job + i) % 20) for i in range(n)]


def make(embedder: Embedder, calls: list[int], **kw) -> Batcher:
    return Batcher(embedder, max_queue_texts=10_000, max_queue_tokens=1_000_000,
                   on_batch=lambda texts, padded, seconds: calls.append(texts), **kw)


async def submit(batcher: Batcher, embedder: Embedder, texts: list[str]):
    return batcher.submit(embedder.tokenizer.encode(texts), asyncio.get_running_loop())


def test_deep_queue_is_served_oldest_first_in_bounded_pools(embedder):
    """With a pool bounded below two jobs' tokens, 12 queued jobs are answered in exactly the order
    they came (no job waits for the whole queue), and each gets Embedder.encode's rows."""
    requests = [texts_of(j, 3) for j in range(12)]
    smallest = min(sum(len(e.ids) for e in embedder.tokenizer.encode(t)) for t in requests)
    calls: list[int] = []
    batcher = make(embedder, calls, max_pool_tokens=smallest)  # one job per pool
    finished: list[int] = []

    async def run():
        jobs = [await submit(batcher, embedder, t) for t in requests]
        for k, job in enumerate(jobs):
            job.future.add_done_callback(lambda _, k=k: finished.append(k))
        return await asyncio.wait_for(asyncio.gather(*(j.future for j in jobs)), 60)

    try:
        rows = asyncio.run(run())
    finally:
        batcher.close(30)
    assert finished == list(range(12))
    for got, texts in zip(rows, requests):
        np.testing.assert_allclose(got, embedder.encode(texts), atol=1e-6)
    assert sum(calls) == 36


def test_unbounded_pool_takes_every_waiting_job_together(embedder):
    """The default bound (8 x max_batch_tokens) holds these 12 small jobs: queued before the worker
    looks, they share one pool, so far fewer session calls than requests."""
    calls: list[int] = []
    batcher = make(embedder, calls)

    async def run():
        with batcher._cond:  # hold the worker off until all 12 are queued
            jobs = [await submit(batcher, embedder, texts_of(j, 1)) for j in range(12)]
        return await asyncio.wait_for(asyncio.gather(*(j.future for j in jobs)), 60)

    try:
        asyncio.run(run())
    finally:
        batcher.close(30)
    assert sum(calls) == 12 and len(calls) <= 4, calls


def test_two_workers_share_a_pool_and_answer_every_text_once(embedder):
    """With 2 workers, one request's calls run side by side on both threads (on_batch holds each
    worker 50 ms, so the second must take the next call of the same pool), and 20 concurrent
    requests of 1-9 texts each get exactly Embedder.encode's rows, every text run once."""
    seen: list[tuple[str, float, float]] = []

    def on_batch(texts, padded, seconds):
        start = time.perf_counter()
        time.sleep(0.05)
        seen.append((threading.current_thread().name, start, time.perf_counter()))
        calls.append(texts)

    calls: list[int] = []
    batcher = Batcher(embedder, max_queue_texts=10_000, max_queue_tokens=1_000_000, workers=2, on_batch=on_batch)
    requests = [texts_of(j, 1 + j % 9) for j in range(20)]

    async def run():
        one = await submit(batcher, embedder, texts_of(99, 16))  # 4 calls of batch_size 4
        first = await asyncio.wait_for(one.future, 60)
        jobs = [await submit(batcher, embedder, t) for t in requests]
        return first, await asyncio.wait_for(asyncio.gather(*(j.future for j in jobs)), 60)

    try:
        first, rows = asyncio.run(run())
    finally:
        batcher.close(30)
    np.testing.assert_allclose(first, embedder.encode(texts_of(99, 16)), atol=1e-6)
    pool = seen[:4]
    assert {name for name, _, _ in pool} == {"e5-onnx-worker-0", "e5-onnx-worker-1"}, pool
    assert any(a[1] < b[2] and b[1] < a[2] for a in pool for b in pool if a[0] != b[0]), "no two calls overlapped"
    for got, texts in zip(rows, requests):
        np.testing.assert_allclose(got, embedder.encode(texts), atol=1e-6)
    assert sum(calls) == 16 + sum(map(len, requests))
    assert batcher.queued_texts == 0 and batcher.queued_tokens == 0


class FailsOnce:
    """`part` (the embedder's session or tokenizer) with `method` raising on its first call:
    `session.run` as a runtime failure would, `tokenizer.batch_encodings` as a bug in planning would."""

    def __init__(self, part, method: str, message: str) -> None:
        self._part, self._method, self._message, self.failed = part, method, message, False

    def __getattr__(self, name):
        return self._once if name == self._method else getattr(self._part, name)

    def _once(self, *args):
        if not self.failed:
            self.failed = True
            raise RuntimeError(self._message)
        return getattr(self._part, self._method)(*args)


def failing(embedder: Embedder, part: str, method: str, message: str) -> SimpleNamespace:
    """What the batcher reads of an embedder, with one part failing once."""
    fields = {k: getattr(embedder, k) for k in ("tokenizer", "session", "batch_size", "max_batch_tokens", "dim")}
    return SimpleNamespace(**{**fields, part: FailsOnce(fields[part], method, message)})


def test_a_failed_call_fails_its_requests_only(embedder):
    """The requests with a text in the failed call get its error (and their other calls are
    skipped); every other request is answered; the queue counts return to zero."""
    calls: list[int] = []
    batcher = make(embedder, calls, workers=2)
    batcher.embedder = failing(embedder, "session", "run", "onnxruntime failed")
    requests = [texts_of(j, 1 + j % 6) for j in range(10)]

    async def run():
        with batcher._cond:  # one pool: the first call holds the longest texts
            jobs = [await submit(batcher, embedder, t) for t in requests]
        return await asyncio.wait_for(asyncio.gather(*(j.future for j in jobs), return_exceptions=True), 60)

    try:
        results = asyncio.run(run())
    finally:
        batcher.close(30)
    failed = [k for k, r in enumerate(results) if isinstance(r, Exception)]
    assert failed and len(failed) < len(requests)
    assert all(str(results[k]) == "onnxruntime failed" for k in failed)
    for k, got in enumerate(results):
        if k not in failed:
            np.testing.assert_allclose(got, embedder.encode(requests[k]), atol=1e-6)
    assert batcher.queued_texts == 0 and batcher.queued_tokens == 0 and batcher.dropped_texts == 0


def test_a_failed_plan_fails_its_pool_and_the_workers_keep_serving(embedder):
    calls: list[int] = []
    batcher = make(embedder, calls, workers=2)
    batcher.embedder = failing(embedder, "tokenizer", "batch_encodings", "planning failed")

    async def run():
        with batcher._cond:  # the first three share the pool whose planning fails
            first = [await submit(batcher, embedder, texts_of(j, 2)) for j in range(3)]
        failed = await asyncio.wait_for(asyncio.gather(*(j.future for j in first), return_exceptions=True), 60)
        later = await submit(batcher, embedder, texts_of(7, 3))
        return failed, await asyncio.wait_for(later.future, 60)

    try:
        failed, later = asyncio.run(run())
    finally:
        batcher.close(30)
    assert [str(f) for f in failed] == ["planning failed"] * 3
    np.testing.assert_allclose(later, embedder.encode(texts_of(7, 3)), atol=1e-6)
    assert batcher.queued_texts == 0 and batcher.queued_tokens == 0

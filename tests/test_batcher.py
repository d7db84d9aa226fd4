"""The server's batcher in-process: which jobs share a pool, in which order pools run.

`test_server.py` covers the batcher through HTTP; these tests drive `Batcher` directly so they can
see each session call (`on_batch`) and the order in which requests are answered.
"""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from e5_onnx import Embedder
from e5_onnx.batcher import Batcher


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

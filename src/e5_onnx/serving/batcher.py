"""Dynamic batching for the server: one queue, one planner, `workers` threads calling one session.

Requests hand in their tokenised texts; a free worker pools every text waiting at that moment and
cuts the pool into batches exactly as `Embedder.encode` cuts one list (`TextTokenizer.
batch_encodings`: length-sorted, at most `batch_size` texts and `max_batch_tokens` padded tokens,
each batch padded to its own longest). The batches go to a shared list of planned calls, so the
next free worker runs the next batch of the same pool before it pools anything new. A lone request
is therefore batched exactly as `Embedder.encode` would batch it. Each request's future is
resolved on its event loop as soon as its own last text is done, not when the pool is. The queue
is bounded in texts and in tokens; a job whose client went away is dropped from it.

Why several workers over one session (onnxruntime's `run` is thread-safe), each call on one
thread: the server's calls are small (a pool is what arrived while the last one ran), and a small
call split over two threads spends much of its time waking and waiting for the other thread. Two
one-thread calls side by side did 1.7x the texts/s of one two-thread call on 16-query lists, and
one query takes the same time on one thread as on two with spinning off (benchmarks/README.md#serve).

Pools are taken oldest first until they hold `max_pool_tokens` tokens, so under a deep queue the
oldest requests finish first instead of every request waiting for the whole queue. A worker
never waits for batch-mates: the pool is whatever arrived while the last one ran (waiting 2-10 ms
for more measured slower at 8 and 32 clients).

With batching off, a worker takes one request at a time (the `Embedder.encode` of its texts
alone): the baseline `benchmarks/serve.py` compares against.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
from tokenizers import Encoding

from ..pool import mean_pool_normalize
from ..tokenize import Batch


class QueueFull(Exception):
    """The queue cannot take the job now; `retry_after` is the estimated seconds until it can."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(eq=False)
class Job:
    """One request's texts; `future` (on `loop`) gets the (n, dim) float32 rows in input order."""

    encodings: list[Encoding]
    tokens: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    out: np.ndarray
    remaining: int  # texts not yet embedded or dropped
    remaining_tokens: int
    cancelled: bool = False  # the client went away, or the job failed: its unrun texts are skipped
    failed: bool = False
    queued: bool = True  # still waiting in the queue (not yet in the worker's pool)


def _resolve(job: Job) -> None:
    if not job.future.done():  # the request may have been cancelled meanwhile
        job.future.set_result(job.out)


def _fail(job: Job, error: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(error)


class Batcher:
    """Runs `embedder`'s session from `workers` threads. `submit` is called on the event loop and never
    blocks on inference; `on_batch(texts, padded_tokens, seconds)` is called from a worker after each call."""

    def __init__(self, embedder, *, max_queue_texts: int, max_queue_tokens: int, batching: bool = True,
                 workers: int = 1, max_pool_tokens: int | None = None,
                 on_batch: Callable[[int, int, float], None] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.embedder = embedder
        self.max_queue_texts = max_queue_texts
        self.max_queue_tokens = max_queue_tokens
        self.batching = batching
        self.workers = workers
        self.max_pool_tokens = max_pool_tokens or 8 * embedder.max_batch_tokens
        self.on_batch = on_batch or (lambda *_: None)
        self.queued_texts = 0  # accepted and not yet embedded (waiting, planned or running)
        self.queued_tokens = 0
        self.dropped_texts = 0  # texts of cancelled jobs that were never run
        self._seconds_per_token = 2e-4  # running estimate per worker, for Retry-After
        self._pending: deque[Job] = deque()  # jobs not yet pooled, oldest first
        self._calls: deque[tuple[list[tuple[Job, int]], Batch]] = deque()  # planned, not yet started
        self._cond = threading.Condition()
        self._stopping = False
        self._planning = False  # a worker is cutting a pool into calls (outside the lock)
        self._threads = [threading.Thread(target=self._run, name=f"e5-onnx-worker-{k}", daemon=True)
                         for k in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, encodings: list[Encoding], loop: asyncio.AbstractEventLoop) -> Job:
        """Queue one request's texts, or raise QueueFull (or ValueError if it can never fit)."""
        n, tokens = len(encodings), sum(len(e.ids) for e in encodings)
        if n > self.max_queue_texts or tokens > self.max_queue_tokens:
            raise ValueError(f"the request holds {n} texts and {tokens} tokens; the queue holds at most "
                             f"{self.max_queue_texts} texts and {self.max_queue_tokens} tokens "
                             "(E5_ONNX_MAX_QUEUE_TEXTS / E5_ONNX_MAX_QUEUE_TOKENS): split it")
        job = Job(encodings, tokens, loop, loop.create_future(),
                  np.empty((n, self.embedder.dim), dtype=np.float32), n, tokens)
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down", retry_after=1)
            if self.queued_texts + n > self.max_queue_texts or self.queued_tokens + tokens > self.max_queue_tokens:
                wait = math.ceil((self.queued_tokens + tokens) * self._seconds_per_token / self.workers)
                raise QueueFull(f"the queue is full ({self.queued_texts} texts, {self.queued_tokens} tokens "
                                "waiting): retry later", retry_after=max(1, wait))
            self.queued_texts += n
            self.queued_tokens += tokens
            if n == 0:
                job.future.set_result(job.out)
            else:
                self._pending.append(job)
                self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """The client went away: drop the job's waiting texts (texts already in a running call finish;
        texts in planned calls are skipped when their call starts)."""
        with self._cond:
            if job.cancelled or job.remaining == 0:
                return
            job.cancelled = True
            if job.queued:  # still waiting: nothing of it has run
                self._pending.remove(job)
                job.queued = False
                self.dropped_texts += job.remaining
                self._release(job, job.remaining, job.remaining_tokens)

    def close(self, timeout: float | None = None) -> None:
        """Finish everything accepted, then stop the workers."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _release(self, job: Job, texts: int, tokens: int) -> None:
        job.remaining -= texts
        job.remaining_tokens -= tokens
        self.queued_texts -= texts
        self.queued_tokens -= tokens

    def _take(self) -> tuple[list[tuple[Job, int]], Batch] | None:
        """The next planned call; when there is none, the waiting jobs pooled (oldest first) and
        planned. One worker plans at a time, outside the lock (cutting and padding a deep pool
        takes a few ms that `submit` on the event loop must not wait for), so pools run in order."""
        with self._cond:
            while not self._calls:
                if self._pending and not self._planning:
                    self._plan_next()
                elif self._stopping and not self._pending and not self._planning:
                    return None  # everything accepted is done
                else:
                    self._cond.wait()
            return self._calls.popleft()

    def _plan_next(self) -> None:
        """Pool the oldest waiting jobs and cut them into calls; called and returns holding the lock."""
        jobs = self._pool()
        self._planning = True
        self._cond.release()
        try:
            calls, error = self._plan(jobs), None
        except Exception as failure:  # a bug: fail this pool's requests, keep serving
            calls, error = [], failure
        finally:
            self._cond.acquire()
            self._planning = False
        for job in jobs if error else ():
            self._release(job, job.remaining, job.remaining_tokens)
            job.failed = job.cancelled = True
            job.loop.call_soon_threadsafe(_fail, job, error)
        self._calls.extend(calls)
        self._cond.notify_all()

    def _pool(self) -> list[Job]:
        jobs = [self._pending.popleft()]
        tokens = jobs[0].remaining_tokens
        while self.batching and self._pending and tokens + self._pending[0].remaining_tokens <= self.max_pool_tokens:
            jobs.append(self._pending.popleft())
            tokens += jobs[-1].remaining_tokens
        for job in jobs:
            job.queued = False
        return jobs

    def _plan(self, jobs: list[Job]) -> list[tuple[list[tuple[Job, int]], Batch]]:
        rows = [(job, i) for job in jobs for i in range(len(job.encodings))]
        encodings = [job.encodings[i] for job, i in rows]
        e = self.embedder
        return [([rows[k] for k in batch.order], batch)
                for batch in e.tokenizer.batch_encodings(encodings, e.batch_size, e.max_batch_tokens)]

    def _run(self) -> None:
        while (call := self._take()) is not None:
            rows, batch = call
            try:
                self._embed(rows, batch)
            except Exception as error:  # a bug or a runtime failure: fail these requests, keep serving
                self._fail_call(rows, error)

    def _embed(self, rows: list[tuple[Job, int]], batch: Batch) -> None:
        keep = np.fromiter((not job.cancelled for job, _ in rows), dtype=bool, count=len(rows))
        ids, mask = batch.input_ids, batch.attention_mask
        if not keep.all():  # a client left after the pool was cut: skip its texts
            self._skip([row for row, k in zip(rows, keep) if not k])
            if not keep.any():
                return
            rows = [row for row, k in zip(rows, keep) if k]
            ids, mask = ids[keep], mask[keep]
            width = int(mask.sum(axis=1).max())
            ids, mask = ids[:, :width], mask[:, :width]
        start = time.perf_counter()
        vectors = mean_pool_normalize(self.embedder.session.run(ids, mask), mask)
        seconds = time.perf_counter() - start
        self._seconds_per_token = 0.8 * self._seconds_per_token + 0.2 * seconds / mask.size
        self.on_batch(len(rows), int(mask.size), seconds)  # before the answers: /metrics already counts them
        self._deliver(rows, vectors)

    def _deliver(self, rows: list[tuple[Job, int]], vectors: np.ndarray) -> None:
        with self._cond:
            for (job, i), vector in zip(rows, vectors):
                job.out[i] = vector
                self._release(job, 1, len(job.encodings[i].ids))
                if job.remaining == 0 and not job.cancelled:
                    job.loop.call_soon_threadsafe(_resolve, job)

    def _skip(self, rows: list[tuple[Job, int]]) -> None:
        with self._cond:
            for job, i in rows:
                self._release(job, 1, len(job.encodings[i].ids))
                self.dropped_texts += not job.failed

    def _fail_call(self, rows: list[tuple[Job, int]], error: BaseException) -> None:
        """Fail every request with a text in this call; their texts in later calls are skipped."""
        with self._cond:
            for job, i in rows:
                self._release(job, 1, len(job.encodings[i].ids))
                if not job.failed:
                    job.failed = job.cancelled = True
                    job.loop.call_soon_threadsafe(_fail, job, error)

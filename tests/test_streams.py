"""encode's batches on one-thread onnxruntime calls side by side (issue 20: 1.11-1.23x the texts/s
of one two-thread call at a time on an AVX2 EPYC), and one call on every thread for a single batch."""
import threading
import time

import numpy as np
import pytest

from e5_onnx import Embedder
from e5_onnx.embedder import run_side_by_side

TEXTS = [f"passage: item {i} " + "of a list of things to embed " * (i % 7) for i in range(23)]


class Counting:
    """Wraps a session's run: how many calls, and the most that ran at once."""

    def __init__(self, session):
        self.inner, self.calls, self.running, self.most = session.run, 0, 0, 0
        self.lock = threading.Lock()

    def run(self, input_ids, attention_mask):
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.01)  # long enough for the other stream to start its call
            return self.inner(input_ids, attention_mask)
        finally:
            with self.lock:
                self.running -= 1


def test_several_batches_run_side_by_side_on_one_thread_calls_and_land_in_order(minilm_export, monkeypatch):
    one = Embedder(minilm_export, threads=1, batch_size=4)
    two = Embedder(minilm_export, threads=2, batch_size=4)
    assert (one.session.streams, two.session.streams) == (1, 2)
    assert one.session.side_by_side() is one.session

    two.encode(["query: one text is one batch"])
    assert two.session._one_thread is None  # loaded only when a call has several batches

    side = two.session.side_by_side()
    assert side is not two.session and side is two.session.side_by_side()
    assert side.session.get_session_options().intra_op_num_threads == 1
    assert two.session.session.get_session_options().intra_op_num_threads == 2
    main, streams = Counting(two.session), Counting(side)
    monkeypatch.setattr(two.session, "run", main.run)
    monkeypatch.setattr(side, "run", streams.run)
    counts = set()
    for texts in (TEXTS, TEXTS[:12]):
        calls = (main.calls, streams.calls)
        got = two.encode(texts)
        n = len(two.tokenizer.batch_encodings(two.tokenizer.encode(texts), 4, two.max_batch_tokens))
        counts.add(n % 2)
        # whole rounds of two one-thread calls side by side, the odd one out on both threads
        assert (main.calls - calls[0], streams.calls - calls[1]) == (n % 2, n - n % 2), n
        # the rows of one-thread calls: a one-thread Embedder's, bit for bit, each in its place
        want = one.encode(texts)
        assert np.array_equal(got, want) if n % 2 == 0 else np.allclose(got, want, atol=1e-5)
    assert counts == {0, 1} and streams.most == 2

    calls = (main.calls, streams.calls)
    two.encode(TEXTS[:1])
    assert (main.calls - calls[0], streams.calls - calls[1]) == (1, 0)  # one batch: one call on both threads


def test_run_side_by_side_keeps_few_items_in_flight_and_raises_the_first_error():
    pulled, done = [], []
    most_ahead = 0

    def items():
        nonlocal most_ahead
        for i in range(40):
            most_ahead = max(most_ahead, len(pulled) - len(done))
            pulled.append(i)
            yield i

    def work(i):
        time.sleep(0.002)
        done.append(i)

    run_side_by_side(work, items(), 3)
    assert sorted(done) == list(range(40))  # each item once
    assert most_ahead <= 2 * 3

    def fails(i):
        if i == 5:
            raise ValueError("item 5")

    with pytest.raises(ValueError, match="item 5"):
        run_side_by_side(fails, iter(range(40)), 2)

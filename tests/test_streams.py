"""encode's batches on one-thread onnxruntime calls side by side (issue 20: 1.11-1.23x the texts/s
of one two-thread call at a time on an AVX2 EPYC), and one call on every thread for a single batch."""
import threading
import time

import numpy as np
import pytest

from e5_onnx import Embedder
from e5_onnx.embedder import run_side_by_side, side_by_side_plan

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
    # texts of one length (77 tokens), batches of 4: 24 texts are 6 alike batches, 3 rounds side by side;
    # 22 are 5 alike and one of 2 (half the tokens): 2 rounds, then the other two on both threads
    for n, want_calls in ((24, (0, 6)), (22, (2, 4))):
        texts = [f"passage: text number {i:02d} " + "is as long as every other one " * 10 for i in range(n)]
        assert len(two.tokenizer.batches(texts, 4, two.max_batch_tokens)) == 6
        calls = (main.calls, streams.calls)
        got = two.encode(texts)
        assert (main.calls - calls[0], streams.calls - calls[1]) == want_calls, n
        # every row in its place: a one-thread Embedder's, bit for bit where a one-thread call made it
        want = one.encode(texts)
        exact = np.all(got == want, axis=1)
        assert exact.sum() >= 4 * want_calls[1] and np.allclose(got, want, atol=1e-5)
    assert streams.most == 2

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


def test_the_plan_pairs_whole_rounds_of_alike_batches_and_leaves_the_rest_to_every_thread():
    assert side_by_side_plan([512, 500, 480, 100], 2, False) == ([0, 1], [2, 3])
    assert side_by_side_plan([512, 500, 480, 310], 2, False) == ([0, 1, 2, 3], [])
    assert side_by_side_plan([512, 100], 2, False) == ([], [0, 1])  # unlike: one after the other on both
    assert side_by_side_plan([100, 512, 90, 480], 2, False) == ([1, 3], [0, 2])  # alike wherever they are
    assert side_by_side_plan([512, 500, 480, 470, 460], 4, False) == ([0, 1, 2, 3], [4])
    assert side_by_side_plan([512, 100], 2, True) == ([0, 1], [])  # OpenVINO: its calls run on one thread
    assert side_by_side_plan([200, 200, 190, 180], 2, False) == ([], [0, 1, 2, 3])  # too small to gain

"""The runtime tokeniser against transformers' AutoTokenizer, and the batching it does."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from e5_onnx.tokenize import TextTokenizer, plan
from export.probes import CARD_EN, CARD_MULTILINGUAL, MULTILINGUAL, long_text

TEXTS = (
    CARD_EN["queries"] + CARD_EN["passages"] + CARD_MULTILINGUAL["queries"] + CARD_MULTILINGUAL["passages"]
    + MULTILINGUAL
    + ["", " ", "a", "query: ", "x" * 300, "Don't stop-believing!!! (1990s) $3.50 e-mail: a@b.co",
       "   leading and trailing   ", "ÀÉÎÕÜ àéîõü ñ ç ß", long_text(5), long_text(40)]
)


def check_against_transformers(source_dir, limit: int):
    hf = AutoTokenizer.from_pretrained(source_dir)
    raw = (source_dir / "tokenizer.json").read_text(encoding="utf-8")
    tok = TextTokenizer.from_str(raw, limit, hf.pad_token_id)
    seen = []
    for batch in tok.batches(TEXTS, batch_size=4, max_batch_tokens=10**9):
        expected = hf([TEXTS[i] for i in batch.order], padding=True, truncation=True, max_length=limit,
                      return_tensors="np")
        np.testing.assert_array_equal(batch.input_ids, expected["input_ids"])
        np.testing.assert_array_equal(batch.attention_mask, expected["attention_mask"])
        seen.extend(batch.order.tolist())
    assert sorted(seen) == list(range(len(TEXTS)))


def test_minilm_wordpiece_matches_transformers_despite_fixed_padding_in_tokenizer_json(minilm_source):
    # this tokenizer.json pads every text to 128 and truncates at 128; the runtime must do neither
    settings = json.loads((minilm_source / "tokenizer.json").read_text())
    assert settings["padding"]["strategy"] == {"Fixed": 128} and settings["truncation"]["max_length"] == 128
    check_against_transformers(minilm_source, 256)
    check_against_transformers(minilm_source, 512)


def test_multilingual_unigram_matches_transformers(me5_source):
    check_against_transformers(me5_source, 512)


@pytest.mark.parametrize("family", ["wordpiece-bert", "unigram-bert", "unigram-xlmr"])
def test_tiny_tokenizers_match_transformers(tiny_sources, family):
    check_against_transformers(tiny_sources[family], 64)


def test_batches_respect_token_budget_and_pad_to_their_own_longest(minilm_source):
    tok = TextTokenizer.from_file(minilm_source / "tokenizer.json", 256, 0)
    lengths = [len(e.ids) for e in tok.encode(TEXTS)]
    batches = list(tok.batches(TEXTS, batch_size=8, max_batch_tokens=600))
    for b in batches:
        assert b.input_ids.shape[1] == max(lengths[i] for i in b.order)  # dynamic padding, no more
        assert b.input_ids.size <= 600 or len(b.order) == 1
        assert len(b.order) <= 8
    assert sorted(np.concatenate([b.order for b in batches]).tolist()) == list(range(len(TEXTS)))
    assert max(lengths) == 256  # truncated at the limit given, not tokenizer.json's 128
    planned = tok.batches(TEXTS, batch_size=8, max_batch_tokens=600)
    assert planned.tokens == [b.input_ids.size for b in batches]  # known before any batch is padded
    assert len(planned) == len(batches) and np.array_equal(planned[-1].input_ids, batches[-1].input_ids)
    with pytest.raises(IndexError):
        planned[len(batches)]


def _cost(sizes: list[int], lengths: list[int], call_cost: int) -> int:
    starts = np.cumsum([0] + sizes[:-1])
    return sum(call_cost + k * lengths[s] for s, k in zip(starts, sizes))


def _compositions(n: int):
    if n == 0:
        yield []
    for first in range(1, n + 1):
        for rest in _compositions(n - first):
            yield [first, *rest]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 300), max_size=9), st.integers(1, 6), st.integers(1, 900), st.integers(0, 40))
def test_batch_plan_is_the_cheapest_feasible_cut(lengths, batch_size, budget, call_cost):
    """plan() against every way to cut the sorted list into consecutive batches: feasible (at most
    batch_size texts, at most budget padded tokens unless alone) and of minimal cost."""
    lengths = sorted(lengths, reverse=True)
    sizes = plan(lengths, batch_size, budget, call_cost)
    assert sum(sizes) == len(lengths) and all(k >= 1 for k in sizes)

    def feasible(cut):
        starts = np.cumsum([0] + cut[:-1])
        return all(k <= batch_size and (k == 1 or k * lengths[s] <= budget) for s, k in zip(starts, cut))

    assert feasible(sizes)
    best = min(_cost(c, lengths, call_cost) for c in _compositions(len(lengths)) if feasible(c))
    assert _cost(sizes, lengths, call_cost) == best


def test_batch_plan_pads_random_queries_far_less_than_fixed_cuts():
    """12 query-like lengths with a long tail: one long text gets its own small batch instead of
    widening the other eleven."""
    lengths = [48, 27, 17, 15, 14, 14, 13, 12, 11, 10, 9, 8]
    sizes = plan(lengths, 32, 512, 16)
    padded = _cost(sizes, lengths, 0)
    assert padded <= 0.6 * 12 * 48, (sizes, padded)

"""The runtime tokeniser against transformers' AutoTokenizer, and the batching it does."""
import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from e5_onnx.tokenize import TextTokenizer
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

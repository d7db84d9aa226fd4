"""Probe texts for the export parity check: the model cards' examples, many scripts, and the edges
of tokenisation (empty, one token, exactly the length limit, far beyond it)."""
from __future__ import annotations

from e5_onnx.demo import CARD_EN, CARD_MULTILINGUAL  # the model cards' examples, shared with `e5-onnx demo`

MULTILINGUAL = [
    "query: Wie viel Eiweiß sollte eine Frau täglich essen?",
    "passage: La tour Eiffel a été construite pour l'Exposition universelle de 1889 à Paris.",
    "query: ¿Cuál es la capital de Colombia?",
    "passage: Москва — столица России и крупнейший по численности населения город страны.",
    "query: 東京で一番高い建物は何ですか？",
    "passage: 서울은 대한민국의 수도이자 최대 도시이다.",
    "passage: القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها.",
    "query: भारत की राजधानी क्या है?",
    "passage: Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "passage: İstanbul, Türkiye'nin en kalabalık şehridir.",
    "query: Ni nini maana ya neno hili kwa Kiswahili?",
    "passage: กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "query: naïve café résumé — Ünïcödé ½ ﬁ ＡＢＣ",
    "passage: 🚀 emoji 👩‍💻 and symbols ∑ ∞ ≠ ©",
    "QUERY: MIXED case, tabs\tand\nnew lines   and   spaces",
]

_FILLER = (
    "The quick brown fox jumps over the lazy dog while the committee reviews the annual report on "
    "protein intake, mountain summits, river deltas and the history of printing in Europe. "
)


def long_text(repeats: int = 60) -> str:
    """Far beyond 512 tokens for any tokenizer (~1,800 words)."""
    return "passage: " + _FILLER * repeats


def text_of_exactly(tokenizer, n_tokens: int) -> str:
    """A text that `tokenizer` (a tokenizers.Tokenizer, no truncation) encodes to exactly n_tokens ids."""
    source = long_text()
    specials = len(tokenizer.encode("").ids)
    enc = tokenizer.encode(source)
    content = [i for i, s in enumerate(enc.special_tokens_mask) if not s]
    need = n_tokens - specials
    end = enc.offsets[content[need - 1]][1]
    for cut in range(end, max(end - 40, 0), -1):  # a cut mid-word may re-segment; step back until exact
        if len(tokenizer.encode(source[:cut]).ids) == n_tokens:
            return source[:cut]
    raise ValueError(f"could not build a text of exactly {n_tokens} tokens")


def one_token_text(tokenizer) -> str:
    """A non-empty text that encodes to one content token."""
    specials = len(tokenizer.encode("").ids)
    for word in ("hello", "the", "a", "▁", "x"):
        if len(tokenizer.encode(word).ids) == specials + 1:
            return word
    raise ValueError("no single-token text found")


def probe_texts(tokenizer, max_length: int) -> list[str]:
    """The parity probe set for one model (tokenizer: a tokenizers.Tokenizer with truncation off)."""
    texts = CARD_EN["queries"] + CARD_EN["passages"] + CARD_MULTILINGUAL["queries"][1:]
    texts += CARD_MULTILINGUAL["passages"][1:] + MULTILINGUAL
    texts += ["", one_token_text(tokenizer), text_of_exactly(tokenizer, max_length), long_text()]
    return texts

"""Nothing gets through unhandled: every input gives a correct result or a documented error naming it.

The property tests draw texts from all of Unicode (lone surrogates included), NUL and control
characters, combining marks, right-to-left and zero-width characters, texts of 100,000+
characters, lists of 0 to 2,000 items with wrong-type items anywhere, passed as a list, tuple,
generator or NumPy array. The oracle is the model itself, text by text: each row of a call must be
the embedding of its own text encoded alone (fp32, where batching changes nothing but rounding).
"""
from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from e5_onnx import Embedder, ModelDirError
from e5_onnx.manifest import REQUIRED

FAMILIES = ["wordpiece-bert", "unigram-xlmr"]  # BERT normaliser + WordPiece; SentencePiece charsmap + Unigram
METHODS = ["encode", "encode_queries", "encode_passages"]
SPECIALS = [
    "\x00", "\x01", "\x1b", "\x7f", "\t", "\n", "\r", " ", "\u00a0",  # NUL, controls, whitespace
    "\u0301", "\u0308", "\u20dd",  # combining marks
    "\u05d0", "\u0627", "\u200f", "\u202e", "\u2067",  # Hebrew, Arabic, RTL marks and overrides
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff",  # zero-width characters
    "\U0001f600", "\U0001f468", "\ufffd", "\uffff", "\U0010ffff",
]
LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "\ude00"]  # not valid Unicode text
SURROGATES = range(0xD800, 0xE000)

chars = st.one_of(st.characters(), st.sampled_from(SPECIALS))
short_texts = st.text(chars, max_size=40)
huge_texts = st.builds(lambda unit, n: ((unit + " ") * (n // (len(unit) + 1) + 1))[:n],
                       st.text(chars, min_size=1, max_size=8), st.integers(100_000, 150_000))
with_surrogate = st.builds(lambda text, c, at: text[: at % (len(text) + 1)] + c + text[at % (len(text) + 1):],
                           st.one_of(short_texts, huge_texts), st.sampled_from(LONE_SURROGATES), st.integers(0))
texts = st.one_of(*[short_texts] * 6, huge_texts, with_surrogate)  # st.one_of picks a branch uniformly
wrong = st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=5), st.booleans(),
                  st.lists(st.text(max_size=3), max_size=2), st.just(np.bytes_(b"x")), st.just(np.int64(3)))


@pytest.fixture(scope="module")
def models(tiny_exports):
    return {f: Embedder(tiny_exports[f], variant="fp32", batch_size=7, max_batch_tokens=256) for f in FAMILIES}


def first_problem(items: list) -> tuple[int, type] | None:
    for i, item in enumerate(items):
        if not isinstance(item, str):
            return i, TypeError
        if any(ord(c) in SURROGATES for c in item):
            return i, ValueError
    return None


def as_container(items: list, kind: str):
    if kind == "tuple":
        return tuple(items)
    if kind == "generator":
        return (t for t in items)
    if kind == "numpy":
        if all(isinstance(t, str) for t in items):
            return np.array(items, dtype=str)
        array = np.empty(len(items), dtype=object)  # 1-D: np.array() would turn a list item into an axis
        for i, item in enumerate(items):
            array[i] = item
        return array
    return items


@st.composite
def calls(draw):
    """A pool of texts, a list of 0-2,000 picks from it (some tagged, so that neighbours in a batch
    differ), and maybe wrong-type items spliced in."""
    pool = draw(st.lists(texts, min_size=1, max_size=6))
    if max(map(len, pool)) > 1000:  # a 100,000-character text 2,000 times over would take minutes
        n = draw(st.integers(0, 12))
    else:
        n = draw(st.one_of(st.integers(0, 3), st.integers(0, 60), st.integers(1900, 2000)))
    rng = draw(st.randoms(use_true_random=False))
    picks = [rng.randrange(len(pool)) for _ in range(n)]
    tags = [rng.choice(["", f" {rng.randrange(1000)}", f"\u200b{rng.randrange(100)}"]) for _ in range(n)]
    items: list = [pool[p] + tag for p, tag in zip(picks, tags)]
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 2]))):
        items.insert(rng.randrange(len(items) + 1), draw(wrong))
    kind = draw(st.sampled_from(["list", "tuple", "generator", "numpy"]))
    return pool, items, kind


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(call=calls(), family=st.sampled_from(FAMILIES), method=st.sampled_from(METHODS))
def test_any_input_gives_unit_rows_in_order_or_an_error_naming_the_item(models, call, family, method):
    pool, items, kind = call
    model = models[family]
    container = as_container(items, kind)
    if kind == "numpy":  # NumPy's fixed-width str dtype drops trailing NULs: the array's items are the input
        items = [str(t) if isinstance(t, str) else t for t in container]
    problem = first_problem(items)
    event(f"{'ok' if problem is None else problem[1].__name__}, {kind}, "
          f"{'2,000 items' if len(items) >= 1900 else 'huge text' if any(len(t) >= 100_000 for t in pool) else 'small'}")
    if problem is not None:
        index, error = problem
        with pytest.raises(error, match=rf"texts\[{index}\]"):
            getattr(model, method)(container)
        return
    out = getattr(model, method)(container)
    assert out.shape == (len(items), model.dim) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    prefix = {"encode": "", "encode_queries": model.query_prefix, "encode_passages": model.passage_prefix}[method]
    alone = {t: model.encode([prefix + t])[0] for t in set(items)}
    expected = np.stack([alone[t] for t in items]) if items else out
    np.testing.assert_allclose(out, expected, atol=2e-5)  # each row is its own text's vector, in order


def test_lone_surrogate_is_a_value_error_naming_index_and_position(models):
    model = models["wordpiece-bert"]
    with pytest.raises(ValueError, match=r"texts\[2\] holds a lone surrogate U\+D800 at character 3"):
        model.encode(["ok", "fine", "abc\ud800def"])
    with pytest.raises(ValueError, match=r"texts\[0\] holds a lone surrogate U\+DE00"):
        model.encode_queries(["\ude00"])  # half of a pair on its own: the prefix must not shift the index
    # a real astral character (one code point) is fine, and so is the replacement character
    assert model.encode(["\U0001f600", "\ufffd"]).shape == (2, model.dim)


@pytest.mark.parametrize("texts, message", [
    ({"a": 1, "b": 2}, "not a dict"),
    ({"a", "b"}, "not a set"),
    (frozenset({"a"}), "not a frozenset"),
    ({"a": 1}.keys(), "not a dict_keys"),
    ("one text", "not a single str"),
    (b"bytes", "not a single bytes"),
    (42, "not int"),
    (None, "not NoneType"),
    (np.array([["a", "b"]]), "not a 2-D array"),
    (np.array("a"), "not a 0-D array"),
])
def test_inputs_without_a_meaningful_order_or_not_a_list_are_type_errors(models, texts, message):
    for method in METHODS:
        with pytest.raises(TypeError, match=message):
            getattr(models["wordpiece-bert"], method)(texts)


def test_lists_tuples_generators_and_numpy_arrays_give_the_same_rows(models):
    model = models["unigram-xlmr"]
    texts = ["zwei", "one", "trois", "", "one"]
    expected = model.encode(texts)
    for container in (tuple(texts), (t for t in texts), iter(texts), np.array(texts), np.array(texts, dtype=object)):
        np.testing.assert_array_equal(model.encode(container), expected)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"threads": 0}, ValueError, r"threads must be a positive int \(1 or more, or None"),
    ({"threads": -2}, ValueError, "threads must be a positive int"),
    ({"threads": 1.5}, TypeError, "threads must be an int, not float"),
    ({"threads": True}, TypeError, "threads must be an int, not bool"),
    ({"batch_size": 0}, ValueError, r"batch_size must be a positive int \(1 or more\), got 0"),
    ({"batch_size": -1}, ValueError, "batch_size must be a positive int"),
    ({"batch_size": "32"}, TypeError, "batch_size must be an int, not str"),
    ({"max_batch_tokens": 0}, ValueError, "max_batch_tokens must be a positive int"),
    ({"max_batch_tokens": -512}, ValueError, "max_batch_tokens must be a positive int"),
    ({"variant": "int4"}, ValueError, "unknown variant 'int4'"),
])
def test_bad_constructor_arguments_say_what_to_fix(tiny_exports, kwargs, error, message):
    with pytest.raises(error, match=message):
        Embedder(tiny_exports["wordpiece-bert"], **kwargs)


def test_threads_none_and_one_are_accepted(tiny_exports):
    for threads in (None, 1):
        assert Embedder(tiny_exports["wordpiece-bert"], threads=threads).encode(["x"]).shape == (1, 64)


def damaged_copy(tiny_exports, tmp_path, edit) -> tuple:
    dst = tmp_path / "m"
    shutil.copytree(tiny_exports["wordpiece-bert"], dst)
    path = dst / "manifest.json"
    text = path.read_text(encoding="utf-8")
    path.write_bytes(edit(text))
    return dst, str(path)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t[: len(t) // 2].encode(), "is not valid JSON"),
    (lambda t: b"", "is not valid JSON"),
    (lambda t: b"\xff\xfe not utf-8", "is not valid JSON"),
    (lambda t: b"[1, 2]", "holds a JSON list, not an object"),
])
def test_manifest_that_is_not_json_is_a_model_dir_error_naming_the_file(tiny_exports, tmp_path, edit, message):
    model_dir, path = damaged_copy(tiny_exports, tmp_path, edit)
    with pytest.raises(ModelDirError, match=message) as err:
        Embedder(model_dir)
    assert path in str(err.value) and "re-export" in str(err.value)


@pytest.mark.parametrize("field", sorted(REQUIRED))
def test_manifest_missing_a_field_is_a_model_dir_error_naming_it(tiny_exports, tmp_path, field):
    def drop(text):
        manifest = json.loads(text)
        del manifest[field]
        return json.dumps(manifest).encode()

    model_dir, path = damaged_copy(tiny_exports, tmp_path, drop)
    with pytest.raises(ModelDirError, match=rf"field '{field}' is missing") as err:
        Embedder(model_dir)
    assert path in str(err.value)


@pytest.mark.parametrize("field, value, message", [
    ("dim", "64", "field 'dim' is a str, not an int"),
    ("dim", 0, "field 'dim' is 0, not positive"),
    ("max_length", None, "field 'max_length' is a NoneType, not an int"),
    ("variants", {"fp32": "model.onnx", "int8": 3}, "field 'variants.int8' is a int, not a file name"),
    ("files", {"tokenizer.json": {"bytes": 1}}, "field 'files.tokenizer.json' has no sha256"),
    ("variants", {"fp32": "model.onnx"}, "has no 'int8' variant; it has \\['fp32'\\]"),
])
def test_manifest_with_a_mistyped_field_is_a_model_dir_error(tiny_exports, tmp_path, field, value, message):
    def replace(text):
        manifest = json.loads(text)
        manifest[field] = value
        return json.dumps(manifest).encode()

    model_dir, _ = damaged_copy(tiny_exports, tmp_path, replace)
    with pytest.raises(ModelDirError, match=message):
        Embedder(model_dir)


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_one_embedder_shared_by_8_threads_gives_what_it_gives_sequentially(tiny_exports, variant):
    """Each thread's calls hold the same texts as the sequential ones, so the batches are equal and
    even INT8 (whose activation scale is per batch) must give the same bits."""
    model = Embedder(tiny_exports["unigram-xlmr"], variant=variant, threads=2, batch_size=8, max_batch_tokens=128)
    rng = np.random.default_rng(0)
    words = ["alpha", "βήτα", "гамма", "دلتا", "イプシロン", "zeta", "", "eta " * 30]
    calls = [[" ".join(rng.choice(words, size=rng.integers(0, 12))) for _ in range(rng.integers(1, 40))]
             for _ in range(8)]
    sequential = [model.encode(texts) for texts in calls]
    results: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(k: int) -> None:
        try:
            start.wait(timeout=60)
            for round_ in range(5):
                results[k, round_] = model.encode(calls[(k + round_) % 8])
        except BaseException as e:  # surfaced below: a thread's exception must fail the test
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    assert len(results) == 40
    for (k, round_), out in results.items():
        np.testing.assert_array_equal(out, sequential[(k + round_) % 8])


# --- huge texts: the cut before tokenising (src/e5_onnx/cut.py) never changes an encoding ---------

FRAGMENTS = ["hello", "World", "x1", "état", "e\u0301", "\u0301", "中文", "日本語", "\u200b", "\u200b" * 60,
             "a" * 150, "!", "...", "Straße", "ΣΑΣ", "ς", "\x00", "İ", "ﬁ", "①", "\u00a0", "<mask>", "[MASK]",
             "<s>", "\u202e", "مرحبا", "\U0001f600", "don't", "U.S.A."]
SEPARATORS = [" ", " ", " ", "", "\n", "  ", "\t", " \u0301"]


@st.composite
def long_texts(draw):
    word = st.one_of(st.sampled_from(["the", "cat", "sat", "on", "Mat", "a1", "42"]), st.sampled_from(FRAGMENTS))
    words = draw(st.lists(st.tuples(word, st.sampled_from(SEPARATORS)), min_size=1, max_size=40))
    unit = "".join(w + s for w, s in words)
    n = draw(st.integers(100, 3000))
    return (unit * (n // len(unit) + 1))[:n]


@pytest.fixture(scope="module")
def real_tokenizers(minilm_source, me5_source):
    from tokenizers import Tokenizer

    return {"minilm": Tokenizer.from_file(str(minilm_source / "tokenizer.json")),
            "me5": Tokenizer.from_file(str(me5_source / "tokenizer.json"))}


def test_both_real_tokenizers_qualify_for_the_cut(real_tokenizers):
    from e5_onnx import cut
    from e5_onnx.tokenize import TextTokenizer

    for name, tok in real_tokenizers.items():
        TextTokenizer(tok, 512, 0)  # sets the truncation the runtime uses
        assert cut.is_local(tok), name
        text = "The quick brown fox jumps over the lazy dog. " * 20_000  # 900,000 characters
        head = cut.head(tok, text, 512)
        assert len(head) < 20_000, name  # the fast path is taken for ordinary text
        assert tok.encode(head).ids == tok.encode(text).ids


def test_tokenizers_that_are_not_local_are_not_cut():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    from e5_onnx import cut

    one_piece = Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0)], 0, byte_fallback=False))
    one_piece.pre_tokenizer = pre_tokenizers.Metaspace(split=False)  # the whole text is one pre-token
    byte_level = Tokenizer(models.BPE())
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel()
    replaced = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    replaced.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    replaced.normalizer = normalizers.Replace(" ", "")  # would glue words across the cut
    for tok in (one_piece, byte_level, replaced):
        tok.enable_truncation(16)
        assert not cut.is_local(tok)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=long_texts(), name=st.sampled_from(["minilm", "me5"]), max_length=st.sampled_from([4, 8, 16, 32]))
def test_cut_text_gives_exactly_the_whole_texts_encoding(real_tokenizers, text, name, max_length):
    from e5_onnx import cut
    from e5_onnx.tokenize import TextTokenizer

    tok = TextTokenizer(real_tokenizers[name], max_length, 0)
    [whole], [head] = tok.encode([text]), tok.encode([text], head_only=True)
    event(f"{name}: {'cut' if len(cut.head(tok._tok, text, max_length)) < len(text) else 'whole text'}")
    assert head.ids == whole.ids and head.attention_mask == whole.attention_mask
    assert bool(head.overflowing) == bool(whole.overflowing)


def test_a_10_mb_text_embeds_as_its_head_through_the_public_api(tiny_exports):
    """Embedder.encode and count_tokens take the cut path (benchmarks/huge_text.py: a 10 MB text
    0.47 s / +6 MB instead of 107 s / +1.4 GB): same vector and count as a head that holds the
    first max_length tokens, truncation reported."""
    model = Embedder(tiny_exports["wordpiece-bert"], variant="fp32")
    huge = "the quick brown fox jumps over the lazy dog " * 230_000  # 10.1 MB
    head = huge[: model.max_length * 50]
    np.testing.assert_allclose(model.encode([huge, "x"]), model.encode([head, "x"]), atol=1e-6)
    counts = model.count_tokens([huge, head, "x"])
    assert list(counts.tokens[:2]) == [model.max_length] * 2 and list(counts.over_limit) == [True, True, False]

"""Compact vectors (issue 22): sentence-transformers' quantize_embeddings layout bit for bit, int8
ranges fixed at export and hashed in the manifest, the Embedder's `precision`, and the NumPy search
helpers against brute force. Batch invariance of the codes is in tests/test_determinism.py."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from e5_onnx import Embedder, HashMismatchError
from e5_onnx.compact import PRECISIONS, MissingRangesError, dequantize, quantize
from e5_onnx.search import hamming_topk, rescore
from export.calibration import ranges_texts

# embeddings-like floats, with exact zeros, ties and values outside the ranges
FLOATS = hnp.arrays(np.float32, st.tuples(st.integers(1, 12), st.integers(1, 40)),
                    elements=st.one_of(st.floats(-1, 1, width=32), st.sampled_from([0.0, -0.0, 0.25, -0.5])))


def ranges_for(x: np.ndarray, seed: int) -> np.ndarray:
    """Ranges a little narrower than x's (values get clipped) with one zero-width dimension."""
    rng = np.random.default_rng(seed)
    lo, hi = x.min(0) + 0.1 * rng.random(x.shape[1]), x.max(0) - 0.1 * rng.random(x.shape[1])
    r = np.vstack([np.minimum(lo, hi), np.maximum(lo, hi)]).astype(np.float32)
    r[:, 0] = r[0, 0]
    return r


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=FLOATS, seed=st.integers(0, 2**16))
def test_layout_equals_sentence_transformers_quantize_embeddings(x, seed):
    from sentence_transformers.util.quantization import quantize_embeddings

    ranges = ranges_for(x, seed)
    for precision in PRECISIONS:
        want = quantize_embeddings(x, precision, ranges=ranges)
        got = quantize(x, precision, ranges)
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), precision


def test_codes_mean_what_they_say():
    x = np.array([[-0.3, 0.0, 1e-9, 0.2, -1e-9, 0.5, 0.1, -0.1, 0.7]], dtype=np.float32)
    bits = np.unpackbits(quantize(x, "ubinary"), axis=1)[0, :9]
    assert bits.tolist() == [0, 0, 1, 1, 0, 1, 1, 0, 1]  # 1 where x > 0, first dimension in the top bit
    assert np.array_equal(quantize(x, "binary").view(np.uint8) ^ 0x80, quantize(x, "ubinary"))
    r = np.vstack([np.full(9, -0.5), np.full(9, 0.5)]).astype(np.float32)
    assert quantize(x, "uint8", r)[0, 8] == 255 and quantize(x, "int8", r)[0, 8] == 127  # above the range: clipped
    inside = np.random.default_rng(0).uniform(-0.5, 0.5, (50, 9)).astype(np.float32)
    for p in ("int8", "uint8"):  # a code's bucket middle is within half a step of the float
        assert np.abs(dequantize(quantize(inside, p, r), p, r) - inside).max() <= 0.5 / 255 + 1e-6
    assert np.array_equal(dequantize(quantize(x, "binary"), "binary")[0, :9], bits * 2.0 - 1)


@pytest.mark.parametrize("bad,error", [("int4", ValueError), ("", ValueError), ("INT8", ValueError),
                                       ("float", ValueError), (None, TypeError), (8, TypeError)])
def test_a_bad_precision_is_a_clear_error_everywhere_in_the_api(tiny_exports, bad, error):
    model = Embedder(tiny_exports["wordpiece-bert"])
    calls = [lambda: model.encode(["a"], precision=bad), lambda: model.encode_queries(["a"], precision=bad),
             lambda: model.encode_passages(["a"], precision=bad),
             lambda: next(model.embed_stream(["a"], precision=bad)), lambda: quantize(np.ones((1, 4)), bad)]
    for call in calls:
        with pytest.raises(error, match="precision.*float32, int8, uint8, binary, ubinary"):
            call()


def test_export_records_ranges_from_calibration_text_and_hashes_them(tiny_exports, tmp_path):
    src = tiny_exports["wordpiece-bert"]
    manifest = json.loads((src / "manifest.json").read_text())
    assert manifest["compact"]["calibration_texts"] == len(ranges_texts())
    for variant in ("int8", "fp32"):
        name = manifest["compact"]["ranges"][variant]
        assert len(manifest["files"][name]["sha256"]) == 64
        emb = Embedder(src, variant=variant).encode(ranges_texts())
        assert np.array_equal(Embedder(src, variant=variant).compact_ranges(), np.vstack([emb.min(0), emb.max(0)]))
    tampered = tmp_path / "tampered"
    shutil.copytree(src, tampered)
    r = np.load(tampered / "ranges_int8.npy")
    np.save(tampered / "ranges_int8.npy", r * 2)
    model = Embedder(tampered)
    with pytest.raises(HashMismatchError, match="ranges_int8.npy"):
        model.encode(["a"], precision="int8")
    assert model.encode(["a"], precision="binary").shape == (1, model.dim // 8)


def test_an_older_export_without_ranges_refuses_int8_and_still_gives_bits(tiny_exports, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_exports["wordpiece-bert"], old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["compact"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    model = Embedder(old)
    for precision in ("int8", "uint8"):
        with pytest.raises(MissingRangesError, match="re-export it.*binary and ubinary work"):
            model.encode(["a"], precision=precision)
        with pytest.raises(MissingRangesError):
            model.embed_stream(["a"], precision=precision).__next__()
    floats = model.encode(["a", "b c"])
    assert np.array_equal(model.encode(["a", "b c"], precision="ubinary"), np.packbits(floats > 0, axis=1))


def test_embedder_codes_are_its_floats_quantized_with_its_ranges(minilm_export):
    from sentence_transformers.util.quantization import quantize_embeddings

    model = Embedder(minilm_export)
    texts = ["query: how much protein should a female eat", "passage: The summit is the highest point.", ""]
    floats = model.encode(texts)
    ranges = model.compact_ranges()
    assert ranges.dtype == np.float32 and ranges.shape == (2, model.dim) and (ranges[0] < ranges[1]).all()
    for precision in PRECISIONS:
        want = quantize_embeddings(floats, precision, ranges=ranges)
        for got in (model.encode(texts, precision=precision), np.concatenate(list(model.embed_stream(
                texts, chunk_size=2, precision=precision)))):
            assert got.dtype == want.dtype and np.array_equal(got, want), precision
    assert model.encode_queries(["x"], precision="int8").tolist() == model.encode(["query: x"], precision="int8").tolist()
    # the codes still rank like the floats: a text is nearest itself
    codes = model.encode(texts, precision="int8")
    assert (np.argmax(floats @ dequantize(codes, "int8", ranges).T, axis=1) == np.arange(len(texts))).all()


# ---------------------------------------------------------------- search helpers vs brute force

BITS = st.tuples(st.integers(1, 6), st.integers(0, 60), st.sampled_from([1, 3, 8, 16]), st.integers(0, 2**16))


@settings(max_examples=150, deadline=None)
@given(shape=BITS, k=st.integers(1, 70), chunk=st.sampled_from([1, 64, 1 << 20]), signed=st.booleans())
def test_hamming_topk_equals_a_stable_brute_force_sort(shape, k, chunk, signed):
    nq, n, nbytes, seed = shape
    rng = np.random.default_rng(seed)
    few = rng.integers(0, 3, (nq + n, nbytes)).astype(np.uint8)  # few distinct values: many ties
    q, d = few[:nq], few[nq:]
    brute = np.unpackbits(q, axis=1)[:, None, :] != np.unpackbits(d, axis=1)[None, :, :]
    dist = brute.sum(axis=2)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    if signed:  # the binary layout: the same bits, minus 128
        q, d = (q.astype(np.int16) - 128).astype(np.int8), (d.astype(np.int16) - 128).astype(np.int8)
    got_dist, got_ids = hamming_topk(q, d, k, chunk_bytes=chunk)
    assert got_ids.shape == (nq, min(k, n))
    assert np.array_equal(got_ids, order) and np.array_equal(got_dist, np.take_along_axis(dist, order, axis=1))


@settings(max_examples=100, deadline=None)
@given(nq=st.integers(1, 5), n=st.integers(1, 40), dim=st.sampled_from([8, 16, 24]), c=st.integers(1, 12),
       k=st.integers(1, 15), precision=st.sampled_from(PRECISIONS), seed=st.integers(0, 2**16))
def test_rescore_equals_brute_force_over_the_candidates(nq, n, dim, c, k, precision, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    floats = rng.standard_normal((n, dim)).astype(np.float32)
    ranges = np.vstack([floats.min(0), floats.max(0)]).astype(np.float32)
    docs = quantize(floats, precision, ranges)
    cand = rng.integers(0, n, (nq, c))
    scores, ids = rescore(q, cand, docs, precision, ranges, k=k)
    full = q.astype(np.float64) @ dequantize(docs, precision, ranges).astype(np.float64).T
    assert ids.shape == scores.shape == (nq, min(k, c))
    for i in range(nq):
        want = full[i, cand[i]]
        assert np.allclose(scores[i], np.sort(want)[::-1][: ids.shape[1]], atol=1e-4)
        assert np.allclose(full[i, ids[i]], scores[i], atol=1e-4)  # each score is its own doc's
        assert set(ids[i]) <= set(cand[i])


def test_search_helpers_refuse_mismatched_inputs():
    bits = np.zeros((2, 4), np.uint8)
    with pytest.raises(ValueError, match="both as ubinary"):
        hamming_topk(bits, bits.view(np.int8), 1)
    with pytest.raises(ValueError, match="bytes a vector"):
        hamming_topk(bits, np.zeros((2, 3), np.uint8), 1)
    with pytest.raises(ValueError, match="k must be a positive int"):
        hamming_topk(bits, bits, 0)
    with pytest.raises(ValueError, match="outside"):
        rescore(np.zeros((1, 32), np.float32), np.array([[5]]), bits, "ubinary")
    with pytest.raises(ValueError, match="uint8"):
        rescore(np.zeros((1, 32), np.float32), np.array([[0]]), bits.view(np.int8), "ubinary")
    with pytest.raises(MissingRangesError):
        rescore(np.zeros((1, 4), np.float32), np.array([[0]]), np.zeros((2, 4), np.int8), "int8")

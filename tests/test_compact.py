"""Compact vectors (issue 22): sentence-transformers' quantize_embeddings layout bit for bit, the
centred bits against a NumPy reference, int8 ranges and the centre fixed at export and hashed in
the manifest, the Embedder's `precision`, and the NumPy search helpers against brute force. Batch
invariance of the codes is in tests/test_determinism.py (and of the centred bits here)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from e5_onnx import Embedder, HashMismatchError
from e5_onnx.compact import CENTRED, PRECISIONS, ST_PRECISIONS, MissingRangesError, dequantize, quantize
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
    for precision in ST_PRECISIONS:
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


def centred_reference(x: np.ndarray, centre: np.ndarray, signed: bool) -> np.ndarray:
    """The centred layout written out by hand: bit j of a row is 1 where x_j > centre_j, eight
    dimensions a byte, the first in the top bit, the last byte zero-padded; binary = byte - 128."""
    rows = []
    for row in x:
        bits = [1 if v > c else 0 for v, c in zip(row.tolist(), centre.tolist())]
        bits += [0] * (-len(bits) % 8)
        rows.append([sum(b << (7 - i) for i, b in enumerate(bits[j : j + 8])) for j in range(0, len(bits), 8)])
    out = np.array(rows, dtype=np.int64).reshape(len(x), -1)
    return (out - 128).astype(np.int8) if signed else out.astype(np.uint8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=FLOATS, seed=st.integers(0, 2**16))
def test_centred_bits_layout_equals_a_reference(x, seed):
    rng = np.random.default_rng(seed)
    centre = x[rng.integers(0, len(x))].copy() if seed % 3 == 0 else rng.uniform(-0.5, 0.5, x.shape[1])  # ties too
    centre = centre.astype(np.float32)
    for precision in CENTRED:
        got = quantize(x, precision, centre=centre)
        want = centred_reference(x, centre, signed=precision == "binary-centred")
        assert got.dtype == want.dtype and np.array_equal(got, want), precision
        signs = dequantize(got, precision)[:, : x.shape[1]]
        assert np.array_equal(signs, np.where(x > centre, 1.0, -1.0))
    assert np.array_equal(quantize(x, "ubinary-centred", centre=np.zeros_like(centre)), quantize(x, "ubinary"))


@pytest.mark.parametrize("centre,match", [(None, "needs the per-dimension centre"),
                                          (np.zeros(3, np.float32), r"shape \(4,\)"),
                                          (np.zeros((1, 4), np.float32), r"shape \(4,\)"),
                                          (np.array([0, np.nan, 0, 0], np.float32), "finite floats"),
                                          (np.zeros(4, np.int64), "finite floats")])
def test_bad_centres_are_clear_errors(centre, match):
    x, ids = np.ones((2, 4), np.float32), np.array([[0, 1]])
    for precision in CENTRED:
        error = MissingRangesError if centre is None else ValueError
        with pytest.raises(error, match=match):
            quantize(x, precision, centre=centre)
        with pytest.raises(error, match="need the centre they were made with" if centre is None else match):
            rescore(x, ids, quantize(x, precision, centre=np.zeros(4, np.float32)), precision, centre=centre)


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


def test_export_records_ranges_and_centre_from_calibration_text_and_hashes_them(tiny_exports, tmp_path):
    src = tiny_exports["wordpiece-bert"]
    manifest = json.loads((src / "manifest.json").read_text())
    assert manifest["compact"]["calibration_texts"] == len(ranges_texts())
    for variant in ("int8", "fp32"):
        for kind in ("ranges", "centre"):
            assert len(manifest["files"][manifest["compact"][kind][variant]]["sha256"]) == 64
        model = Embedder(src, variant=variant)
        emb = model.encode(ranges_texts())
        step = 1.25 * np.abs(emb).max() / 127  # one step for every dimension, buckets centred on 0
        ranges = model.compact_ranges()
        assert np.allclose(ranges, [[-128.5 * step] * model.dim, [126.5 * step] * model.dim], rtol=1e-6, atol=0)
        assert np.allclose(model.compact_centre(), emb.mean(0), rtol=0, atol=1e-6)
        codes = model.encode(ranges_texts(), precision="int8").astype(np.float64)  # x / step, rounded
        assert np.abs(codes - emb / step).max() <= 0.5 + 1e-3
        assert np.abs(codes).max() <= 127 / 1.25 + 1  # the calibration vectors use 80% of the scale
    for name, precision in (("ranges_int8.npy", "int8"), ("centre_int8.npy", "ubinary-centred")):
        tampered = tmp_path / f"tampered-{name}"
        shutil.copytree(src, tampered)
        np.save(tampered / name, np.load(tampered / name) * 2)
        model = Embedder(tampered)
        with pytest.raises(HashMismatchError, match=name):
            model.encode(["a"], precision=precision)
        assert model.encode(["a"], precision="binary").shape == (1, model.dim // 8)


def test_an_older_export_without_ranges_refuses_int8_and_still_gives_bits(tiny_exports, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_exports["wordpiece-bert"], old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["compact"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    model = Embedder(old)
    for precision in ("int8", "uint8") + CENTRED:
        with pytest.raises(MissingRangesError, match="re-export it.*binary and ubinary work"):
            model.encode(["a"], precision=precision)
        with pytest.raises(MissingRangesError):
            model.embed_stream(["a"], precision=precision).__next__()
    floats = model.encode(["a", "b c"])
    assert np.array_equal(model.encode(["a", "b c"], precision="ubinary"), np.packbits(floats > 0, axis=1))


def test_an_export_with_ranges_but_no_centre_refuses_only_the_centred_bits(tiny_exports, tmp_path):
    """An export made between compact vectors and the centred bits: its int8 ranges still work."""
    old = tmp_path / "old"
    shutil.copytree(tiny_exports["wordpiece-bert"], old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["compact"]["centre"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    model = Embedder(old)
    for precision in CENTRED:
        with pytest.raises(MissingRangesError, match="records no centre.*re-export it"):
            model.encode_passages(["a"], precision=precision)
    assert model.encode(["a"], precision="int8").tolist() == Embedder(tiny_exports["wordpiece-bert"]).encode(
        ["a"], precision="int8").tolist()


def test_embedder_codes_are_its_floats_quantized_with_its_ranges(minilm_export):
    from sentence_transformers.util.quantization import quantize_embeddings

    model = Embedder(minilm_export)
    texts = ["query: how much protein should a female eat", "passage: The summit is the highest point.", ""]
    floats = model.encode(texts)
    ranges = model.compact_ranges()
    assert ranges.dtype == np.float32 and ranges.shape == (2, model.dim) and (ranges[0] < ranges[1]).all()
    for precision in PRECISIONS:
        want = (quantize_embeddings(floats, precision, ranges=ranges) if precision in ST_PRECISIONS
                else centred_reference(floats, model.compact_centre(), signed=precision == "binary-centred"))
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


def reference_scores(q: np.ndarray, floats: np.ndarray, precision: str, ranges: np.ndarray, centre: np.ndarray
                     ) -> np.ndarray:
    """What rescore promises, from the floats: int8/uint8 -> q . the middle of each code's bucket;
    bits -> q . (+1 where the bit is set, else -1), with q - centre for the centred bits."""
    if precision in ("int8", "uint8"):  # buckets in float32 arithmetic, as sentence-transformers computes them
        lo, step = ranges[0], (ranges[1] - ranges[0]) / np.float32(255)
        step = np.where(step == 0, np.float32(1), step)  # a zero-width range: sentence-transformers' step of 1
        buckets = np.clip(np.floor((floats - lo) / step), 0, 255).astype(np.float64)
        return q.astype(np.float64) @ (lo + (buckets + 0.5) * step.astype(np.float64)).T
    q, floats = q.astype(np.float64), floats.astype(np.float64)
    if precision == "float32":
        return q @ floats.T
    threshold = centre.astype(np.float64) if precision in CENTRED else 0.0
    signs = np.where(floats > threshold, 1.0, -1.0)
    return (q - threshold) @ signs.T


@settings(max_examples=100, deadline=None)
@given(nq=st.integers(1, 5), n=st.integers(1, 40), dim=st.sampled_from([8, 16, 24]), c=st.integers(1, 12),
       k=st.integers(1, 15), precision=st.sampled_from(PRECISIONS), seed=st.integers(0, 2**16))
def test_rescore_equals_brute_force_over_the_candidates(nq, n, dim, c, k, precision, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    floats = rng.standard_normal((n, dim)).astype(np.float32)
    ranges = np.vstack([floats.min(0), floats.max(0)]).astype(np.float32)
    centre = rng.uniform(-0.5, 0.5, dim).astype(np.float32)
    docs = quantize(floats, precision, ranges, centre=centre)
    cand = rng.integers(0, n, (nq, c))
    scores, ids = rescore(q, cand, docs, precision, ranges, k=k, centre=centre)
    full = reference_scores(q, floats, precision, ranges, centre)
    assert ids.shape == scores.shape == (nq, min(k, c))
    for i in range(nq):
        want = full[i, cand[i]]
        assert np.allclose(scores[i], np.sort(want)[::-1][: ids.shape[1]], atol=1e-4)
        assert np.allclose(full[i, ids[i]], scores[i], atol=1e-4)  # each score is its own doc's
        assert set(ids[i]) <= set(cand[i])


@settings(max_examples=100, deadline=None)
@given(nq=st.integers(1, 4), n=st.integers(1, 60), k=st.integers(1, 70), precision=st.sampled_from(PRECISIONS),
       ties=st.booleans(), seed=st.integers(0, 2**16))
def test_rescore_without_candidates_scans_every_doc_like_a_stable_sort(nq, n, k, precision, ties, seed):
    import e5_onnx.search as search

    rng = np.random.default_rng(seed)
    dim = 16
    q = (rng.integers(-1, 2, (nq, dim)) if ties else rng.standard_normal((nq, dim))).astype(np.float32)
    floats = (rng.integers(-2, 3, (n, dim)) / 4 if ties else rng.standard_normal((n, dim))).astype(np.float32)
    ranges = np.vstack([np.full(dim, -1.0), np.full(dim, 1.0)]).astype(np.float32)
    centre = (np.zeros(dim) if ties else rng.uniform(-0.5, 0.5, dim)).astype(np.float32)
    docs = quantize(floats, precision, ranges, centre=centre)
    full = reference_scores(q, floats, precision, ranges, centre)
    old_scratch = search.SCAN_BYTES
    try:
        search.SCAN_BYTES = int(rng.choice([64, 1 << 20]))  # chunks of 1 doc, or all at once
        scores, ids = rescore(q, None, docs, precision, ranges, k=k, centre=centre)
    finally:
        search.SCAN_BYTES = old_scratch
    assert ids.shape == scores.shape == (nq, min(k, n))
    exact = ties and precision not in ("int8", "uint8")  # small integers and quarters: float32 sums are exact
    for i in range(nq):  # best first, equal scores to the lower id
        want = np.lexsort((np.arange(n), -np.round(full[i], 4)))[:k]
        assert np.allclose(scores[i], full[i, want], atol=1e-4) and np.allclose(full[i, ids[i]], scores[i], atol=1e-4)
        if exact:
            assert np.array_equal(ids[i], want)


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


def test_the_openai_schema_refuses_what_an_older_export_cannot_give():
    """The server and the Lambda handler pass has_ranges / has_centre from the export's manifest."""
    from e5_onnx.serving.openai_api import ApiError, parse_embeddings_request

    def parse(kind, **flags):
        return parse_embeddings_request({"input": "a", "embedding_type": kind}, dim=4, prefixes={}, max_inputs=2, **flags)

    assert parse("ubinary-centred").precision == "ubinary-centred"
    assert parse("binary-centred", has_ranges=False).precision == "binary-centred"
    assert parse("int8", has_centre=False).precision == "int8"
    for kind, flags, words in (("int8", {"has_ranges": False}, "needs int8 ranges"),
                               ("binary-centred", {"has_centre": False}, "needs the model's centre"),
                               ("ubinary-centred", {"has_centre": False}, "re-export it): binary and ubinary work"),
                               ("centred", {}, "'binary-centred', 'ubinary-centred'")):
        with pytest.raises(ApiError, match=words.replace("(", r"\(").replace(")", r"\)")) as caught:
            parse(kind, **flags)
        assert caught.value.status == 400

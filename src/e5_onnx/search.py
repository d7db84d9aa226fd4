"""Exact search over compact vectors with NumPy alone: Hamming top-k over packed bits, and rescoring
a candidate list with the float query. The usual recipe for a large store:

    docs_bits = model.encode_passages(corpus, precision="ubinary")      # 48 bytes a vector
    docs_int8 = model.encode_passages(corpus, precision="int8")         # 384 bytes, may stay on disk
    q = model.encode_queries(queries)                                   # float32
    _, candidates = hamming_topk(quantize(q, "ubinary"), docs_bits, k=4 * 10)
    scores, ids = rescore(q, candidates, docs_int8, "int8", model.compact_ranges(), k=10)

E5 (whose vectors are off-centre): bits at the model's centre, candidates from the float query
against every doc's bits (rescore without candidates), then the int8 docs (docs/compact.md):

    docs_bits = model.encode_passages(corpus, precision="ubinary-centred")
    _, candidates = rescore(q, None, docs_bits, "ubinary-centred", centre=model.compact_centre(), k=10 * 10)

Costs (n docs, b bytes a packed vector, Q queries, c candidates a query, d dims):
- hamming_topk: Q * n * b / 8 XOR + popcount word operations, plus a partial sort of n per query;
  memory bounded by `chunk_bytes` (default ~32 MB of scratch), whatever n is. It is exact brute
  force in NumPy: benchmarks/compact.py times it beside a float32 matmul and faiss IndexBinaryFlat
  (for a batch of queries BLAS and faiss are faster; past tens of millions of vectors an index,
  faiss IndexBinaryIVF or usearch, is what scales).
- rescore: reads only the Q * c candidate rows (random access; a memory-mapped .npy works) and
  does Q * c * d multiply-adds; a float query against int8 codes recovers most of what binary
  retrieval loses (docs/benchmarks.md, compact). Without candidates it reads every row, chunk by
  chunk (SCAN_BYTES of scratch), and does Q * n * d: float32 search's cost at the store's size.
"""
from __future__ import annotations

import numpy as np

from .compact import BITS, CENTRED, MissingRangesError, check_centre, check_precision, dequantize

SCAN_BYTES = 32 << 20  # scratch of one chunk of a scan (rescore without candidates)
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each item of a uint8 / uint64 array."""
    if hasattr(np, "bitwise_count"):  # NumPy >= 2.0
        return np.bitwise_count(x)
    return _POPCOUNT8[x[..., None].view(np.uint8)].sum(axis=-1, dtype=np.uint8)


def _distances(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(Q, n) Hamming distances of word arrays q (Q, w) and d (n, w): one word column at a time, so
    every pass is a flat (Q, n) XOR + popcount (3x faster than XOR-ing (Q, n, w) and summing w)."""
    d_t = np.ascontiguousarray(d.T)
    dist = np.zeros((q.shape[0], d.shape[0]), dtype=np.uint16)  # 65,535 bits at most a vector
    for w in range(q.shape[1]):
        dist += _popcount(q[:, w, None] ^ d_t[w, None, :])
    return dist.astype(np.int64)


def _as_words(bits: np.ndarray, name: str) -> np.ndarray:
    """Packed codes (binary int8 or ubinary uint8, (rows, bytes)) as uint8, or as uint64 words when
    the width allows: XOR and popcount then touch 8x fewer items."""
    a = np.asarray(bits)
    if a.ndim != 2 or a.dtype not in (np.uint8, np.int8):
        raise ValueError(f"{name} must be a 2-D uint8 (ubinary) or int8 (binary) array of packed bits, got "
                         f"{a.ndim}-D {a.dtype}")
    u = a.view(np.uint8) ^ np.uint8(0x80) if a.dtype == np.int8 else a  # binary = ubinary - 128
    u = np.ascontiguousarray(u)
    return u.view(np.uint64) if u.shape[1] % 8 == 0 and u.shape[1] else u


def hamming_distances(queries: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """(Q, n) int64 Hamming distances between packed bit vectors (both binary or both ubinary)."""
    q, d = _check_pair(queries, docs)
    return _distances(q, d)


def hamming_topk(queries: np.ndarray, docs: np.ndarray, k: int, *, chunk_bytes: int = 32 << 20
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The k docs nearest each query in Hamming distance -> (distances, ids), both (Q, min(k, n)) int64,
    nearest first; ties go to the lower doc id, so the result equals a stable brute-force sort.

    `queries` (Q, b) and `docs` (n, b): packed bits as `quantize(x, "binary" | "ubinary")` makes
    them (the same layout on both sides). Docs are scanned in chunks of at most `chunk_bytes` of
    scratch; each chunk keeps its k best, then the k best of those are kept.
    """
    q, d = _check_pair(queries, docs)
    k = _check_k(k)
    n = d.shape[0]
    k = min(k, n)
    if k == 0 or q.shape[0] == 0:
        return np.zeros((q.shape[0], k), np.int64), np.zeros((q.shape[0], k), np.int64)
    per_chunk = max(1, chunk_bytes // (q.shape[0] * 8 * 3))  # the (Q, chunk) scratch: XOR words, counts, keys
    best_keys = []
    for start in range(0, n, per_chunk):
        dist = _distances(q, d[start : start + per_chunk])
        # one int64 key per pair: distance first, doc id second (an exact tie-break)
        keys = dist * n + np.arange(start, start + dist.shape[1], dtype=np.int64)
        best_keys.append(_smallest(keys, k))
    keys = _smallest(np.concatenate(best_keys, axis=1), k)
    keys.sort(axis=1)
    return keys // n, keys % n


def rescore(queries: np.ndarray, candidates: np.ndarray | None, docs: np.ndarray, precision: str,
            ranges: np.ndarray | None = None, k: int | None = None, *, centre: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank each query's candidate doc ids by the float query's dot product with the docs'
    codes -> (scores float32, ids int64), both (Q, k), best first (equal scores keep candidate order).

    `queries`: (Q, d) float vectors (the Embedder's, rows of norm 1). `candidates`: (Q, c) doc ids,
    e.g. hamming_topk's; None scans every doc (chunked, ~32 MB of scratch; ties go to the lower
    id): a float query against a compact store, e.g. the centred bits' first stage. `docs`: all
    docs' codes in `precision` (an int8/uint8 store needs the `ranges` it was made with,
    Embedder.compact_ranges(); the centred bits their `centre`, Embedder.compact_centre()); only
    the candidate rows are read. Scores are q . dequantize(doc): cosine-like for int8/uint8; for
    bits, the +1/-1 vector's dot product, with q - centre for the centred bits (a ranking score:
    its norm is sqrt(d), not 1; the q . centre term it leaves out is the same for every doc).
    `k` defaults to every candidate (to every doc when scanning).
    """
    precision = check_precision(precision)
    qv = np.asarray(queries, dtype=np.float32)
    if qv.ndim != 2:
        raise ValueError(f"queries must be a 2-D float array, got {qv.ndim}-D")
    if precision in CENTRED:
        if centre is None:
            raise MissingRangesError(f"{precision} codes need the centre they were made with")
        qv = qv - check_centre(centre, qv.shape[1]).astype(np.float32)
    n = np.shape(docs)[0]
    docs = np.asarray(docs) if not isinstance(docs, np.ndarray) else docs  # a np.memmap stays one
    if candidates is None:
        return _scan(qv, docs, precision, ranges, n if k is None else _check_k(k))
    ids = np.asarray(candidates)
    if ids.ndim != 2 or ids.shape[0] != qv.shape[0] or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"candidates must be a (Q, c) integer array with Q = {qv.shape[0]}, got {ids.shape} {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"candidates hold doc ids outside 0..{n - 1}")
    k = ids.shape[1] if k is None else min(_check_k(k), ids.shape[1])
    scores = np.empty(ids.shape, dtype=np.float32)
    block = max(1, (32 << 20) // max(1, ids.shape[1] * qv.shape[1] * 4))  # queries per ~32 MB of rows
    for s in range(0, ids.shape[0], block):
        part = ids[s : s + block]
        rows = _rows(docs[part.ravel()], precision, ranges, qv.shape[1]).reshape(*part.shape, -1)
        scores[s : s + block] = np.einsum("qd,qcd->qc", qv[s : s + block], rows)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids.astype(np.int64), order, axis=1)


def _rows(codes: np.ndarray, precision: str, ranges: np.ndarray | None, dim: int) -> np.ndarray:
    rows = dequantize(codes, precision, ranges)
    if rows.shape[1] != dim:
        what = "bits" if precision in BITS else "dims"
        raise ValueError(f"docs hold {rows.shape[1]} {what} a vector, queries {dim} dims")
    return rows


def _scan(qv: np.ndarray, docs: np.ndarray, precision: str, ranges: np.ndarray | None, k: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """rescore against every doc: chunks of dequantized rows, each keeping its k best per query."""
    n, nq = docs.shape[0], qv.shape[0]
    k = min(k, n)
    per_chunk = max(1, SCAN_BYTES // (4 * max(qv.shape[1], nq, 1)))
    best_s, best_i = [np.zeros((nq, 0), np.float32)], [np.zeros((nq, 0), np.int64)]
    for start in range(0, n, per_chunk):
        scores = qv @ _rows(docs[start : start + per_chunk], precision, ranges, qv.shape[1]).T
        ids = np.broadcast_to(np.arange(start, start + scores.shape[1], dtype=np.int64), scores.shape)
        if scores.shape[1] > k:  # the chunk's k best: above the k-th score, then ties at it by lower id
            kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]
            rank = (scores <= kth).astype(np.int8) + (scores < kth)  # 0 above, 1 tied, 2 below
            keep = np.argsort(rank, axis=1, kind="stable")[:, :k]
            scores, ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(ids, keep, 1)
        best_s.append(scores)
        best_i.append(ids)
    scores, ids = np.concatenate(best_s, axis=1), np.concatenate(best_i, axis=1)
    order = np.lexsort((ids, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def _smallest(keys: np.ndarray, k: int) -> np.ndarray:
    if keys.shape[1] <= k:
        return keys
    return np.take_along_axis(keys, np.argpartition(keys, k - 1, axis=1)[:, :k], axis=1)


def _check_pair(queries: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q, d = _as_words(queries, "queries"), _as_words(docs, "docs")
    if np.asarray(queries).dtype != np.asarray(docs).dtype:
        raise ValueError(f"queries are {np.asarray(queries).dtype} and docs {np.asarray(docs).dtype}: pack both "
                         "as binary (int8) or both as ubinary (uint8)")
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"queries have {q.shape[1] * q.itemsize} bytes a vector, docs {d.shape[1] * d.itemsize}")
    return q, d


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return int(k)

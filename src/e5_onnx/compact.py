"""Compact vectors: int8 / uint8 codes and packed binary bits, laid out exactly as
sentence-transformers' `quantize_embeddings`, so they interoperate with stores built by it.

- float32: the vectors as they are (1,536 bytes for 384 dims).
- int8 / uint8: one byte per dimension (4x smaller). Dimension j maps [lo_j, hi_j] onto 256
  buckets of width step_j = (hi_j - lo_j) / 255: uint8 = clip(floor((x - lo) / step), 0, 255),
  int8 = uint8 - 128. The ranges are fixed per model and variant, computed at export from
  calibration text (export/build.py compact_params: since 2026-12-07 one step for every dimension,
  buckets centred on 0, so integer dot products of codes rank like the floats) and hashed in the
  manifest: computed from the batch at hand they would make a text's code depend on its
  batch-mates (and a lone text's all zeros). Older exports keep the min/max ranges they hash.
- binary / ubinary: one bit per dimension (32x smaller), 1 where x > 0, packed big-endian by
  np.packbits; ubinary is the uint8 bytes, binary the same bytes minus 128 as int8.
- binary-centred / ubinary-centred (this package's extension, not sentence-transformers'): the
  same packing of 1 where x > centre_j, the per-dimension mean of the calibration texts' vectors
  (exported beside the ranges). E5's vectors share a large common direction: at 0, 240 of 384
  bits hardly ever change and binary retrieval loses ~50 nDCG@10 points (docs/compact.md).

A code depends only on its own float vector, so the Embedder's batch invariance carries over:
an int8 code is within one step of the text's code in any other batch, a bit can only flip for a
dimension within ~1e-3 of its threshold (tests/test_compact.py measures both on the real models).
"""
from __future__ import annotations

import numpy as np

ST_PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")  # sentence-transformers' layouts
CENTRED = ("binary-centred", "ubinary-centred")
PRECISIONS = ST_PRECISIONS + CENTRED
DTYPES = {"float32": np.float32, "int8": np.int8, "uint8": np.uint8, "binary": np.int8, "ubinary": np.uint8,
          "binary-centred": np.int8, "ubinary-centred": np.uint8}
RANGED = ("int8", "uint8")
BITS = ("binary", "ubinary") + CENTRED
UNSIGNED_BITS = ("ubinary", "ubinary-centred")


class MissingRangesError(ValueError):
    """int8/uint8 (or the centred bits) were asked of a model export that records no calibration
    ranges (or centre): it was made before they existed."""


def params_file(manifest: dict, variant: str, kind: str = "ranges") -> str | None:
    """The file of a variant's compact parameters ("ranges": int8/uint8, "centre": the centred bits)
    in an export's manifest, or None (an older export)."""
    compact = manifest.get("compact")
    files = compact.get(kind) if isinstance(compact, dict) else None
    return files.get(variant) if isinstance(files, dict) else None


def ranges_file(manifest: dict, variant: str) -> str | None:
    """The file of a variant's int8/uint8 ranges in an export's manifest, or None (an older export)."""
    return params_file(manifest, variant, "ranges")


def param_kind(precision: str) -> str | None:
    """Which exported parameter `precision` needs: "ranges", "centre" or None."""
    return "ranges" if precision in RANGED else "centre" if precision in CENTRED else None


def check_precision(precision: object, what: str = "precision") -> str:
    """`precision` if it is one of PRECISIONS, else a TypeError / ValueError naming the choices."""
    if not isinstance(precision, str):
        raise TypeError(f"{what} must be a str, one of {', '.join(PRECISIONS)}; got {type(precision).__name__}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown {what} {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def row_bytes(precision: str, dim: int) -> int:
    """Bytes one vector of `dim` dimensions takes in `precision`."""
    check_precision(precision)
    if precision in BITS:
        return (dim + 7) // 8
    return dim * np.dtype(DTYPES[precision]).itemsize


def width(precision: str, dim: int) -> int:
    """Items per row of the compact array (dim, or dim / 8 rounded up for the bit layouts)."""
    return (dim + 7) // 8 if precision in BITS else dim


def check_centre(centre: object, dim: int | None = None) -> np.ndarray:
    """`centre` as a (dim,) float array of per-dimension thresholds, or a ValueError."""
    c = np.asarray(centre)
    if c.ndim != 1 or (dim is not None and c.shape[0] != dim):
        raise ValueError(f"centre must have shape ({dim or 'dim'},) (one threshold a dimension), got {c.shape}")
    if not np.issubdtype(c.dtype, np.floating) or not np.isfinite(c).all():
        raise ValueError("centre must hold finite floats")
    return c


def check_ranges(ranges: object, dim: int | None = None) -> np.ndarray:
    """`ranges` as a (2, dim) float32 array of per-dimension [min; max], or a ValueError."""
    r = np.asarray(ranges)
    if r.ndim != 2 or r.shape[0] != 2 or (dim is not None and r.shape[1] != dim):
        raise ValueError(f"ranges must have shape (2, {dim or 'dim'}) (per-dimension min; max), got {r.shape}")
    if not np.issubdtype(r.dtype, np.floating) or not np.isfinite(r).all() or (r[0] > r[1]).any():
        raise ValueError("ranges must be finite floats with min <= max in every dimension")
    return r


def quantize(embeddings: np.ndarray, precision: str, ranges: np.ndarray | None = None, *,
             centre: np.ndarray | None = None) -> np.ndarray:
    """sentence-transformers' `quantize_embeddings(embeddings, precision, ranges=ranges)`, bit for bit
    (float32 in, float32 ranges: the arithmetic runs in float32 there too). Unlike it, int8/uint8
    need `ranges` (shape (2, dim)): min/max of the rows at hand is exactly the trap this avoids.
    binary-centred / ubinary-centred need `centre` (shape (dim,)): bits of x > centre."""
    precision = check_precision(precision)
    x = np.asarray(embeddings)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"embeddings must be a 2-D float array, got {x.ndim}-D {x.dtype}")
    if precision == "float32":
        return x.astype(np.float32)
    if precision in BITS:
        if precision in CENTRED:
            if centre is None:
                raise MissingRangesError(f"{precision} needs the per-dimension centre (shape (dim,)); none was given")
            threshold = check_centre(centre, x.shape[1]).astype(x.dtype)
        else:
            threshold = 0
        packed = np.packbits(x > threshold, axis=-1).reshape(x.shape[0], -1)
        return packed if precision in UNSIGNED_BITS else (packed.astype(np.int16) - 128).astype(np.int8)
    if ranges is None:
        raise MissingRangesError(f"{precision} needs per-dimension ranges (shape (2, dim)); none were given")
    ranges = check_ranges(ranges, x.shape[1])
    starts = ranges[0, :]
    steps = (ranges[1, :] - ranges[0, :]) / 255
    steps = np.where(steps == 0, 1, steps)
    codes = np.clip(np.floor((x - starts) / steps), 0, 255)
    return codes.astype(np.uint8) if precision == "uint8" else (codes - 128).astype(np.int8)


def dequantize(codes: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """Float32 stand-ins of compact codes, for scoring with a float query: int8/uint8 -> the middle
    of each code's bucket; every bit layout -> +1 / -1 per bit (sentence-transformers' rescoring;
    for the centred bits, the sign of x - centre: score them with q - centre, search.rescore does);
    float32 -> as is. `codes` is (rows, width(precision, dim)); bit layouts give all 8 * width dims."""
    precision = check_precision(precision)
    c = np.asarray(codes)
    if c.ndim != 2:
        raise ValueError(f"codes must be a 2-D array, got {c.ndim}-D")
    if c.dtype != DTYPES[precision]:
        raise ValueError(f"{precision} codes must be {np.dtype(DTYPES[precision]).name}, got {c.dtype}")
    if precision == "float32":
        return c
    if precision in BITS:
        u = c if precision in UNSIGNED_BITS else c.view(np.uint8) ^ np.uint8(0x80)  # binary = ubinary - 128
        return np.unpackbits(u, axis=-1).astype(np.float32) * 2 - 1
    if ranges is None:
        raise MissingRangesError(f"{precision} codes need the ranges they were made with")
    ranges = check_ranges(ranges, c.shape[1]).astype(np.float32)
    steps = (ranges[1] - ranges[0]) / 255
    steps = np.where(steps == 0, 1, steps)
    u = c.astype(np.float32) + (128 if precision == "int8" else 0)
    return ranges[0] + (u + 0.5) * steps

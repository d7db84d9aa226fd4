"""Masked mean pooling + L2 normalisation: the E5 / sentence-transformers head."""
from __future__ import annotations

import numpy as np


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(batch, seq, dim) hidden states and a (batch, seq) 0/1 mask -> (batch, dim) unit rows, float32.

    The masked sum is one batched matmul (mask as a row vector) instead of a
    broadcast multiply, so no (batch, seq, dim) temporary is made.
    """
    hidden = np.asarray(hidden, dtype=np.float32)
    weights = np.asarray(mask, dtype=np.float32)[:, None, :]  # (b, 1, s)
    summed = np.matmul(weights, hidden)[:, 0, :]  # (b, d)
    counts = np.maximum(weights.sum(axis=2), 1e-9)  # (b, 1)
    pooled = summed / counts
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)

import numpy as np

from e5_onnx import mean_pool_normalize


def reference_pool(hidden, mask):
    """Plain loops: average the unmasked token vectors, then divide by the Euclidean norm."""
    out = []
    for h, m in zip(hidden, mask):
        tokens = [h[j] for j in range(len(m)) if m[j] == 1]
        v = np.sum(tokens, axis=0) / len(tokens)
        out.append(v / np.sqrt(np.sum(v.astype(np.float64) ** 2)))
    return np.array(out)


def test_matches_plain_reference_with_ragged_masks():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(5, 9, 16)).astype(np.float32)
    lengths = [9, 1, 4, 7, 2]
    mask = np.array([[1] * n + [0] * (9 - n) for n in lengths], dtype=np.int64)
    got = mean_pool_normalize(hidden, mask)
    assert got.dtype == np.float32 and got.shape == (5, 16)
    np.testing.assert_allclose(got, reference_pool(hidden, mask), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_padding_values_do_not_leak_into_the_mean():
    rng = np.random.default_rng(1)
    hidden = rng.normal(size=(2, 6, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    poisoned = hidden.copy()
    poisoned[0, 3:] = 1e6
    np.testing.assert_allclose(mean_pool_normalize(poisoned, mask)[0], mean_pool_normalize(hidden, mask)[0], atol=1e-7)


def test_empty_batch_and_float64_input():
    assert mean_pool_normalize(np.zeros((0, 4, 8)), np.zeros((0, 4))).shape == (0, 8)
    h = np.random.default_rng(2).normal(size=(1, 3, 4))
    assert mean_pool_normalize(h, np.ones((1, 3))).dtype == np.float32

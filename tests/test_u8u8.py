"""INT8 that is exact on every x86 CPU (export/u8u8.py): onnxruntime's U8S8 kernels add u8 x s8
pairs in a saturating int16 on AVX2 / AVX-512 CPUs without VNNI, so an export carries a U8U8 twin
of its INT8 graph and the runtime picks it on such CPUs (e5_onnx.backends.int8_saturates)."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from e5_onnx import Embedder
from e5_onnx.backends import int8_saturates
from e5_onnx.manifest import U8U8, graph_name, variant_files
from export import u8u8


def matmul_integer(weights: np.ndarray) -> onnx.ModelProto:
    """y = (a - 128) @ w in int32, w an int8 initializer: one onnxruntime U8S8 GEMM."""
    k, n = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w", "a_zero_point"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, ["rows", k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["rows", n])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.array(128, np.uint8), "a_zero_point")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto, a: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"a": a})[0]


def extreme_operands(seed: int = 0, rows: int = 16, k: int = 384, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Activations and weights at the ends of their ranges: two such u8 x s8 products exceed int16."""
    rng = np.random.default_rng(seed)
    a = rng.choice(np.array([1, 255], np.uint8), (rows, k))
    w = rng.choice(np.array([-127, 127], np.int8), (k, n))
    return a, w


def exact(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (a.astype(np.int64) - 128) @ w.astype(np.int64)


def test_the_cpu_rule_matches_what_onnxruntime_computes_here():
    """int8_saturates() is read from CPU flags; here it is checked against the kernel itself."""
    a, w = extreme_operands()
    clipped = not np.array_equal(run(matmul_integer(w), a), exact(a, w))
    assert clipped == int8_saturates(), (clipped, int8_saturates())


def test_the_u8u8_twin_computes_exact_integers_on_this_cpu(tmp_path):
    a, w = extreme_operands(seed=1)
    onnx.save(matmul_integer(w), str(tmp_path / "int8.onnx"))
    assert u8u8.write(tmp_path / "int8.onnx", tmp_path / "u8u8.onnx") == 1
    twin = onnx.load(str(tmp_path / "u8u8.onnx"))
    assert np.array_equal(run(twin, a), exact(a, w))


@pytest.mark.parametrize(("flags", "machine", "saturates"), [
    ({"avx2"}, "x86_64", True),                                    # Zen 1-3, Haswell .. Broadwell
    ({"avx2", "avx512f", "avx512bw"}, "x86_64", True),             # Skylake-SP: AVX-512 without VNNI
    ({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86_64", False),
    ({"avx2", "avx_vnni"}, "x86_64", False),                       # Alder Lake and later clients
    ({"avx2", "amx_int8", "avx512_vnni"}, "x86_64", False),
    ({"sse4_2"}, "x86_64", False),                                 # no AVX2: onnxruntime's exact SSE kernels
    (set(), "x86_64", True),                                       # flags unreadable: the exact graph
    (set(), "aarch64", False), ({"asimd"}, "arm64", False),        # ARM: exact dot products
])
def test_the_cpu_rule(flags, machine, saturates):
    assert int8_saturates(flags, machine) is saturates


def test_the_export_carries_the_twin_and_the_runtime_picks_it_where_needed(minilm_export):
    manifest = json.loads((minilm_export / "manifest.json").read_text())
    twin = manifest[U8U8]["int8"]
    assert twin in manifest["files"] and f"{twin}.data" not in manifest["files"]
    assert variant_files(manifest, "int8") == ["model_int8.onnx", "model_int8.onnx.data", twin]
    model = Embedder(minilm_export, threads=1)  # one session: the graphs below are swapped into it
    assert model.graph == (twin if int8_saturates() else "model_int8.onnx")
    assert manifest["export"]["parity_int8_graph"] == model.graph
    if not int8_saturates():  # both graphs exact here: the export compared them
        assert manifest["parity"]["int8_vs_u8u8"]["cosine_min"] >= 0.99999
    # the twin reads the INT8 graph's weights: each is the same bytes, + 128 as uint8, zero point 128
    base = onnx.load(str(minilm_export / "model_int8.onnx"))
    other = onnx.load(str(minilm_export / twin))
    weights = {t.name: numpy_helper.to_array(t) for t in base.graph.initializer}
    folds = [n for n in other.graph.node if n.op_type == "BitwiseXor"]
    gemms = [n for n in other.graph.node if n.op_type in u8u8.WEIGHT_INPUTS]
    assert len(folds) == len({n.input[1] for n in base.graph.node if n.op_type in u8u8.WEIGHT_INPUTS}) > 0
    assert [n.op_type for n in gemms] == [n.op_type for n in base.graph.node if n.op_type in u8u8.WEIGHT_INPUTS]
    twin_inits = {t.name: t for t in other.graph.initializer}
    for n in gemms:
        w_at, zp_at = u8u8.WEIGHT_INPUTS[n.op_type]
        assert n.input[w_at].endswith("_u8u8") and n.input[w_at][: -len("_u8u8")] in weights
        assert (numpy_helper.to_array(twin_inits[n.input[zp_at]]) == 128).all()
    # the same int32 sums: the twin run by hand (not the runtime's choice) matches the INT8 vectors
    # within what the float epilogue can move, on whatever CPU this is, when the INT8 graph is exact here
    texts = ["query: how do vaccines work", "passage: " + "Bone density falls after menopause. " * 20]
    model.session.session = ort.InferenceSession(str(minilm_export / twin), providers=["CPUExecutionProvider"])
    twin_vectors = model.encode(texts)
    reference = np.load(minilm_export / "reference.npz")
    if not int8_saturates():
        model.session.session = ort.InferenceSession(str(minilm_export / "model_int8.onnx"), providers=["CPUExecutionProvider"])
        assert np.min(np.sum(model.encode(texts) * twin_vectors, axis=1)) >= 0.99999
    probes = model.encode(list(reference["texts"]))
    assert np.mean(np.sum(probes * reference["embeddings"], axis=1)) >= manifest["parity"]["torch_vs_int8"]["required_mean"]


def test_an_export_without_the_twin_warns_on_a_cpu_that_clips_and_not_elsewhere(minilm_export, tmp_path, monkeypatch):
    older = tmp_path / "older"
    shutil.copytree(minilm_export, older)
    manifest = json.loads((older / "manifest.json").read_text())
    del manifest[U8U8]
    (older / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr("e5_onnx.embedder.int8_saturates", lambda: True)
    with pytest.warns(RuntimeWarning, match="re-export"):
        assert Embedder(older).graph == "model_int8.onnx"
    assert Embedder(minilm_export).graph == manifest["variants"]["int8"].replace(".onnx", "_u8u8.onnx")
    monkeypatch.setattr("e5_onnx.embedder.int8_saturates", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Embedder(older).graph == "model_int8.onnx"
        assert Embedder(minilm_export, variant="fp32").graph == "model.onnx"
    assert graph_name(manifest, "int8", True) == "model_int8.onnx"


@pytest.mark.parametrize(("value", "message"), [
    ({"int8": ["model_int8_u8u8.onnx"]}, "field 'u8u8.int8' is a list, not a file name"),
    ("model_int8_u8u8.onnx", "field 'u8u8' is not an object"),
])
def test_a_mistyped_twin_entry_is_a_clear_error(minilm_export, tmp_path, value, message):
    from e5_onnx.manifest import ModelDirError

    bad = tmp_path / "bad"
    shutil.copytree(minilm_export, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest[U8U8] = value
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirError, match=message):
        Embedder(bad)


def test_a_graph_with_an_integer_gemm_it_cannot_convert_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("QLinearMatMul", ["a", "as", "az", "w", "ws", "wz", "ys", "yz"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4])],
        [numpy_helper.from_array(np.ones((4, 4), np.int8), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "int8.onnx"))
    with pytest.raises(ValueError, match="QLinearMatMul"):
        u8u8.write(tmp_path / "int8.onnx", tmp_path / "u8u8.onnx")


@pytest.mark.parametrize("damaged", ["model_int8.onnx", "model_int8_u8u8.onnx", "model_int8.onnx.data"])
def test_a_damaged_int8_graph_fails_to_load_on_every_cpu(minilm_export, tmp_path, damaged):
    """Both INT8 graphs are checked at load, not only the one this CPU runs: an export (or a Lambda
    bundle) that is damaged fails the same way on a VNNI CPU and on one without."""
    from e5_onnx.manifest import HashMismatchError

    copy = tmp_path / "copy"
    shutil.copytree(minilm_export, copy)
    data = (copy / damaged).read_bytes()
    (copy / damaged).write_bytes(data[: len(data) // 2])
    with pytest.raises(HashMismatchError, match=damaged.replace(".", r"\.")):
        Embedder(copy)


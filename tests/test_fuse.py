"""export/fuse.py: the INT8 graph with fused kernels computes the very numbers of the graph before
it (issue 20), so the fusion costs no fidelity and keeps batch invariance as it was."""
import numpy as np
import onnx
import pytest

from e5_onnx import Embedder
from e5_onnx.session import EncoderSession
from export import fuse, u8u8

from .test_determinism import INVARIANT_COSINE, TEXTS


def unfused_embedder(export, tmp_path, threads=None) -> Embedder:
    """The export's Embedder running its INT8 graph with fuse.py undone (as exports wrote it before)."""
    model = onnx.load(str(export / "model_int8.onnx"))
    fuse.unfuse(model)
    ops = {n.op_type for n in model.graph.node}
    assert "QAttention" not in ops and {"MatMulInteger", "MultiHeadAttention"} <= ops
    path = tmp_path / "unfused.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="unfused.onnx.data", size_threshold=1024)
    emb = Embedder(export, threads=threads)
    if emb.graph != "model_int8.onnx":  # this CPU runs the U8U8 twin (export/u8u8.py): so does the unfused graph
        u8u8.write(path, tmp_path / "unfused_u8u8.onnx")
        path = tmp_path / "unfused_u8u8.onnx"
    emb.session = EncoderSession(path, threads=threads, position_offset=emb.manifest.get("position_offset", 0))
    return emb


@pytest.mark.parametrize("model", ["minilm", "me5"])
def test_fused_int8_graph_gives_the_unfused_graphs_vectors_bit_for_bit(model, request, tmp_path):
    export = request.getfixturevalue(f"{model}_export")
    ops = {n.op_type for n in onnx.load(str(export / "model_int8.onnx"), load_external_data=False).graph.node}
    assert "QAttention" in ops and "MatMulInteger" not in ops and "MultiHeadAttention" not in ops
    fused, unfused = Embedder(export), unfused_embedder(export, tmp_path)
    alone = np.concatenate([fused.encode([t]) for t in TEXTS])
    assert np.array_equal(alone, np.concatenate([unfused.encode([t]) for t in TEXTS]))
    for emb in (fused, unfused):
        emb.batch_size, emb.max_batch_tokens = 7, 8192
    assert np.array_equal(fused.encode(TEXTS), unfused.encode(TEXTS))


def test_fuse_then_unfuse_restores_the_graph(minilm_export):
    model = onnx.load(str(minilm_export / "model_int8.onnx"))
    fused = {n.op_type: 0 for n in model.graph.node}
    for n in model.graph.node:
        fused[n.op_type] += 1
    layers = fused["QAttention"]
    fuse.unfuse(model)
    counts = {n.op_type: 0 for n in model.graph.node}
    for n in model.graph.node:
        counts[n.op_type] += 1
    # per layer: Q, K, V and FFN in back as MatMulInteger + Cast + Mul (+ the scales' Mul), attention as MHA
    assert counts["MatMulInteger"] == 4 * layers and counts["MultiHeadAttention"] == layers
    assert counts["MatMulIntegerToFloat"] == fused["MatMulIntegerToFloat"] - layers  # the per-row ones stay
    # 15 nodes per layer; 11 kernels (onnxruntime folds the four constant scale Muls at load)
    assert sum(counts.values()) - sum(fused.values()) == 15 * layers
    again = onnx.ModelProto.FromString(model.SerializeToString())
    assert fuse.fuse(again) == {"MatMulIntegerToFloat": 4 * layers, "QAttention": layers}


def test_thread_count_and_spinning_do_not_change_a_vector(minilm_export):
    """The single-query levers docs/benchmarks.md measures (one thread, spinning off) change where
    the kernels run, not what they compute: a text's vector stays its vector (batch-invariance bound)."""
    default = Embedder(minilm_export, threads=2)
    alone = np.concatenate([default.encode([t]) for t in TEXTS])
    for emb in (Embedder(minilm_export, threads=1), Embedder(minilm_export, threads=2, spinning=False)):
        single = np.concatenate([emb.encode([t]) for t in TEXTS])
        emb.batch_size, emb.max_batch_tokens = 7, 8192
        for rows in (single, emb.encode(TEXTS)):
            cos = np.sum(alone.astype(np.float64) * rows, axis=1)
            assert cos.min() >= INVARIANT_COSINE, (int(cos.argmin()), float(cos.min()))


def test_onnx_attention_variant_masks_padding_as_qattention_does(minilm_export, tmp_path):
    """benchmarks/latency.py's int8-attn23 lever (ONNX's Attention op in place of QAttention) must
    compute the same vectors, padded batches included, or its timings compare different work."""
    from benchmarks.latency import onnx_attention

    model = onnx.load(str(minilm_export / "model_int8.onnx"))
    onnx_attention(model)
    ops = [n.op_type for n in model.graph.node]
    assert "QAttention" not in ops and ops.count("Attention") == ops.count("Split") > 0
    path = tmp_path / "attn23.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="attn23.onnx.data", size_threshold=1024)
    default, variant = Embedder(minilm_export), Embedder(minilm_export)
    if variant.graph != "model_int8.onnx":
        u8u8.write(path, tmp_path / "attn23_u8u8.onnx")
        path = tmp_path / "attn23_u8u8.onnx"
    variant.session = EncoderSession(path, position_offset=variant.manifest.get("position_offset", 0))
    for emb in (default, variant):
        emb.batch_size, emb.max_batch_tokens = 7, 8192  # padded batches of mixed lengths
    cos = np.sum(default.encode(TEXTS).astype(np.float64) * variant.encode(TEXTS), axis=1)
    assert cos.min() >= INVARIANT_COSINE, (int(cos.argmin()), float(cos.min()))

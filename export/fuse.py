"""Fewer kernels per layer in the INT8 graph: onnxruntime's fused INT8 ops written by the export.

A single short query runs one kernel per node, and most of its nodes touch a few thousand floats:
the graph quantize_dynamic + actquant.py write ran 461 kernels per e5-small query (issue 20).
This pass rewrites, with the same weights, scales and zero points:

- every MatMulInteger -> Cast -> Mul(a_scale * b_scale) chain whose activation scale is a fixed
  constant (actquant.py's fixed ranges) into one MatMulIntegerToFloat (onnxruntime fuses that
  chain itself only after a DynamicQuantizeLinear, which actquant.py removed);
- the three Q/K/V MatMulIntegerToFloat that read one quantized input, and the MultiHeadAttention
  they feed, into one QAttention (weights concatenated [hidden, 3 hidden], per-column scales):
  the QKV projection then runs as one INT8 GEMM inside the attention kernel.

Per-row activation scales (actquant.py's per_row inputs) are left as they are: onnxruntime has
no op that quantizes a row by its own max, and MatMulIntegerToFloat takes one activation scale.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    return readers


def fuse_fixed_matmuls(model: onnx.ModelProto) -> int:
    """MatMulInteger -> Cast -> Mul(Mul(a_scale, b_scale)) with constant scales -> MatMulIntegerToFloat,
    in place; returns how many chains were fused."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers = _readers(graph)
    replaced: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    for mm in graph.node:
        if mm.op_type != "MatMulInteger" or len(mm.input) < 4:
            continue
        casts = readers.get(mm.output[0], [])
        if len(casts) != 1 or casts[0].op_type != "Cast":
            continue
        muls = readers.get(casts[0].output[0], [])
        if len(muls) != 1 or muls[0].op_type != "Mul":
            continue
        mul = muls[0]
        scales = producer.get(mul.input[1])
        if scales is None or scales.op_type != "Mul" or not set(scales.input) <= inits \
                or mm.input[2] not in inits or len(readers[scales.output[0]]) != 1:
            continue
        a_scale, b_scale = scales.input
        replaced[id(mm)] = helper.make_node(
            "MatMulIntegerToFloat", [mm.input[0], mm.input[1], a_scale, b_scale, mm.input[2], mm.input[3]],
            [mul.output[0]], name=f"{mm.name}_to_float", domain=MS_DOMAIN)
        dropped |= {id(casts[0]), id(mul), id(scales)}
    _replace(graph, replaced, dropped)
    return len(replaced)


def fuse_qattention(model: onnx.ModelProto) -> int:
    """MultiHeadAttention fed by three MatMulIntegerToFloat of one quantized input -> QAttention,
    in place; returns how many attention ops were fused."""
    graph = model.graph
    values = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers = _readers(graph)
    replaced: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    for mha in graph.node:
        if mha.op_type != "MultiHeadAttention" or len(mha.input) != 5 or not mha.input[3]:
            continue
        qkv = [producer.get(i) for i in mha.input[:3]]
        if any(p is None or p.op_type != "MatMulIntegerToFloat" or len(readers[p.output[0]]) != 1 for p in qkv):
            continue
        shared = {(p.input[0], p.input[2], p.input[4]) for p in qkv}
        if len(shared) != 1 or not all(p.input[1] in values and p.input[3] in values and p.input[5] in values
                                       for p in qkv):
            continue
        x, a_scale, a_zero_point = shared.pop()
        attributes = {a.name: helper.get_attribute_value(a) for a in mha.attribute}
        if set(attributes) - {"num_heads", "mask_filter_value", "scale"}:
            continue
        stem = mha.name or mha.output[0]
        w = np.concatenate([numpy_helper.to_array(values[p.input[1]]) for p in qkv], axis=1)
        w_scale = np.concatenate([np.broadcast_to(numpy_helper.to_array(values[p.input[3]]), (w.shape[1] // 3,))
                                  for p in qkv]).astype(np.float32)
        w_zero = np.concatenate([np.broadcast_to(numpy_helper.to_array(values[p.input[5]]), (w.shape[1] // 3,))
                                 for p in qkv]).astype(w.dtype)
        graph.initializer.extend([numpy_helper.from_array(w, f"{stem}_qkv_weight"),
                                  numpy_helper.from_array(w_scale, f"{stem}_qkv_weight_scale"),
                                  numpy_helper.from_array(w_zero, f"{stem}_qkv_weight_zero_point")])
        keep = {k: v for k, v in attributes.items() if k in ("num_heads", "mask_filter_value", "scale")}
        replaced[id(mha)] = helper.make_node(
            "QAttention", [x, f"{stem}_qkv_weight", mha.input[3], a_scale, f"{stem}_qkv_weight_scale",
                           mha.input[4], a_zero_point, f"{stem}_qkv_weight_zero_point"],
            list(mha.output), name=f"{stem}_quant", domain=MS_DOMAIN, **keep)
        dropped |= {id(p) for p in qkv}
    _replace(graph, replaced, dropped)
    _drop_unused(graph)
    return len(replaced)


def _drop_unused(graph: onnx.GraphProto) -> None:
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)


def _replace(graph: onnx.GraphProto, replaced: dict[int, onnx.NodeProto], dropped: set[int]) -> None:
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)


def fuse(model: onnx.ModelProto, matmul_to_float: bool = True, attention: bool = True) -> dict[str, int]:
    """The rewrites asked for, in place (the attention one needs the first); the count of each."""
    counts = {"MatMulIntegerToFloat": fuse_fixed_matmuls(model)} if matmul_to_float else {}
    if attention and matmul_to_float:
        counts["QAttention"] = fuse_qattention(model)
    if any(counts.values()) and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return counts


def unfuse_attention(model: onnx.ModelProto) -> None:
    """The inverse of fuse_qattention, in place: the graph tests/test_fuse.py and benchmarks/latency.py
    compare the fused one with."""
    graph = model.graph
    values = {t.name: t for t in graph.initializer}
    nodes = []
    for n in graph.node:
        if n.op_type != "QAttention":
            nodes.append(n)
            continue
        x, w, bias, a_scale, w_scale, mask, a_zero, w_zero = n.input[:8]
        parts = [np.split(numpy_helper.to_array(values[t]), 3, axis=-1) for t in (w, w_scale, w_zero)]
        qkv = []
        for i, role in enumerate("qkv"):
            names = [f"{n.name}_{role}_{kind}" for kind in ("w", "w_scale", "w_zero", "out")]
            graph.initializer.extend(numpy_helper.from_array(np.ascontiguousarray(parts[k][i]), names[k]) for k in range(3))
            nodes.append(helper.make_node("MatMulIntegerToFloat", [x, names[0], a_scale, names[1], a_zero, names[2]],
                                          [names[3]], name=f"{n.name}_{role}", domain="com.microsoft"))
            qkv.append(names[3])
        attributes = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        nodes.append(helper.make_node("MultiHeadAttention", qkv + [bias, mask], list(n.output), name=n.name,
                                      domain="com.microsoft", **attributes))
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused(graph)


def unfuse(model: onnx.ModelProto) -> None:
    """The inverse of fuse(), in place: the INT8 graph as exports wrote it before issue 20."""
    unfuse_attention(model)
    nodes = []
    for n in model.graph.node:
        if n.op_type != "MatMulIntegerToFloat" or n.input[2] == "row_quant_scale":  # actquant's per-row ones stay
            nodes.append(n)
            continue
        q, w, a_scale, w_scale, a_zero, w_zero = n.input[:6]
        stem = n.output[0]
        nodes += [helper.make_node("MatMulInteger", [q, w, a_zero, w_zero], [f"{stem}_int"]),
                  helper.make_node("Cast", [f"{stem}_int"], [f"{stem}_float"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [a_scale, w_scale], [f"{stem}_scales"]),
                  helper.make_node("Mul", [f"{stem}_float", f"{stem}_scales"], list(n.output))]
    del model.graph.node[:]
    model.graph.node.extend(nodes)

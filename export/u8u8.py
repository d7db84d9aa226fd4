"""The INT8 graph for x86 CPUs without VNNI: the same weights as unsigned bytes (U8U8), so its
integer dot products are exact there.

onnxruntime multiplies uint8 activations by int8 weights (U8S8) with `vpmaddubsw` on AVX2 and
AVX-512 CPUs without VNNI, which adds two u8 x s8 products into a *saturating* int16: with the
activations around zero point 128 and weights up to +-127, most sums clip (a MatMulInteger with
such inputs differed from exact integer arithmetic in 99.9% of its outputs on an AMD EPYC Zen 3,
onnxruntime 1.32). MiniLM's INT8 vectors there read cosine to torch 0.9948 (min 0.9897), below the
export's parity floor, where the exact arithmetic reads 0.9975. `reduce_range` (7-bit weights,
onnxruntime's advice for such CPUs) is exact too but reads 0.9955: a bit of every weight lost.

onnxruntime's U8U8 kernels widen to int16 before multiplying (`vpmaddwd`): exact, with the full
8 bits. A weight w in U8U8 is the byte w + 128 with zero point 128, and (a - za)(w + 128 - 128) is
the same integer as U8S8's (a - za) w: on a CPU without VNNI this graph gives the vectors a VNNI
CPU gives with model_int8.onnx. U8U8 has no VNNI or AMX kernel in onnxruntime, so the U8S8 graph
stays the one for CPUs that have them (e5_onnx.backends.int8_saturates chooses).

The graph written here shares model_int8.onnx's weights file: each int8 weight is read as it is
and turned into its U8U8 bytes by Cast(uint8) + BitwiseXor(128) (two's complement: w xor 0x80 is
w + 128), which onnxruntime's constant folding computes once when the session loads. The graph
file is ~150 KB; the weights are not duplicated.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# op type -> (weight input index, weight zero point input index): onnxruntime's integer-GEMM ops
WEIGHT_INPUTS = {"MatMulInteger": (1, 3), "MatMulIntegerToFloat": (1, 5), "QAttention": (1, 7)}
# integer GEMMs the export does not write today; one appearing must be made exact before it ships
UNCONVERTED = {"DynamicQuantizeMatMul", "QGemm", "QLinearMatMul", "MatMulNBits", "ConvInteger", "QLinearConv"}
OFFSET = "u8u8_sign_bit"


def write(int8_graph: Path, out: Path) -> int:
    """Write the U8U8 twin of `int8_graph` (weights as ONNX external data beside it) to `out`, in
    the same directory; returns how many weights it converts. Every integer GEMM of the graph is
    converted, or this raises: a recipe that adds another kind must say how it is made exact."""
    if out.parent != int8_graph.parent:
        raise ValueError("the U8U8 graph reads the INT8 graph's weights file: write it beside it")
    model = onnx.load(str(int8_graph), load_external_data=False)
    if not any(o.domain in ("", "ai.onnx") and o.version >= 18 for o in model.opset_import):
        raise ValueError(f"{int8_graph}: BitwiseXor needs ONNX opset 18")
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    converted: dict[str, str] = {}
    folds: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type in UNCONVERTED:
            raise ValueError(f"{node.name}: a {node.op_type} (integer GEMM) that this pass does not convert")
        if node.op_type not in WEIGHT_INPUTS:
            continue
        w_at, zp_at = WEIGHT_INPUTS[node.op_type]
        weight = node.input[w_at]
        if weight not in inits or inits[weight].data_type != TensorProto.INT8:
            raise ValueError(f"{node.name}: its weights {weight!r} are not an int8 initializer")
        if weight not in converted:
            converted[weight] = f"{weight}_u8u8"
            folds += [helper.make_node("Cast", [weight], [f"{weight}_bytes"], to=TensorProto.UINT8),
                      helper.make_node("BitwiseXor", [f"{weight}_bytes", OFFSET], [converted[weight]])]
        node.input[w_at] = converted[weight]
        while len(node.input) <= zp_at:
            node.input.append("")
        zero_point, shape = node.input[zp_at], ()
        if zero_point:
            values = numpy_helper.to_array(inits[zero_point], base_dir=str(int8_graph.parent))
            if values.dtype != np.int8 or np.any(values != 0):
                raise ValueError(f"{node.name}: weight zero point {zero_point!r} is not symmetric int8 (all 0)")
            shape = values.shape
        name = f"{converted[weight]}_zero_point"
        if name not in inits:
            inits[name] = numpy_helper.from_array(np.full(shape, 128, np.uint8), name)
            graph.initializer.append(inits[name])
        node.input[zp_at] = name
    if not converted:
        raise ValueError(f"{int8_graph}: no integer GEMM to convert")
    graph.initializer.append(numpy_helper.from_array(np.array(128, np.uint8), OFFSET))
    nodes = folds + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused(graph)
    onnx.save(model, str(out))  # the external-data references stay as they are: the same weights file
    return len(converted)


def _drop_unused(graph: onnx.GraphProto) -> None:
    """The int8 zero points the converted nodes no longer read."""
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)

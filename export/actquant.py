"""INT8 activations that do not depend on the batch: fixed ranges, or one scale per row.

quantize_dynamic quantizes each MatMul input with one uint8 scale and zero point per tensor per
call (DynamicQuantizeLinear): every text in a batch shares them, so a long or outlier-heavy
neighbour moves everyone's vector (issue 12: MiniLM, a text alone vs in a batch of 300, cosine
min 0.99791). This rewrites each DynamicQuantizeLinear that quantize_dynamic wrote, so a row's
quantization reads nothing but that row:

- fixed: QuantizeLinear with the min/max the tensor reached on the calibration texts (after
  SmoothQuant has evened its channels out). Also cheaper than dynamic (no min/max pass per call);
  onnxruntime folds the constant scales and fuses MatMulInteger + Cast + Mul into
  MatMulIntegerToFloat at load.
- per_row: symmetric, one scale per row, max|x_row| / 127, around the fixed zero point 128
  (MatMulInteger and MatMulIntegerToFloat take only a scalar activation zero point):
  Abs -> ReduceMax -> Div -> QuantizeLinear, then MatMulIntegerToFloat with the per-column weight
  scales and one Mul by the row's max. For inputs whose range a fixed scale cannot hold (the GELU
  outputs feeding the FFN output MatMul).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .smooth import tensor_values

MS_DOMAIN = "com.microsoft"
ROW_SCALE = 1.0 / 127  # QuantizeLinear scale for rows divided by their max: q = round(127 x / max) + 128
ROW_ZERO_POINT = 128


def tensor_ranges(model: onnx.ModelProto, tensors: list[str], feeds: list[dict],
                  base_dir: Path | None = None) -> dict[str, tuple[float, float]]:
    """(min, max) of each tensor over every value of every feed (base_dir: see smooth.tensor_values)."""
    lo = {t: np.inf for t in tensors}
    hi = {t: -np.inf for t in tensors}
    for values in tensor_values(model, tensors, feeds, base_dir):
        for t, v in values.items():
            lo[t], hi[t] = min(lo[t], float(v.min())), max(hi[t], float(v.max()))
    return {t: (lo[t], hi[t]) for t in tensors}


def uint8_params(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point of an asymmetric uint8 range holding [lo, hi] and zero (as onnxruntime's
    DynamicQuantizeLinear computes them, once, at export)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255 if hi > lo else 1.0
    return scale, int(np.clip(np.rint(-lo / scale), 0, 255))


def make_invariant(quantized: onnx.ModelProto, calibrated: onnx.ModelProto, feeds: list[dict],
                   per_row: set[str], base_dir: Path | None = None) -> onnx.ModelProto:
    """A copy of `quantized` (quantize_dynamic's output) without DynamicQuantizeLinear: inputs
    named in `per_row` get per-row scales, every other one a fixed range measured by running
    `calibrated` (the fp32 graph that was quantized; same tensor names) on `feeds` (base_dir: the
    directory of its external data, see smooth.tensor_values)."""
    model = onnx.ModelProto.FromString(quantized.SerializeToString())
    graph = model.graph
    dynamic = [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]
    fixed = [n.input[0] for n in dynamic if n.input[0] not in per_row]
    ranges = tensor_ranges(calibrated, fixed, feeds, base_dir) if fixed else {}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)

    graph.initializer.extend([
        numpy_helper.from_array(np.array([-1], np.int64), "row_quant_axes"),
        numpy_helper.from_array(np.array(ROW_SCALE, np.float32), "row_quant_scale"),
        numpy_helper.from_array(np.array(ROW_ZERO_POINT, np.uint8), "row_quant_zero_point"),
        numpy_helper.from_array(np.array(np.finfo(np.float32).tiny, np.float32), "row_quant_tiny"),
    ] if len(fixed) < len(dynamic) else [])
    replaced: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    for node in dynamic:
        x = node.input[0]
        q, scale, zero_point = node.output
        if x not in per_row:
            s, zp = uint8_params(*ranges[x])
            graph.initializer.extend([numpy_helper.from_array(np.array(s, np.float32), scale),
                                      numpy_helper.from_array(np.array(zp, np.uint8), zero_point)])
            replaced[id(node)] = [helper.make_node("QuantizeLinear", [x, scale, zero_point], [q], name=node.name)]
            continue
        row_max = f"{node.name}_row_max"
        new = [
            helper.make_node("Abs", [x], [f"{node.name}_abs"], name=f"{node.name}_abs"),
            helper.make_node("ReduceMax", [f"{node.name}_abs", "row_quant_axes"], [f"{node.name}_max"],
                             name=f"{node.name}_max", keepdims=1),
            helper.make_node("Max", [f"{node.name}_max", "row_quant_tiny"], [row_max], name=row_max),  # a zero row
            helper.make_node("Div", [x, row_max], [f"{node.name}_unit"], name=f"{node.name}_unit"),
            helper.make_node("QuantizeLinear", [f"{node.name}_unit", "row_quant_scale", "row_quant_zero_point"],
                             [q], name=node.name),
        ]
        for matmul in readers[q]:  # MatMulInteger -> Cast -> Mul(by Mul(scale, weight scale))
            (cast,) = readers[matmul.output[0]]
            (mul,) = readers[cast.output[0]]
            scales = producer[mul.input[1]]
            if (matmul.op_type, cast.op_type, mul.op_type, scales.op_type) != ("MatMulInteger", "Cast", "Mul", "Mul") \
                    or scales.input[0] != scale:
                raise ValueError(f"{matmul.name}: not the MatMulInteger chain quantize_dynamic writes")
            product = f"{matmul.name}_unscaled"
            new += [
                helper.make_node("MatMulIntegerToFloat",
                                 [q, matmul.input[1], "row_quant_scale", scales.input[1], "row_quant_zero_point",
                                  matmul.input[3]], [product], name=f"{matmul.name}_to_float", domain=MS_DOMAIN),
                helper.make_node("Mul", [product, row_max], [mul.output[0]], name=f"{matmul.name}_row_scale"),
            ]
            dropped |= {id(matmul), id(cast), id(mul), id(scales)}
        replaced[id(node)] = new
    nodes = []
    for n in graph.node:  # each replacement where its DynamicQuantizeLinear was: still topological
        if id(n) in replaced:
            nodes += replaced[id(n)]
        elif id(n) not in dropped:
            nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)
    if len(fixed) < len(dynamic) and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model

"""SmoothQuant for dynamic INT8: move activation outliers into the weights before quantizing.

Dynamic quantization gives each MatMul input one uint8 scale per tensor; BERT's LayerNorm outputs
have a few channels far larger than the rest, and that one scale crushes the others. Dividing
input channel j by s_j and multiplying weight row j by s_j leaves the product unchanged and evens
out both sides (Xiao et al. 2023, s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)). The division is
folded into the value projection where the input is an attention output (attention is linear in
V), and is an inserted Mul elsewhere (LayerNorm outputs also feed the residual, which must not
change).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from tokenizers import Tokenizer


def select_inputs(feeds: list[dict[str, np.ndarray]], input_names) -> list[dict[str, np.ndarray]]:
    """The feeds restricted to a graph's inputs; an input no feed can give is an error."""
    unknown = set(input_names) - {name for feed in feeds for name in feed}
    if unknown:
        raise ValueError(f"cannot calibrate a graph with inputs {sorted(unknown)}")
    return [{k: v for k, v in feed.items() if k in input_names} for feed in feeds]


def calibration_feeds(tokenizer: Tokenizer, texts: list[str], input_names: list[str]) -> list[dict[str, np.ndarray]]:
    """One unpadded feed per text, so every token counted is a real one."""
    feeds = []
    for enc in tokenizer.encode_batch(texts):
        ids = np.asarray([enc.ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        unknown = set(input_names) - set(feed)
        if unknown:
            raise ValueError(f"cannot calibrate a graph with inputs {sorted(unknown)}")
        feeds.append({k: v for k, v in feed.items() if k in input_names})
    return feeds


def matmul_inputs(graph: onnx.GraphProto, skip: set[str]) -> dict[str, list[onnx.NodeProto]]:
    """Activation tensor -> the MatMuls with a constant weight that read it (Q, K and V share one),
    leaving out tensors read by a MatMul named in `skip`."""
    weights = {i.name for i in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights and node.input[0] not in weights:
            readers.setdefault(node.input[0], []).append(node)
    return {t: nodes for t, nodes in readers.items() if not any(n.name in skip for n in nodes)}


def tensor_values(model: onnx.ModelProto, tensors: list[str], feeds: list[dict[str, np.ndarray]],
                  base_dir: Path | None = None):
    """For each feed, {tensor: its value} of the named intermediate tensors (fp32, unoptimised).

    A model whose weights are partly ONNX external data needs `base_dir`, the directory their
    paths are relative to: the probe graph is saved there for onnxruntime to load (which maps the
    external files instead of copying them)."""
    outputs = list(model.graph.output)
    del model.graph.output[:]  # the probe: the same graph with these tensors as its outputs
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    options.enable_cpu_mem_arena = False  # one feed at a time; an arena would keep the largest
    try:
        if base_dir is None:
            source = model.SerializeToString()
        else:
            fd, source = tempfile.mkstemp(prefix=".probe-", suffix=".onnx", dir=base_dir)
            os.close(fd)
            onnx.save(model, source)
        try:
            session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        finally:
            if base_dir is not None:
                os.unlink(source)
    finally:
        del model.graph.output[:]
        model.graph.output.extend(outputs)
    del source
    for feed in feeds:
        yield dict(zip(tensors, session.run(tensors, feed)))


def channel_maxima(model: onnx.ModelProto, tensors: list[str], feeds: list[dict[str, np.ndarray]],
                   base_dir: Path | None = None) -> dict[str, np.ndarray]:
    """max |x| per last-axis channel of each tensor over every token of the feeds."""
    maxima: dict[str, np.ndarray] = {}
    for values in tensor_values(model, tensors, feeds, base_dir):
        for name, value in values.items():
            m = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            maxima[name] = np.maximum(maxima[name], m) if name in maxima else m
    return maxima


def _value_projection(graph: onnx.GraphProto, producer: dict[str, onnx.NodeProto], constants: set[str],
                      tensor: str) -> tuple[str, str | None] | None:
    """(V weight, qkv bias or None) when `tensor` is a MultiHeadAttention output whose V comes
    straight from a constant-weight MatMul read by nothing else; None otherwise."""
    mha = producer.get(tensor)
    if mha is None or mha.op_type != "MultiHeadAttention" or mha.output[0] != tensor or len(mha.input) < 3:
        return None
    v = producer.get(mha.input[2])
    readers = [n for n in graph.node if mha.input[2] in n.input]
    if v is None or v.op_type != "MatMul" or v.input[1] not in constants or len(readers) != 1:
        return None
    bias = mha.input[3] if len(mha.input) > 3 and mha.input[3] in constants else None
    return v.input[1], bias


def smooth(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], alpha: float,
           skip: set[str] = frozenset(), base_dir: Path | None = None) -> onnx.ModelProto:
    """A copy of `model` with the input of every constant-weight MatMul not named in `skip` smoothed
    (base_dir: see tensor_values)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    readers = matmul_inputs(graph, skip)
    if not readers:
        return model
    maxima = channel_maxima(model, list(readers), feeds, base_dir)
    init = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}

    def rescale(name: str, f) -> None:
        init[name].CopyFrom(numpy_helper.from_array(f(numpy_helper.to_array(init[name])).astype(np.float32), name))

    inserted: dict[str, onnx.NodeProto] = {}
    for tensor, nodes in readers.items():
        w_max = np.max([np.abs(numpy_helper.to_array(init[n.input[1]])).max(axis=1) for n in nodes], axis=0)
        a_max = maxima[tensor]
        s = np.where((a_max > 0) & (w_max > 0), a_max**alpha / np.maximum(w_max, 1e-8) ** (1 - alpha), 1.0)
        s = np.clip(s, 1e-4, 1e4).astype(np.float32)
        for n in nodes:
            rescale(n.input[1], lambda w: w * s[:, None])
        value = _value_projection(graph, producer, set(init), tensor)
        if value is not None:
            weight, bias = value
            rescale(weight, lambda w: w / s[None, :])
            if bias is not None:
                rescale(bias, lambda b: np.concatenate([b[: -len(s)], b[-len(s):] / s]))
            continue
        scale = numpy_helper.from_array(1.0 / s, f"{tensor}_smooth_scale")
        graph.initializer.append(scale)
        inserted[tensor] = onnx.helper.make_node("Mul", [tensor, scale.name], [f"{tensor}_smoothed"],
                                                 name=f"{tensor}_smooth")
        for n in nodes:
            n.input[0] = f"{tensor}_smoothed"
    pending = {mul.output[0]: mul for mul in inserted.values()}
    ordered = []
    for node in graph.node:  # each Mul right before the first node that reads it
        ordered += [pending.pop(i) for i in node.input if i in pending]
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    return model

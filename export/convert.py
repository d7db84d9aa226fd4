"""The three graph steps: optimum export, onnxruntime BERT fusions, INT8 quantization."""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.optimizer import optimize_model
from optimum.exporters.onnx import onnx_export_from_model

from e5_onnx.manifest import data_file

from . import actquant, fuse, tables
from . import smooth as smoothquant

OPSET = 18

# The INT8 recipe, chosen by measurement; README "INT8 recipe" and benchmarks/README.md have the
# tables and commands.
# - Attention is fused as MultiHeadAttention, leaving the Q/K/V projections as plain MatMuls
#   that quantize like every other MatMul: 1.59x the batch throughput of the first recipe
#   (MatMul-only with a fused fp32 Attention, whose QKV projection stayed fp32).
# - Every MatMul: s8 weights per column (quantize_dynamic, QOperator) and u8 activations whose
#   scales never depend on the batch (actquant.py; issue 12: with one scale per tensor per call,
#   a MiniLM text alone vs in a batch of 300 read cosine min 0.99791, and a shuffled batch
#   changed ~90% of the rows):
#   - Q/K/V, attention output, FFN in: SmoothQuant (smooth.py, alpha 0.7, calibrated on
#     calibration.py's texts), then a FIXED activation range: the min/max each input reached on
#     the same texts. Smoothing is what makes one fixed range fit: static QDQ without it read
#     cosine mean 0.941 on MiniLM.
#   - FFN out (fed by the GELU, whose range a fixed scale cannot hold: MiniLM cosine min 0.9936
#     fixed vs 0.9957 per row): per-row symmetric scales max|x_row|/127 around zero point 128.
#     The former MatMulNBits (blocks of 256, accuracy level 4) there was invariant only to
#     ~5e-6 in cosine (its kernel's sums depend on the row count) and 1.2-1.4x slower than
#     MatMulIntegerToFloat + row scaling (scratch microbenchmark, [M,1536]x[1536,384], 1 thread).
#   MiniLM quick set, 600 texts, cosine to torch mean / min, alone vs in a batch (min cosine):
#     dynamic + FFN out MatMulNBits (the former default)  0.99868 / 0.99680   0.99848
#     fixed + FFN out MatMulNBits                         0.99875 / 0.99616   0.9999949
#     fixed everywhere (FFN out smoothed)                 0.99716 / 0.99357   0.9999998
#     per row everywhere but FFN out MatMulNBits          0.99903 / 0.99797   0.99993
#     fixed + FFN out per row (this)                      0.99842 / 0.99573   0.9999999
# - EmbedLayerNormalization: the embedding tables in INT8 (4x smaller files; mean cosine -0.0003).
# - SkipLayerNormalization left unfused: onnxruntime's CPU kernel for it takes 3.0 ms where the
#   Add + LayerNormalization it replaces take 0.67 (32 x 96 x 384 floats, 2 threads).
QUANTIZATION = {
    "attention_fusion": "MultiHeadAttention",
    "skip_layer_norm_fusion": False,
    "smooth": {"alpha": 0.7, "skip": ["ffn_out"]},  # skip: matmul_groups left unsmoothed
    "dynamic": {
        "format": "QOperator",
        "weight_type": "QInt8",
        "activation_type": "QUInt8",
        "per_channel": True,
        "reduce_range": False,
        "op_types": ["MatMul", "EmbedLayerNormalization"],
    },
    # activation scales (actquant.py): per row for these groups, a fixed calibrated range for
    # every other MatMul input; None: quantize_dynamic's one scale per tensor per call
    "activations": {"per_row": ["attention_out", "ffn_out"], "fixed": "min/max over the calibration texts"},
    "blockwise": None,  # MatMulNBits for some groups (recipes in benchmarks/fidelity.py)
    # fuse.py, after the activation scales: the fixed-range MatMulInteger -> Cast -> Mul chains as
    # MatMulIntegerToFloat, and Q/K/V + MultiHeadAttention as one QAttention. Same numbers, bit for
    # bit (the same int32 sums times the same a_scale * b_scale products); 461 -> 329 kernels per
    # e5-small call (issue 20: a short query runs one kernel per node; docs/benchmarks.md).
    "fuse": {"matmul_to_float": True, "attention": True},
}
# MatMulNBits settings a recipe's "blockwise" starts from.
BLOCKWISE = {"op": "MatMulNBits", "matmuls": [], "bits": 8, "block_size": 256, "symmetric": True, "accuracy_level": 4}
GELU_OPS = ("BiasGelu", "Gelu", "FastGelu")
ATTENTION_OPS = ("MultiHeadAttention", "Attention")


def export_onnx(model, out_dir: Path) -> Path:
    """Trace the (already loaded, eager-attention) model with optimum; dynamic batch and sequence axes.

    The word-embedding table (multilingual-e5-small: 250,037 x 384 floats, 82% of the weights) is
    traced as a view of its first rows and written to tables.TABLE_FILE beside the graph, which refers to
    it as ONNX external data: the graph is the same (a Gather reads the table; no shape in it depends
    on the row count), and torch's exporter no longer copies the table into its protobuf several
    times (export peak RSS 2.9 -> 1.4 GB for that model, benchmarks/results/export_cost.md)."""
    embeddings = model.get_input_embeddings()
    table, vocab = embeddings.weight, model.config.vocab_size
    rows = min(table.shape[0], tables.TRACED_ROWS)
    embeddings.weight = torch.nn.Parameter(table.detach()[:rows], requires_grad=False)
    model.config.vocab_size = rows  # optimum's dummy input ids stay inside the traced rows
    try:
        onnx_export_from_model(
            model,
            output=out_dir,
            task="feature-extraction",
            opset=OPSET,
            do_validation=False,  # our own parity check is stricter and runs on the final files
            no_post_process=True,
        )
    finally:
        embeddings.weight, model.config.vocab_size = table, vocab
    graph = out_dir / "model.onnx"
    tables.write_apart(graph, table.detach().numpy(), rows)
    return graph


def optimize(raw: Path, out: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Offline BERT fusions (attention, skip-layernorm, embed-layernorm, bias-gelu); returns fused op counts.

    The lookup tables stay external data (their files are moved beside `out`): the fusions see
    their first rows only (they check a table's width and rank, and their shape inference copies
    the whole model several times)."""
    options = FusionOptions("bert")
    options.use_multi_head_attention = QUANTIZATION["attention_fusion"] == "MultiHeadAttention"
    options.enable_skip_layer_norm = QUANTIZATION["skip_layer_norm_fusion"]
    graph = tables.load_graph(raw)
    shrunk = tables.shrink(graph, raw.parent)
    model = optimize_model(
        graph, model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
        opt_level=0, optimization_options=options, use_gpu=False,
    )
    del graph
    tables.restore(model.model, shrunk)
    for name in tables.files(shrunk):
        if raw.parent != out.parent:
            os.replace(raw.parent / name, out.parent / name)
    model.save_model_to_file(str(out))
    return {op: n for op, n in model.get_fused_operator_statistics().items() if n}


def matmul_groups(graph: onnx.GraphProto) -> dict[str, list[str]]:
    """MatMul node names by role: ffn_in (feeds the GELU, directly or through its bias Add),
    ffn_out (fed by the GELU), attention_out (fed by the attention op), qkv (every other MatMul:
    the Q/K/V projections)."""
    gelu_inputs = {i for n in graph.node if n.op_type in GELU_OPS for i in n.input}
    gelu_outputs = {o for n in graph.node if n.op_type in GELU_OPS for o in n.output}
    attention_outputs = {n.output[0] for n in graph.node if n.op_type in ATTENTION_OPS}
    bias_adds = {n.input[0] for n in graph.node if n.op_type == "Add" and n.output[0] in gelu_inputs}
    groups: dict[str, list[str]] = {"ffn_in": [], "ffn_out": [], "attention_out": [], "qkv": []}
    for n in graph.node:
        if n.op_type != "MatMul":
            continue
        if n.input[0] in gelu_outputs:
            groups["ffn_out"].append(n.name)
        elif n.output[0] in gelu_inputs or n.output[0] in bias_adds:
            groups["ffn_in"].append(n.name)
        elif n.input[0] in attention_outputs:
            groups["attention_out"].append(n.name)
        else:
            groups["qkv"].append(n.name)
    return groups


def quantize(fp32: Path, out: Path, recipe: dict = QUANTIZATION,
             calibration: list[dict] | None = None) -> None:
    """fp32 graph -> INT8 file: blockwise MatMuls first, the rest smoothed and quantized dynamically,
    then their activation scales made batch-invariant (calibration: unpadded feeds, see
    smooth.calibration_feeds; used by smoothing and the fixed ranges)."""
    model = tables.load_graph(fp32)  # the lookup tables stay on disk (export/tables.py)
    groups = matmul_groups(model.graph)

    def named(group_names) -> set[str]:
        return {name for group in group_names or [] for name in groups[group]}

    blockwise = recipe.get("blockwise")
    keep = set(blockwise.get("names") or named(blockwise["matmuls"])) if blockwise else set()
    activations = recipe.get("activations")
    if (recipe.get("smooth") or activations) and not calibration:
        raise ValueError("the recipe smooths MatMul inputs or fixes their ranges: calibration feeds are required")
    if recipe.get("smooth"):
        skip = keep | named(recipe["smooth"].get("skip"))
        model = smoothquant.smooth(model, calibration, recipe["smooth"]["alpha"], skip=skip, base_dir=fp32.parent)
    calibrated = onnx.ModelProto.FromString(model.SerializeToString()) if activations else None
    if keep:
        others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in keep]
        config = DefaultWeightOnlyQuantConfig(
            block_size=blockwise["block_size"], is_symmetric=blockwise["symmetric"],
            accuracy_level=blockwise["accuracy_level"], bits=blockwise["bits"],
        )
        logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
        quantizer = MatMulNBitsQuantizer(model, nodes_to_exclude=others, algo_config=config)
        quantizer.process()
        model = quantizer.model.model
    dynamic = recipe["dynamic"]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # the nbits quantizer set INFO; quantize_dynamic then logs every tensor
    # beside fp32, whose external lookup tables it refers to by relative path
    fd, staged = tempfile.mkstemp(prefix=".blockwise-", suffix=".onnx", dir=fp32.parent)
    os.close(fd)
    try:
        shrunk = tables.shrink(model, fp32.parent, with_range=True)
        onnx.save(model, staged)
        del model
        quantize_dynamic(
            staged,
            str(out),
            weight_type=QuantType[dynamic["weight_type"]],
            per_channel=dynamic["per_channel"],
            reduce_range=dynamic["reduce_range"],
            op_types_to_quantize=dynamic["op_types"],
            # fused com.microsoft ops defeat ONNX shape inference; their outputs are float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)
        os.unlink(staged)
    if shrunk or activations:
        quantized = onnx.load(str(out))
        tables.quantize_whole(quantized, shrunk)
        if activations:
            per_row_matmuls = named(activations["per_row"])
            per_row = {n.input[0] for n in calibrated.graph.node if n.name in per_row_matmuls}
            quantized = actquant.make_invariant(quantized, calibrated, calibration, per_row, base_dir=fp32.parent)
        if recipe.get("fuse"):
            fuse.fuse(quantized, **recipe["fuse"])
        onnx.save(quantized, str(out))


def save_weights_apart(graph: Path) -> None:
    """Re-save `graph` with its weights in `<graph>.data` beside it (ONNX external data).

    onnxruntime memory-maps that file instead of copying every weight out of the parsed
    protobuf: cold-start peak RSS e5-small INT8 123 -> 105 MB, multilingual 476 -> 387 MB
    (README "Performance").
    """
    data = graph.with_name(data_file(graph.name))
    model = onnx.load(str(graph))
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    if data.exists():
        data.chmod(0o644)  # onnx creates it 0600: unreadable to a service running as another user


def graph_op_counts(path: Path) -> dict[str, int]:
    """Op types present in the saved graph: proof the fusions/quantization actually landed."""
    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))

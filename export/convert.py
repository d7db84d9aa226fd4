"""The three graph steps: optimum export, onnxruntime BERT fusions, INT8 quantization."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.optimizer import optimize_model
from optimum.exporters.onnx import onnx_export_from_model

from e5_onnx.manifest import data_file

from . import smooth as smoothquant

OPSET = 18

# The INT8 recipe, chosen by measurement; README "INT8 recipe" has the tables and commands.
# - Attention is fused as MultiHeadAttention, leaving the Q/K/V projections as plain MatMuls
#   that quantize like every other MatMul: 1.59x the batch throughput of the first recipe
#   (MatMul-only with a fused fp32 Attention, whose QKV projection stayed fp32).
# - Q/K/V, attention output and FFN in: SmoothQuant (smooth.py, alpha 0.7, calibrated on
#   calibration.py's texts), then dynamic INT8 (QOperator, s8 weights per channel, u8
#   activations with one scale per tensor). onnxruntime's MatMulInteger path runs 2-3x faster
#   than MatMulNBits on these shapes ([3072,384]x[384,1536]: 722 vs 322 GOPS; a 14-token query:
#   50 vs 148 us; 2 threads, scratch microbenchmark), and smoothing wins back what one scale
#   per tensor loses to the LayerNorm outputs' outlier channels.
# - FFN out (fed by the GELU): MatMulNBits 8-bit, blocks of 256 along K, accuracy level 4 (int8
#   compute, activations quantized per block of each row); smoothed-dynamic costs too much there.
#   MiniLM asset, cosine to torch (mean / min) on the quick set
#   (`python -m benchmarks.fidelity --quick --models minilm --recipes ...`,
#   benchmarks/results/fidelity-recipes-quick.json):
#     every MatMul dynamic (matmul-pc)                 0.99381 / 0.98875
#     every MatMul smoothed-dynamic (smooth-dyn-a07)   0.99523 / 0.99014   alpha 0.5: 0.99, 0.9: 0.986
#     FFN out blockwise, rest dynamic (export-ffn-out) 0.99636 / 0.99334   full run: min 0.97622
#     every MatMul blockwise (export-all-blockwise)    0.99882 / 0.99799   the issue-4 default
#     FFN out blockwise, rest smoothed (this)          0.99857 / 0.99736
#   Full runs (README "Fidelity"): cosine to torch within 0.001 of every-MatMul-blockwise on
#   both real models, task rows within noise, batch throughput 1.56x (MiniLM) / 1.64x (mE5).
# - EmbedLayerNormalization: the embedding tables in INT8 (4x smaller files; mean cosine -0.0003).
# - SkipLayerNormalization left unfused: onnxruntime's CPU kernel for it takes 3.0 ms where the
#   Add + LayerNormalization it replaces take 0.67 (32 x 96 x 384 floats, 2 threads).
QUANTIZATION = {
    "attention_fusion": "MultiHeadAttention",
    "skip_layer_norm_fusion": False,
    "smooth": {"alpha": 0.7},
    "dynamic": {
        "format": "QOperator",
        "weight_type": "QInt8",
        "activation_type": "QUInt8",
        "per_channel": True,
        "reduce_range": False,
        "op_types": ["MatMul", "EmbedLayerNormalization"],
    },
    "blockwise": {  # these groups (matmul_groups); any other MatMul is quantized dynamically
        "op": "MatMulNBits", "matmuls": ["ffn_out"],
        "bits": 8, "block_size": 256, "symmetric": True, "accuracy_level": 4,
    },
}
GELU_OPS = ("BiasGelu", "Gelu", "FastGelu")


def export_onnx(model, out_dir: Path) -> Path:
    """Trace the (already loaded, eager-attention) model with optimum; dynamic batch and sequence axes."""
    onnx_export_from_model(
        model,
        output=out_dir,
        task="feature-extraction",
        opset=OPSET,
        do_validation=False,  # our own parity check is stricter and runs on the final files
        no_post_process=True,
    )
    return out_dir / "model.onnx"


def optimize(raw: Path, out: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Offline BERT fusions (attention, skip-layernorm, embed-layernorm, bias-gelu); returns fused op counts."""
    options = FusionOptions("bert")
    options.use_multi_head_attention = QUANTIZATION["attention_fusion"] == "MultiHeadAttention"
    options.enable_skip_layer_norm = QUANTIZATION["skip_layer_norm_fusion"]
    model = optimize_model(
        str(raw), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
        opt_level=0, optimization_options=options, use_gpu=False,
    )
    model.save_model_to_file(str(out))
    return {op: n for op, n in model.get_fused_operator_statistics().items() if n}


def matmul_groups(graph: onnx.GraphProto) -> dict[str, list[str]]:
    """MatMul node names by role: ffn_in (feeds the GELU, directly or through its bias Add),
    ffn_out (fed by the GELU), attention (every other MatMul: Q/K/V and output projections)."""
    gelu_inputs = {i for n in graph.node if n.op_type in GELU_OPS for i in n.input}
    gelu_outputs = {o for n in graph.node if n.op_type in GELU_OPS for o in n.output}
    bias_adds = {n.input[0] for n in graph.node if n.op_type == "Add" and n.output[0] in gelu_inputs}
    groups: dict[str, list[str]] = {"ffn_in": [], "ffn_out": [], "attention": []}
    for n in graph.node:
        if n.op_type != "MatMul":
            continue
        if n.input[0] in gelu_outputs:
            groups["ffn_out"].append(n.name)
        elif n.output[0] in gelu_inputs or n.output[0] in bias_adds:
            groups["ffn_in"].append(n.name)
        else:
            groups["attention"].append(n.name)
    return groups


def quantize(fp32: Path, out: Path, recipe: dict = QUANTIZATION,
             calibration: list[dict] | None = None) -> None:
    """fp32 graph -> INT8 file: blockwise MatMuls first, the rest smoothed (calibration: unpadded
    feeds, see smooth.calibration_feeds) and quantized dynamically."""
    model = onnx.load(str(fp32))
    blockwise = recipe.get("blockwise")
    keep: set[str] = set()
    if blockwise:
        groups = matmul_groups(model.graph)
        keep = set(blockwise.get("names") or {name for group in blockwise["matmuls"] for name in groups[group]})
    if recipe.get("smooth"):
        if not calibration:
            raise ValueError("the recipe smooths MatMul inputs: calibration feeds are required")
        model = smoothquant.smooth(model, calibration, recipe["smooth"]["alpha"], skip=keep)
    if blockwise:
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
    try:
        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp) / "blockwise.onnx"
            onnx.save(model, str(staged))
            quantize_dynamic(
                str(staged),
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

"""INT8 recipes for benchmarks/fidelity.py: what each alternative model_int8.onnx is, and how it is built.

Every recipe starts from the export's optimised fp32 model.onnx; fidelity.recipe_variant builds
each one once into its cache and scores it like the export's own INT8 file.
"""
from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np

from export import calibration, convert, smooth

from .assets import source_dir
from .data import STSB_LANGS, shared_dir, stsb

QUERY, PASSAGE = "query: ", "passage: "

# INT8 recipes, all starting from the export's optimised fp32 model.onnx (fusions as the exporter
# makes them; with MultiHeadAttention fusion the Q/K/V projections are plain MatMuls, so there is no
# "Attention" op to quantize and matmul-attn-pc builds the same file as matmul-pc):
# - dynamic: quantize_dynamic (QInt8 weights, uint8 activations quantized per tensor per batch at run
#   time); pc / pt = per-channel / per-tensor weights; "exclude" keeps FFN output MatMuls (the ones
#   fed by the GELU) in fp32;
# - export: export/convert.quantize with convert.QUANTIZATION, changed only in which MatMul groups
#   (convert.matmul_groups) are blockwise MatMulNBits ("matmuls"; accuracy level 4 computes in
#   int8 with activations quantized per block of each row, much finer than dynamic's one scale per
#   tensor), the block size, or which ops are then quantized dynamically ("dynamic_op_types":
#   without EmbedLayerNormalization the embedding tables stay fp32), and the SmoothQuant alpha for
#   the MatMuls left dynamic ("smooth", export/smooth.py, calibrated on export/calibration.py's
#   texts as the exporter does; recipes without it are not smoothed);
# - static: quantize_static, QDQ, activation ranges calibrated on 200 texts never evaluated.
ALL_MATMULS = ["ffn_in", "ffn_out", "qkv", "attention_out"]
RECIPES: dict[str, dict | None] = {
    "default": None,  # the export's own model_int8.onnx
    "matmul-pc": {"op_types": ["MatMul"], "per_channel": True},
    "matmul-attn-pc": {"op_types": ["MatMul", "Attention"], "per_channel": True},
    "all-pc": {"op_types": ["MatMul", "Attention", "EmbedLayerNormalization"], "per_channel": True},
    "matmul-pt": {"op_types": ["MatMul"], "per_channel": False},
    "matmul-pc-rr": {"op_types": ["MatMul"], "per_channel": True, "reduce_range": True},
    "exclude-last-ffn": {"op_types": ["MatMul"], "per_channel": True, "exclude": "last-2-ffn-out"},
    "exclude-ffn-out": {"op_types": ["MatMul"], "per_channel": True, "exclude": "all-ffn-out"},
    "nbits8-b32": {"method": "export", "matmuls": ALL_MATMULS, "block_size": 32, "dynamic_op_types": ["MatMul"]},
    "nbits8-b128": {"method": "export", "matmuls": ALL_MATMULS, "block_size": 128, "dynamic_op_types": ["MatMul"]},
    "nbits8-b32-emb": {"method": "export", "matmuls": ALL_MATMULS, "block_size": 32},
    "export-ffn-out": {"method": "export", "matmuls": ["ffn_out"], "block_size": 128},  # the default of the first MultiHeadAttention recipe
    "export-ffn-out-attn": {"method": "export", "matmuls": ["ffn_out", "qkv", "attention_out"], "block_size": 128},
    "export-ffn": {"method": "export", "matmuls": ["ffn_in", "ffn_out"], "block_size": 128},
    "export-all-blockwise": {"method": "export", "matmuls": ALL_MATMULS, "block_size": 128},  # the issue-4 default
    "export-ffn-b32": {"method": "export", "matmuls": ["ffn_in", "ffn_out"], "block_size": 32},
    "smooth-dyn-a05": {"method": "export", "matmuls": [], "smooth": 0.5},
    "smooth-dyn-a07": {"method": "export", "matmuls": [], "smooth": 0.7},
    "smooth-dyn-a09": {"method": "export", "matmuls": [], "smooth": 0.9},
    "smooth-a07-ffn-out-b128": {"method": "export", "matmuls": ["ffn_out"], "block_size": 128, "smooth": 0.7},
    "smooth-a07-ffn-out": {"method": "export", "matmuls": ["ffn_out"], "block_size": 256, "smooth": 0.7},  # the default before issue 12
    # issue 12: activation scales that do not depend on the batch (export/actquant.py): "fixed"
    # ranges calibrated on the export's texts, or "per_row" for the listed groups
    "fixed-ffn-out-nbits": {"method": "export", "matmuls": ["ffn_out"], "block_size": 256, "smooth": 0.7,
                            "activations": {"per_row": []}},
    "fixed-all": {"method": "export", "matmuls": [], "smooth": 0.7, "activations": {"per_row": []}},
    "per-row-all": {"method": "export", "matmuls": [], "smooth": 0.7, "smooth_skip": ["ffn_out"],
                    "activations": {"per_row": ALL_MATMULS}},
    "fixed-ffn-out-per-row": {"method": "export", "matmuls": [], "smooth": 0.7, "smooth_skip": ["ffn_out"],
                              "activations": {"per_row": ["ffn_out"]}},
    "fixed-qkv-ffn-in": {"method": "export", "matmuls": [], "smooth": 0.7, "smooth_skip": ["ffn_out"],
                         "activations": {"per_row": ["attention_out", "ffn_out"]}},  # = default
    # batch-invariant too (MatMulNBits' accuracy level 4 scales each row's blocks): the former
    # default's FFN out with the current default's scales everywhere else
    "per-row-attn-nbits-ffn-out": {"method": "export", "matmuls": ["ffn_out"], "block_size": 256, "smooth": 0.7,
                                   "smooth_skip": ["ffn_out"], "activations": {"per_row": ["attention_out"]}},
    "static-qdq": {"method": "static", "op_types": ["MatMul"], "per_channel": True, "calibrate": "MinMax"},
    "static-qdq-pct": {"method": "static", "op_types": ["MatMul"], "per_channel": True, "calibrate": "Percentile"},
}


def calibration_texts(model: str, n: int = 200) -> list[str]:
    """Texts that are never evaluated: SciFact *train* queries and STSb *dev* sentences."""
    base = shared_dir() / "data" / "scifact"
    train = {line.split("\t")[0] for line in (base / "qrels" / "train.tsv").read_text().splitlines()[1:]}
    with open(base / "queries.jsonl", encoding="utf-8") as f:
        queries = [q["text"] for q in map(json.loads, f) if q["_id"] in train]
    langs = ("en",) if model == "minilm" else STSB_LANGS
    half = n // 2
    per = -(-(n - half) // len(langs))  # a different slice of dev rows per language
    dev = [row[0] for i, lang in enumerate(langs) for row in stsb(lang, "dev")[i * per : (i + 1) * per]]
    return [QUERY + q for q in queries[:half]] + [QUERY + s for s in dev[: n - half]]


def export_recipe(recipe: dict) -> dict:
    """convert.QUANTIZATION with the blockwise MatMul groups / block size / dynamic ops, smoothing
    and activation scales of `recipe` (no "activations": quantize_dynamic's, one scale per call)."""
    q = json.loads(json.dumps(convert.QUANTIZATION))
    blockwise = {**convert.BLOCKWISE, **{k: recipe[k] for k in ("matmuls", "block_size") if k in recipe}}
    q["blockwise"] = blockwise if blockwise["matmuls"] else None
    q["smooth"] = {"alpha": recipe["smooth"], "skip": recipe.get("smooth_skip", [])} if recipe.get("smooth") else None
    q["activations"] = recipe.get("activations")
    if "dynamic_op_types" in recipe:
        q["dynamic"]["op_types"] = recipe["dynamic_op_types"]
    return q


def export_texts() -> list[str]:
    return calibration.calibration_texts(QUERY, PASSAGE)


def export_calibration(fp32: Path) -> list[dict]:
    """The exporter's own smoothing calibration (export/calibration.py), as export/build.py feeds it."""
    import onnx
    from tokenizers import Tokenizer

    inputs = [i.name for i in onnx.load(str(fp32), load_external_data=False).graph.input]
    return smooth.calibration_feeds(Tokenizer.from_file(str(fp32.parent / "tokenizer.json")), export_texts(), inputs)


class TextReader:
    """CalibrationDataReader: one text per feed, all padded to one width (the histogram
    calibrators stack feeds, so shapes must agree); padding is masked as at run time."""

    def __init__(self, model_dir: Path, texts: list[str], input_names: list[str]) -> None:
        from e5_onnx.tokenize import TextTokenizer

        manifest = json.loads((model_dir / "manifest.json").read_text())
        tok = TextTokenizer.from_file(model_dir / "tokenizer.json", manifest["max_length"], manifest["pad_token_id"])
        encodings = tok.encode(texts)
        width = max(len(e.ids) for e in encodings)
        self.feeds = []
        for enc in encodings:
            ids = np.full((1, width), manifest["pad_token_id"], dtype=np.int64)
            mask = np.zeros((1, width), dtype=np.int64)
            ids[0, : len(enc.ids)], mask[0, : len(enc.ids)] = enc.ids, 1
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            self.feeds.append({k: v for k, v in feed.items() if k in input_names})
        self.it = iter(self.feeds)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):
        self.it = iter(self.feeds)


def quantize_recipe(model: str, fp32: Path, out: Path, recipe: dict) -> dict:
    """Write the INT8 file for `recipe`; returns what was done (graph used, nodes excluded)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    logging.getLogger().setLevel(logging.ERROR)  # the quantizers' advice to pre-process, once per tensor
    done: dict = {"graph": "fused (export model.onnx)"}
    exclude = []
    if recipe.get("exclude"):
        names = convert.matmul_groups(onnx.load(str(fp32), load_external_data=False).graph)["ffn_out"]
        exclude = names[-2:] if recipe["exclude"] == "last-2-ffn-out" else names
        done["nodes_excluded"] = exclude
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}  # fused com.microsoft ops defeat shape inference
    method = recipe.get("method", "dynamic")
    if method == "export":
        effective = export_recipe(recipe)
        convert.quantize(fp32, out, effective, calibration=export_calibration(fp32))
        done["quantization"] = effective
        return done
    if method == "dynamic":
        quantize_dynamic(str(fp32), str(out), op_types_to_quantize=recipe["op_types"], per_channel=recipe["per_channel"],
                         reduce_range=recipe.get("reduce_range", False), weight_type=QuantType.QInt8,
                         nodes_to_exclude=exclude, extra_options=extra)
        return done

    def static(graph: Path) -> None:
        # quantize_static only quantizes activations whose type it knows; onnx shape inference stops
        # at the fused com.microsoft ops, onnxruntime's symbolic shape inference does not.
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        typed = out.parent / "typed.onnx"
        onnx.save(SymbolicShapeInference.infer_shapes(onnx.load(str(graph)), auto_merge=True), str(typed))
        inputs = [i.name for i in onnx.load(str(typed), load_external_data=False).graph.input]
        reader = TextReader(fp32.parent, calibration_texts(model), inputs)
        quantize_static(str(typed), str(out), reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=recipe["op_types"], per_channel=recipe["per_channel"],
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                        calibrate_method=CalibrationMethod[recipe["calibrate"]], extra_options=extra)
        typed.unlink()
        ops = [n.op_type for n in onnx.load(str(out), load_external_data=False).graph.node]
        if "QuantizeLinear" not in ops:
            raise RuntimeError("no activation was quantized (weights only)")

    try:
        static(fp32)
    except Exception as error:  # noqa: BLE001 - record why, then retry on an un-fused graph
        done["fused_error"] = f"{type(error).__name__}: {str(error)[:300]}"
        print(f"    quantize_static on the fused graph failed ({done['fused_error'][:120]}); retrying un-fused", file=sys.stderr, flush=True)
        from transformers import AutoModel

        raw = out.parent / "raw"
        convert.export_onnx(AutoModel.from_pretrained(source_dir(model), attn_implementation="eager").eval(), raw)
        static(raw / "model.onnx")
        shutil.rmtree(raw)
        done["graph"] = "un-fused (optimum export of source_dir)"
    return done

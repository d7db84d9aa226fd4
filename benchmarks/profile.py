"""Where e5-onnx INT8's time and bytes go: the measurements behind the bench's missed goals.

onnxruntime's own profiler, time by op type, for the Embedder on the bench's mix at batch 32
and on single queries; and the model file's bytes by tensor. bench.py runs this for every model
and names, beside each missed goal, what limits it. Run alone:

    python -m benchmarks.profile --models e5-small-arch me5
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from .mix import text_mix

# Op types grouped by what they compute, for the one-line summaries.
MATMUL_OPS = {"MatMulNBits", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger", "MatMul",
              "DynamicQuantizeLinear", "FusedMatMul", "Gemm"}
# QAttention (export/fuse.py) runs the Q/K/V GEMM inside the attention kernel: its time counts as
# attention, and its Q/K/V operations move from the matmul rate to the attention rate.
ATTENTION_OPS = {"MultiHeadAttention", "Attention", "QAttention"}


def op_profile(export: str, batches: list[list[str]], threads: int, config: dict, batch_size: int = 32) -> dict:
    """Embed each batch once untimed, then once under onnxruntime's profiler -> time by op type,
    and the rate the matmuls and the attention reach on the shapes the Embedder really ran.

    The profiled session is e5-onnx's own (same options, same file), swapped into an Embedder.
    `config` is the model's config.json (hidden_size, intermediate_size, num_hidden_layers).
    """
    import onnxruntime as ort

    from e5_onnx import Embedder
    from e5_onnx.session import DISABLED_OPTIMIZERS, session_options

    emb = Embedder(export, threads=threads, batch_size=batch_size)
    emb.session.streams = 1  # one call at a time on every thread: kernel times add up to the call's
    with tempfile.TemporaryDirectory() as tmp:
        options = session_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        emb.session.session = ort.InferenceSession(str(Path(export) / emb.graph), options,
                                                   providers=["CPUExecutionProvider"],
                                                   disabled_optimizers=DISABLED_OPTIMIZERS)
        for texts in batches:  # warm-up: first calls of a new session allocate
            emb.encode(texts)
        for texts in batches:
            emb.encode(texts)
        events = json.loads(Path(emb.session.session.end_profiling()).read_text())
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    timed = runs[len(runs) // 2:]  # the second pass; the warm-up made the same calls
    start = timed[0]["ts"]
    by_op: Counter = Counter()
    kernels = 0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            by_op[e["args"]["op_name"]] += e["dur"]
            kernels += 1
    total = sum(by_op.values())
    h, f, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    shapes = [b.input_ids.shape for texts in batches
              for b in emb.tokenizer.batches(texts, batch_size, emb.max_batch_tokens)]
    tokens = sum(n * length for n, length in shapes)
    qkv = "QAttention" in by_op
    matmul_ops = tokens * 2 * ((1 if qkv else 4) * h * h + 2 * h * f) * layers
    attention_flops = sum(n * length * length for n, length in shapes) * 4 * h * layers  # QK^T and PV
    attention_flops += tokens * 2 * 3 * h * h * layers if qkv else 0
    us = {group: sum(t for op, t in by_op.items() if op in ops) for group, ops in
          (("matmul", MATMUL_OPS), ("attention", ATTENTION_OPS))}
    return {"padded_tokens": sum(n * length for n, length in shapes),
            "matmul_gops": matmul_ops / us["matmul"] / 1e3 if us["matmul"] else None,
            "attention_gflops": attention_flops / us["attention"] / 1e3 if us["attention"] else None,
            "matmul_gop_per_call": matmul_ops / len(timed) / 1e9,
            "session_calls": len(timed), "kernels_per_call": kernels / len(timed),
            "run_ms": sum(e["dur"] for e in timed) / 1e3, "kernel_ms": total / 1e3,
            "by_op_pct": {op: 100 * us / total for op, us in by_op.most_common()},
            "matmul_pct": 100 * us["matmul"] / total, "attention_pct": 100 * us["attention"] / total}


def tensor_bytes(graph: Path, top: int = 3) -> dict:
    """Bytes of the graph's initializers (inline or in its external weights file), largest first."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    sizes = []
    for t in model.graph.initializer:
        ext = {e.key: e.value for e in t.external_data}
        n = int(ext["length"]) if "length" in ext else len(t.raw_data)
        sizes.append((n, t.name, list(t.dims), onnx.TensorProto.DataType.Name(t.data_type).lower()))
    sizes.sort(reverse=True)
    total = sum(n for n, *_ in sizes)
    return {"total_mb": total / 1e6, "largest": [{"name": name, "shape": dims, "dtype": dtype, "mb": n / 1e6}
                                                 for n, name, dims, dtype in sizes[:top]]}


def profile_model(export: str, texts: list[str], threads: int, config: dict) -> dict:
    """The bench's mix in batches of 32 (as its b=32 rounds), and its first 30 queries one per call."""
    queries = [t for t in texts if t.startswith("query: ")][:30]
    manifest = json.loads((Path(export) / "manifest.json").read_text())
    return {"batch32_mix": op_profile(export, [texts[i:i + 32] for i in range(0, len(texts), 32)], threads, config),
            "single_query": op_profile(export, [[q] for q in queries], threads, config),
            "int8_file": tensor_bytes(Path(export) / manifest["variants"]["int8"])}


def limits(p: dict, roofline_gops: float | None = None) -> dict[str, str]:
    """One line per goal family, from a profile_model() result (and the run's roofline, if any)."""
    b, q, f = p["batch32_mix"], p["single_query"], p["int8_file"]
    top = ", ".join(f"{op} {pct:.0f}%" for op, pct in list(b["by_op_pct"].items())[:4])
    big = f["largest"][0]

    def rate(gops: float) -> str:
        return f"{gops:.0f} GOPS" + (f" = {100 * gops / roofline_gops:.0f}% of the roofline" if roofline_gops else "")
    return {
        "throughput": f"kernel time at b=32: {top}; the matmul ops ({b['matmul_pct']:.0f}% of the time) run at "
                      f"{rate(b['matmul_gops'])}, the attention ({b['attention_pct']:.0f}%, fp32; with its INT8 Q/K/V GEMM if "
                      f"QAttention) at "
                      f"{b['attention_gflops']:.0f} GFLOPS",
        "latency": f"{q['kernels_per_call']:.0f} kernels per query, {1e3 * q['kernel_ms'] / q['session_calls'] / q['kernels_per_call']:.0f} us "
                   f"each on average under the profiler; the matmul ops ({q['matmul_pct']:.0f}% of the time) run at "
                   f"{rate(q['matmul_gops'])}" + (
                       f"; at the roofline a query's matmul ops alone would take {1e3 * q['matmul_gop_per_call'] / roofline_gops:.2f} ms"
                       if roofline_gops and "matmul_gop_per_call" in q else ""),
        "file": f"largest tensor {big['name']} {'x'.join(map(str, big['shape']))} {big['dtype']} {big['mb']:.1f} MB "
                f"of {f['total_mb']:.1f} MB",
    }


def main(argv: list[str] | None = None) -> int:
    from .assets import export_dir, source_dir

    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["e5-small-arch", "me5"], choices=["e5-small-arch", "minilm", "me5"])
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    for model in args.models:
        config = json.loads((source_dir(model) / "config.json").read_text())
        p = profile_model(str(export_dir(model)), text_mix(args.texts), args.threads, config)
        print(json.dumps({"model": model, **p, "limits": limits(p)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

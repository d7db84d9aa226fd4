"""One query at a time: the latency levers of issue 20 side by side, in one process, interleaved.

For each model, every variant below embeds single texts (short STSb queries; mid-length SciFact
passages cut to ~100 tokens) one call each, and the bench's 64-text mix at batch 32, in rounds
that rotate the variants' order (each variant's calls as one block, after a pause and untimed
calls: a session's pool keeps spinning after a call and would slow the next variant's); p50 / p99 per kind, texts/s, the load average of every round.
The onnxruntime variants also report kernels per short query (onnxruntime's profiler) and how
far their vectors sit from the default's (bit-identical rows; min cosine), alone and in a batch.

- int8: the export's default (2 threads, spinning, the export's fused graph: export/fuse.py)
- int8-unfused: the same weights with fuse.py undone (the graph exports wrote before issue 20)
- int8-mmitf: only the Q/K/V + MultiHeadAttention -> QAttention fusion undone
- int8-attn23: QAttention -> one Q/K/V MatMulIntegerToFloat + Split + ONNX's own Attention op
  (opset 23, a boolean [batch, 1, length, length] mask): another fp32 attention kernel
- int8-1thread, int8-nospin: the default graph on one thread; two threads without spinning
- ov-bf16: Embedder(backend="openvino") (two one-thread streams: a single query runs on one)
- ov-bf16-2t: OpenVINO bf16, one stream of two threads (latency-style)
And the floor: onnxruntime's cost per kernel (a chain of tiny Adds) and the INT8 GEMMs of one
query alone (the model's MatMul shapes at the query's token count), both on this machine.

    python -m benchmarks.latency [--models e5-small-arch,minilm,me5] [--rounds 8] [--calls 20]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from export import fuse, u8u8

from .assets import export_dir
from .data import ROOT, scifact_passages, stsb
from .mix import text_mix
from .harness import machine, write_report

ORT_VARIANTS = {  # name -> (graph transform, threads, spinning)
    "int8": (None, 2, True), "int8-unfused": ("unfuse", 2, True), "int8-mmitf": ("unfuse_attention", 2, True),
    "int8-attn23": ("attention_op", 2, True),
    "int8-1thread": (None, 1, True), "int8-nospin": (None, 2, False),
    # the U8S8 graph even where the runtime runs its U8U8 twin: what exactness costs on a CPU without VNNI
    "int8-u8s8": ("u8s8", 2, True)}
OV_VARIANTS = ("ov-bf16", "ov-bf16-2t")
SETTLE_S, WARM_CALLS = 0.05, 3  # before each variant's block of timed calls


def variant_graph(export: Path, transform: str | None, tmp: Path, graph_name: str) -> Path:
    """The INT8 graph this CPU runs (`graph_name`), or the INT8 graph transformed and then, where
    the runtime would run the U8U8 twin, made into its twin (export/u8u8.py)."""
    if transform is None:
        return export / graph_name
    if transform == "u8s8":
        return export / "model_int8.onnx"
    import onnx

    model = onnx.load(str(export / "model_int8.onnx"))
    {"unfuse": fuse.unfuse, "unfuse_attention": fuse.unfuse_attention, "attention_op": onnx_attention}[transform](model)
    out = tmp / f"{transform}.onnx"
    onnx.save(model, str(out), save_as_external_data=True, location=f"{transform}.onnx.data", size_threshold=1024)
    if graph_name != "model_int8.onnx":
        u8u8.write(out, tmp / f"{transform}_u8u8.onnx")
        return tmp / f"{transform}_u8u8.onnx"
    return out


def onnx_attention(model) -> None:
    """Each QAttention -> MatMulIntegerToFloat (Q/K/V weights, scales and bias as they are) + Split
    + ONNX's Attention (opset 23) under a boolean mask built once from attention_mask, in place."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            op.version = max(op.version, 23)
    graph.initializer.extend([numpy_helper.from_array(np.array([1], np.int64), "attn23_one"),
                              numpy_helper.from_array(np.array([1, 2], np.int64), "attn23_axes")])
    mask = [  # [batch, length] -> [batch, 1, length, length]: ONNX Attention wants the query axis spelled out
        helper.make_node("Shape", ["attention_mask"], ["attn23_b"], start=0, end=1),
        helper.make_node("Shape", ["attention_mask"], ["attn23_s"], start=1, end=2),
        helper.make_node("Concat", ["attn23_b", "attn23_one", "attn23_s", "attn23_s"], ["attn23_shape"], axis=0),
        helper.make_node("Cast", ["attention_mask"], ["attn23_bool"], to=TensorProto.BOOL),
        helper.make_node("Unsqueeze", ["attn23_bool", "attn23_axes"], ["attn23_b11s"]),
        helper.make_node("Expand", ["attn23_b11s", "attn23_shape"], ["attn23_mask"])]
    nodes = []
    for n in graph.node:
        if n.op_type != "QAttention":
            nodes.append(n)
            continue
        x, w, bias, a_scale, w_scale, _, a_zero, w_zero = n.input[:8]
        heads = next(helper.get_attribute_value(a) for a in n.attribute if a.name == "num_heads")
        out = n.output[0]
        nodes += mask + [
            helper.make_node("MatMulIntegerToFloat", [x, w, a_scale, w_scale, a_zero, w_zero, bias], [f"{out}_qkv"],
                             domain=fuse.MS_DOMAIN),
            helper.make_node("Split", [f"{out}_qkv"], [f"{out}_{r}" for r in "qkv"], axis=-1, num_outputs=3),
            helper.make_node("Attention", [f"{out}_{r}" for r in "qkv"] + ["attn23_mask"], [out],
                             q_num_heads=heads, kv_num_heads=heads)]
        mask = []
    del graph.node[:]
    graph.node.extend(nodes)


def load_variants(export: Path, tmp: Path, names: list[str]) -> tuple[dict, dict]:
    """name -> Embedder, and name -> graph file (onnxruntime variants)."""
    from e5_onnx import Embedder
    from e5_onnx.session import EncoderSession

    encoders, graphs = {}, {}
    for name in names:
        if name in ORT_VARIANTS:
            transform, threads, spinning = ORT_VARIANTS[name]
            emb = Embedder(export, threads=threads, spinning=spinning)
            graphs[name] = variant_graph(export, transform, tmp, emb.graph)
            if transform:
                emb.session = EncoderSession(graphs[name], threads=threads, spinning=spinning,
                                             position_offset=emb.manifest.get("position_offset", 0))
        elif name == "ov-bf16":
            emb = Embedder(export, backend="openvino", threads=2)
        elif name == "ov-bf16-2t":
            from e5_onnx.openvino_session import OpenVINOSession

            emb = Embedder(export, backend="openvino", threads=1)
            emb.session = OpenVINOSession(export / emb.manifest["variants"]["fp32"], "bf16", threads=2, streams=1,
                                          position_offset=emb.manifest.get("position_offset", 0))
        else:
            raise ValueError(f"unknown variant {name!r}")
        emb.batch_size = 32
        encoders[name] = emb
    return encoders, graphs


def kernels_per_call(graph: Path, emb, text: str) -> int:
    """Kernels onnxruntime runs for one call of `text` (its profiler, the variant's own session)."""
    import json

    import onnxruntime as ort

    from e5_onnx.session import DISABLED_OPTIMIZERS, session_options

    with tempfile.TemporaryDirectory() as tmp:
        options = session_options(1)
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=DISABLED_OPTIMIZERS)
        (batch,) = list(emb.tokenizer.batches([text], 1, 512))
        feed = {k: v for k, v in {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                                   "token_type_ids": 0 * batch.input_ids}.items()
                if k in {i.name for i in session.get_inputs()}}
        session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    return sum(1 for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"))


def timed_rounds(encoders: dict, kinds: dict[str, list[str]], mix: list[str], rounds: int, calls: int) -> dict:
    out = {n: {**{k: [] for k in kinds}, "mix_texts_per_s": []} for n in encoders}
    loads = []
    for r in range(rounds):
        order = list(encoders)[r % len(encoders):] + list(encoders)[:r % len(encoders)]
        loads.append(os.getloadavg()[0])
        for name in order:  # a block of calls per variant: another session's spinning threads
            time.sleep(SETTLE_S)  # would slow this one's calls (onnxruntime spins after each call)
            for kind, texts in kinds.items():
                for i in range(-WARM_CALLS, calls):
                    text = texts[(r * calls + i) % len(texts)]
                    t = time.perf_counter()
                    encoders[name].encode([text])
                    if i >= 0:
                        out[name][kind].append(time.perf_counter() - t)
        for name in order:
            t = time.perf_counter()
            encoders[name].encode(mix)
            out[name]["mix_texts_per_s"].append(len(mix) / (time.perf_counter() - t))
    return {"times": out, "loadavg_1min_per_round": loads}


def summarize(times: dict, kinds: list[str]) -> dict:
    import numpy as np

    res = {}
    for name, t in times.items():
        row = {}
        for kind in kinds:
            ms = 1e3 * np.array(t[kind])
            row[kind] = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "calls": len(ms)}
        row["mix_texts_per_s"] = float(np.median(t["mix_texts_per_s"]))
        res[name] = row
    return res


def agreement(encoders: dict, texts: list[str], mix: list[str]) -> dict:
    """Each variant against the default, alone and in the mix's batches: bit-identical rows, min cosine."""
    import numpy as np

    base = np.concatenate([encoders["int8"].encode([t]) for t in texts + mix])
    out = {}
    for name, emb in encoders.items():
        alone = np.concatenate([emb.encode([t]) for t in texts + mix])
        batched = emb.encode(mix)
        own = (alone[len(texts):] * batched).sum(1)
        out[name] = {"identical_rows_vs_int8": int((alone == base).all(1).sum()), "rows": len(base),
                     "min_cos_vs_int8": float((alone.astype(np.float64) * base).sum(1).min()),
                     "alone_vs_batch_min_cos": float(own.min()),
                     "alone_vs_batch_identical": int((alone[len(texts):] == batched).all(1).sum())}
    return out


def floor(emb, graph: Path, tokens: int, threads: int = 2, reps: int = 200) -> dict:
    """What one call cannot go below with these kernels: onnxruntime's cost per (tiny) kernel, and the
    INT8 GEMMs of one `tokens`-token query alone, each timed as a session of its own."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    def session(model):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def p50(s, feed):
        for _ in range(10):
            s.run(None, feed)
        t = []
        for _ in range(reps):
            t0 = time.perf_counter()
            s.run(None, feed)
            t.append(time.perf_counter() - t0)
        return float(np.median(t))

    h, n_adds = emb.dim, 300
    adds = [helper.make_node("Add", [f"x{i}", "c"], [f"x{i + 1}"]) for i in range(n_adds)]
    chain = helper.make_model(helper.make_graph(
        adds, "adds", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1, tokens, h])],
        [helper.make_tensor_value_info(f"x{n_adds}", TensorProto.FLOAT, [1, tokens, h])],
        [numpy_helper.from_array(np.full(h, 1e-3, np.float32), "c")]), opset_imports=[helper.make_opsetid("", 18)])
    per_kernel = p50(session(chain), {"x0": np.ones((1, tokens, h), np.float32)}) / n_adds
    # the model's quantized weights, each as a MatMulIntegerToFloat of its own on a uint8 input, in
    # the kind the runtime runs here: U8U8 where the graph is the U8U8 twin (export/u8u8.py)
    twin = graph.name.endswith("_u8u8.onnx")  # its weights are folded at load: read their shapes off the INT8 graph
    model = onnx.load(str(graph.parent / "model_int8.onnx") if twin else str(graph))
    values = {t.name: t for t in model.graph.initializer}
    shapes = [tuple(values[n.input[1]].dims) for n in model.graph.node
              if n.op_type in ("MatMulIntegerToFloat", "QAttention") and n.input[1] in values]
    nodes, inits, inputs = [], [numpy_helper.from_array(np.array(0.01, np.float32), "s"),
                                numpy_helper.from_array(np.array(128, np.uint8), "z")], {}
    rng = np.random.default_rng(0)
    for i, (k, n) in enumerate(shapes):
        w = rng.integers(-127, 128, (k, n), dtype=np.int16)
        inits += [numpy_helper.from_array((w + 128).astype(np.uint8) if twin else w.astype(np.int8), f"w{i}"),
                  numpy_helper.from_array(np.full(n, 0.01, np.float32), f"ws{i}"),
                  numpy_helper.from_array(np.full(n, 128, np.uint8) if twin else np.zeros(n, np.int8), f"wz{i}")]
        inputs.setdefault(k, helper.make_tensor_value_info(f"a{k}", TensorProto.UINT8, [tokens, k]))
        nodes.append(helper.make_node("MatMulIntegerToFloat", [f"a{k}", f"w{i}", "s", f"ws{i}", "z", f"wz{i}"],
                                      [f"y{i}"], domain="com.microsoft"))
    gemms = helper.make_model(helper.make_graph(
        nodes, "gemms", list(inputs.values()),
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(len(nodes))], inits),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    feed = {f"a{k}": rng.integers(0, 256, (tokens, k), dtype=np.uint8) for k in inputs}
    gemm_s = p50(session(gemms), feed)
    return {"tokens": tokens, "threads": threads, "us_per_tiny_kernel": 1e6 * per_kernel, "gemms": len(shapes),
            "gemm_shapes": sorted(set(shapes)), "gemms_ms": 1e3 * gemm_s,
            "weight_mb": sum(k * n for k, n in shapes) / 1e6}


def run_model(model: str, names: list[str], rounds: int, calls: int) -> dict:
    export = export_dir(model)
    short = ["query: " + a for a, _, _ in stsb("en", "test")[:200]]
    mid = ["passage: " + " ".join(p.split()[:70]) for p in scifact_passages()[:50]]
    mix = text_mix(64)
    with tempfile.TemporaryDirectory() as tmp:
        encoders, graphs = load_variants(export, Path(tmp), names)
        for emb in encoders.values():  # warm-up: first calls allocate, OpenVINO compiles per shape
            for t in short[:10] + mid[:10]:
                emb.encode([t])
            emb.encode(mix)
        lengths = {k: [len(encoders["int8"].tokenizer.encode([t])[0].ids) for t in v[:calls * rounds]]
                   for k, v in (("short", short), ("mid", mid))}
        runs = timed_rounds(encoders, {"short": short, "mid": mid}, mix, rounds, calls)
        res = {"export": str(export), "tokens_median": {k: sorted(v)[len(v) // 2] for k, v in lengths.items()},
               "variants": summarize(runs["times"], ["short", "mid"]),
               "loadavg_1min_per_round": runs["loadavg_1min_per_round"],
               "agreement": agreement(encoders, short[:20] + mid[:10], mix)}
        for name, graph in graphs.items():
            res["variants"][name]["kernels_per_short_query"] = kernels_per_call(graph, encoders[name], short[0])
        res["floor"] = floor(encoders["int8"], graphs["int8"], res["tokens_median"]["short"])
    return res


def table(res: dict) -> str:
    lines = [f"Single-query latency levers, {res['rounds']} rounds x {res['calls']} calls per kind, "
             f"{res['machine']['cpu']}, {res['date']}", "",
             "| model | variant | short p50 / p99 ms | mid p50 / p99 ms | mix b=32 texts/s | kernels | "
             "identical rows vs int8 | alone vs batch min cos |", "|---|---|---|---|---|---|---|---|"]
    for model, r in res["models"].items():
        for name, v in r["variants"].items():
            a = r["agreement"][name]
            lines.append(f"| {model} | {name} | {v['short']['p50_ms']:.2f} / {v['short']['p99_ms']:.2f} | "
                         f"{v['mid']['p50_ms']:.2f} / {v['mid']['p99_ms']:.2f} | {v['mix_texts_per_s']:.1f} | "
                         f"{v.get('kernels_per_short_query', '-')} | {a['identical_rows_vs_int8']}/{a['rows']} "
                         f"(min cos {a['min_cos_vs_int8']:.6f}) | {a['alone_vs_batch_min_cos']:.7f} |")
    lines.append("")
    for model, r in res["models"].items():
        f = r["floor"]
        lines.append(f"- {model}: tokens median short {r['tokens_median']['short']}, mid {r['tokens_median']['mid']}; "
                     f"load per round {', '.join(f'{x:.1f}' for x in r['loadavg_1min_per_round'])}; floor at "
                     f"{f['tokens']} tokens, {f['threads']} threads: {f['us_per_tiny_kernel']:.2f} us per tiny kernel, "
                     f"the {f['gemms']} INT8 GEMMs alone {f['gemms_ms']:.2f} ms ({f['weight_mb']:.1f} MB of weights)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="e5-small-arch,minilm,me5")
    ap.add_argument("--variants", default=",".join([*ORT_VARIANTS, *OV_VARIANTS]),
                    help="comma-separated; 'int8' is always measured (the reference)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--calls", type=int, default=20, help="single calls per kind, per round, per variant")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latency.json"))
    args = ap.parse_args(argv)
    names = ["int8"] + [n for n in args.variants.split(",") if n and n != "int8"]
    from datetime import datetime, timezone

    res = {"command": "python -m benchmarks.latency " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(("openvino",)),
           "rounds": args.rounds, "calls": args.calls, "models": {}}
    for model in [m for m in args.models.split(",") if m]:
        print(f"{time.strftime('%H:%M:%S')} [{model}]", file=sys.stderr, flush=True)
        res["models"][model] = run_model(model, names, args.rounds, args.calls)
    res["machine"]["loadavg_end"] = os.getloadavg()
    write_report(args.out, res, table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

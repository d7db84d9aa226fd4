"""e5-onnx's onnxruntime session settings against each alternative, one change at a time.

Each configuration is e5-onnx's own `session_options()` with one setting changed: worker
spinning, graph optimisation level, the SkipLayerNormalization fusion the runtime disables, the
CPU memory arena, memory patterns, one thread (what a one-vCPU Lambda gets). Every configuration
runs in a fresh process of its own (spinning worker threads of one session slow another in the
same process), in interleaved rounds with a rotating order, and is timed on the same work:
loading the Embedder, the bench's mix of queries and passages, and single queries; with the CPU
time it burns (spinning costs CPU, not wall time) and its peak RSS. Ratios are taken within a
round (each configuration against e5-onnx's settings measured in the same round), and a second
copy of e5-onnx's settings runs as a control: its ratios are the noise floor of the run.

    python -m benchmarks.session_settings                   # e5-small-arch and me5, INT8, 3 rounds
    python -m benchmarks.session_settings --models e5-small-arch --rounds 5
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import numpy as np

from .measure import rotate
from .mix import text_mix
from .harness import machine, machine_line, proc_status_mb, write_report
from .report import ROOT_DIR

# name -> what it changes from e5-onnx's settings (for the report)
CONFIGS = {
    "e5-onnx": "the runtime's settings (session.session_options)",
    "e5-onnx-again": "the same settings again: a control, its spread is the run's noise",
    "no-spinning": "session.intra_op.allow_spinning = 0",
    "opt-extended": "graph_optimization_level = ORT_ENABLE_EXTENDED",
    "opt-basic": "graph_optimization_level = ORT_ENABLE_BASIC",
    "opt-disabled": "graph_optimization_level = ORT_DISABLE_ALL",
    "skiplayernorm-fused": "SkipLayerNormFusion left enabled",
    "no-arena": "enable_cpu_mem_arena = False",
    "mem-pattern": "enable_mem_pattern = True",
    "1-thread": "intra_op_num_threads = 1",
}
MIX_TEXTS = 64
QUERIES = 200  # single-query calls timed per process, after 10 untimed


def _change(config: str, options) -> None:
    """Apply one configuration's change to e5-onnx's SessionOptions."""
    import onnxruntime as ort

    level = ort.GraphOptimizationLevel
    if config == "no-spinning":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif config.startswith("opt-"):
        options.graph_optimization_level = {"opt-extended": level.ORT_ENABLE_EXTENDED, "opt-basic": level.ORT_ENABLE_BASIC,
                                            "opt-disabled": level.ORT_DISABLE_ALL}[config]
    elif config == "no-arena":
        options.enable_cpu_mem_arena = False
    elif config == "mem-pattern":
        options.enable_mem_pattern = True
    elif config == "1-thread":
        options.intra_op_num_threads = 1
    elif config not in ("e5-onnx", "e5-onnx-again", "skiplayernorm-fused"):
        raise ValueError(f"unknown configuration {config!r}")


def child(spec: dict) -> dict:
    """In a fresh process: load with one configuration, embed the mix and single queries."""
    import e5_onnx.session as es
    from e5_onnx import Embedder

    base = es.session_options

    def options(threads=None):
        o = base(threads)
        _change(spec["config"], o)
        return o
    es.session_options = options  # EncoderSession looks both names up when it builds its session
    if spec["config"] == "skiplayernorm-fused":
        es.DISABLED_OPTIMIZERS = []

    t = time.perf_counter()
    emb = Embedder(spec["export"], threads=spec["threads"])
    load_s = time.perf_counter() - t
    texts = text_mix(MIX_TEXTS)
    emb.encode(texts[:8])
    mix = []
    for _ in range(2):
        c, t = time.process_time(), time.perf_counter()
        vectors = emb.encode(texts)
        mix.append((time.perf_counter() - t, time.process_time() - c))
    queries = [q for q in texts if q.startswith("query: ")]
    for q in queries[:10]:
        emb.encode([q])
    lat, cpu = [], []
    for i in range(QUERIES):
        c, t = time.process_time(), time.perf_counter()
        emb.encode([queries[i % len(queries)]])
        lat.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    wall, cpu_mix = min(mix)
    return {"load_s": load_s, "mix_texts_per_s": len(texts) / wall, "mix_cpu_per_wall": cpu_mix / wall,
            "query_p50_ms": 1e3 * float(np.median(lat)), "query_cpu_ms": 1e3 * float(np.median(cpu)),
            "peak_rss_mb": proc_status_mb("VmHWM"), "first_row": vectors[0].tolist()}


def run(model: str, rounds: int, threads: int, configs: list[str], log) -> dict:
    from .assets import export_dir

    spec = {"export": str(export_dir(model)), "threads": threads}
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    for r in range(rounds):
        for c in rotate(configs, r):
            p = subprocess.run([sys.executable, "-m", "benchmarks.session_settings", "--child",
                                json.dumps(spec | {"config": c})], cwd=ROOT_DIR, capture_output=True, text=True,
                               timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"{model} {c} failed (rc {p.returncode}): {p.stderr.strip()[-800:]}")
            runs[c].append(json.loads(p.stdout.strip().splitlines()[-1]))
        log(f"  [{model}] round {r + 1}/{rounds} done")
    ref = np.asarray(runs["e5-onnx"][0]["first_row"])
    out = {}
    for c, rs in runs.items():
        med = {k: float(np.median([x[k] for x in rs])) for k in rs[0] if k != "first_row"}
        med["max_cosine_deviation"] = max(float(1 - ref @ np.asarray(x["first_row"])) for x in rs)
        out[c] = med | {"runs": [{k: v for k, v in x.items() if k != "first_row"} for x in rs]}
    base = runs["e5-onnx"]
    for c, d in out.items():  # > 1 means better than e5-onnx's settings in the same round, for every ratio
        for key, metric, higher in (("x_mix", "mix_texts_per_s", True), ("x_query", "query_p50_ms", False),
                                    ("x_load", "load_s", False)):
            ratios = [(x[metric] / b[metric]) ** (1 if higher else -1) for x, b in zip(runs[c], base)]
            d[key] = float(np.median(ratios))
            d[key + "_range"] = [min(ratios), max(ratios)]
    return out


def markdown(res: dict) -> str:
    lines = [f"Machine: {machine_line(res['machine'])}; {res['threads']} threads; {res['date']}; load average "
             f"{res['machine']['loadavg_start'][0]:.1f} at start, {res['machine']['loadavg_end'][0]:.1f} at end. "
             f"Command: `{res['command']}`", "",
             f"Medians of {res['rounds']} interleaved rounds, each configuration a fresh process. x = ratio to "
             "e5-onnx's settings measured in the same round, > 1 is better: median (lowest-highest round). "
             "e5-onnx-again is the control: its spread is the noise. CPU/wall: CPU seconds the process burns "
             f"per second of the mix ({res['threads']} = every thread busy).", ""]
    for model, r in res["runs"].items():
        lines += [f"### {model} INT8", "",
                  "| configuration | change | load s | mix texts/s | query p50 ms | query CPU ms | mix CPU/wall | "
                  "peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
        def x(d, key):
            lo, hi = d[key + "_range"]
            return f"x{d[key]:.2f} ({lo:.2f}-{hi:.2f})"
        for c, d in r.items():
            lines.append(f"| {c} | {CONFIGS[c]} | {d['load_s']:.3f} {x(d, 'x_load')} | "
                         f"{d['mix_texts_per_s']:.1f} {x(d, 'x_mix')} | {d['query_p50_ms']:.2f} {x(d, 'x_query')} | "
                         f"{d['query_cpu_ms']:.2f} | {d['mix_cpu_per_wall']:.2f} | {d['peak_rss_mb']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.session_settings", description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["e5-small-arch", "me5"], choices=["e5-small-arch", "minilm", "me5"])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT_DIR, "benchmarks", "results", "session_settings.json"))
    args = ap.parse_args(argv)
    configs = ["e5-onnx"] + [c for c in args.configs if c != "e5-onnx"]

    def log(msg):
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    res = {"command": " ".join(["python -m benchmarks.session_settings", *(argv if argv is not None else sys.argv[1:])]),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
           "threads": args.threads, "rounds": args.rounds, "configs": {c: CONFIGS[c] for c in configs}, "runs": {}}
    for model in args.models:
        res["runs"][model] = run(model, args.rounds, args.threads, configs, log)
    res["machine"]["loadavg_end"] = os.getloadavg()
    write_report(args.out, res, markdown(res))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        sys.exit(main())

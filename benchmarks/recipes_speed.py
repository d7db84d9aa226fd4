"""Two INT8 recipes of one model side by side: the export's default against another recipe of
benchmarks/fidelity.py (by default the dynamic-scale recipe it replaced, issue 12).

In one process, alternating every round: batch throughput on the bench's text mix (batch 32,
2 threads), single-query latency (STSb sentences as "query: ", one call each, interleaved query
by query, 2 threads), and the CPU time of both with 1 thread (the calling thread's own time:
what a loaded machine disturbs least). Ratios are taken within each round; their median is
reported, > 1 meaning the default is faster.

    python -m benchmarks.recipes_speed [--models e5-small-arch,me5] [--other smooth-a07-ffn-out] [--rounds 7]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from .assets import export_dir
from .data import ROOT, stsb
from .mix import text_mix
from .harness import machine, write_report


def measure(encoders: dict, texts: list[str], queries: list[str], rounds: int, clock) -> dict:
    """Per recipe: texts/s on `texts` and per-query seconds, every round, recipes alternating."""
    out = {name: {"texts_per_s": [], "query_s": []} for name in encoders}
    for r in range(rounds):
        order = list(encoders) if r % 2 == 0 else list(encoders)[::-1]
        for name in order:
            t = clock()
            encoders[name].encode(texts)
            out[name]["texts_per_s"].append(len(texts) / (clock() - t))
        for q in queries:
            for name in order:
                t = clock()
                encoders[name].encode([q])
                out[name]["query_s"].append(clock() - t)
    return out


def compare(runs: dict, base: str, other: str) -> dict:
    n = len(runs[base]["texts_per_s"])
    per_round = [runs[base]["texts_per_s"][i] / runs[other]["texts_per_s"][i] for i in range(n)]
    p50 = {k: statistics.median(runs[k]["query_s"]) for k in (base, other)}
    return {"texts_per_s": {k: statistics.median(runs[k]["texts_per_s"]) for k in (base, other)},
            "throughput_ratio_median": statistics.median(per_round),
            "throughput_ratio_range": [min(per_round), max(per_round)],
            "query_p50_ms": {k: 1e3 * v for k, v in p50.items()},
            "query_p50_ratio": p50[other] / p50[base]}


def run_model(model: str, other: str, rounds: int, n_queries: int) -> dict:
    from e5_onnx import Embedder

    from .variants import recipe_variant

    export = export_dir(model)
    alt = recipe_variant(model, export, other)
    dirs = {"default": export, other: alt.model_dir}
    texts = text_mix(64)
    queries = ["query: " + a for a, _, _ in stsb("en", "test")[:n_queries]]
    result = {"export": str(export), other: str(alt.model_dir),
              "recipes": {"default": json.loads((export / "manifest.json").read_text())["export"]["quantization"],
                          other: alt.info.get("recipe")}}
    for threads, clock, key in ((2, time.perf_counter, "wall_2_threads"), (1, time.thread_time, "cpu_1_thread")):
        encoders = {k: Embedder(d, threads=threads, batch_size=32) for k, d in dirs.items()}
        for e in encoders.values():
            e.encode(texts[:16])
        runs = measure(encoders, texts, queries, rounds, clock)
        result[key] = {"runs": runs, **compare(runs, "default", other)}
        del encoders
    return result


def table(res: dict) -> str:
    other = res["other"]
    lines = [f"INT8 default vs `{other}`, {res['rounds']} alternating rounds, median of per-round ratios "
             f"(> 1: the default is faster); load average at start {res['machine']['loadavg_start'][0]:.1f}", "",
             "| model | measure | default | " + other + " | default / other |", "|---|---|---|---|---|"]
    for model, r in res["models"].items():
        for key, label in (("wall_2_threads", "2 threads, wall"), ("cpu_1_thread", "1 thread, CPU time")):
            c = r[key]
            lo, hi = c["throughput_ratio_range"]
            lines.append(f"| {model} | mix texts/s, {label} | {c['texts_per_s']['default']:.1f} | "
                         f"{c['texts_per_s'][other]:.1f} | {c['throughput_ratio_median']:.2f}x ({lo:.2f}-{hi:.2f}) |")
            lines.append(f"| {model} | single query p50 ms, {label} | {c['query_p50_ms']['default']:.2f} | "
                         f"{c['query_p50_ms'][other]:.2f} | {c['query_p50_ratio']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recipes_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="e5-small-arch,me5")
    parser.add_argument("--other", default="smooth-a07-ffn-out", help="a recipe of benchmarks/fidelity.py")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--queries", type=int, default=40, help="single queries per round")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "recipes_speed.json"))
    args = parser.parse_args(argv)
    res = {"machine": machine(), "other": args.other, "rounds": args.rounds, "command": "python -m benchmarks.recipes_speed "
           + " ".join(argv if argv is not None else sys.argv[1:]), "models": {}}
    for model in [m for m in args.models.split(",") if m]:
        res["models"][model] = run_model(model, args.other, args.rounds, args.queries)
    write_report(args.out, res, table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

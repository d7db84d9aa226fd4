"""Two cores, small calls: one call on both cores, or two one-core calls side by side?

    python -m benchmarks.call_parallelism [--model e5-small-arch] [--rounds 3] [--texts 512]

The server's calls are small (a pool is what arrived while the last one ran), and onnxruntime
splits each operator of a call over its threads, which then wait for each other. This embeds the
same texts in lists of 1, 4, 16 and 64 and all at once (one list: the side-by-side setting then
runs it on one thread, so that row measures one thread against two), with:
- one thread calling an `Embedder` with every core per call and one call at a time, threads
  spinning (the default) and not spinning (the server's setting);
- `cores` threads sharing one one-thread `Embedder`, taking lists in turn (the server's workers);
- one thread calling `Embedder.encode` at its defaults: one call on every core for a list of one
  batch, one-thread calls side by side for a list of several.
The texts: the serve benchmark's single queries (STSb sentences, `query: `), and its mixed
requests' texts (half queries, half SciFact passages cut to 400 characters). Each setting runs
once per round, in alternating order; the tables give medians of texts/s and, per list size,
each setting over the one-call-on-every-core default. Writes
benchmarks/results/call_parallelism.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from .data import ROOT
from .harness import machine, machine_line, model_dir
from .http_load import workloads

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "call_parallelism.json"
LIST_SIZES = (1, 4, 16, 64, 0)  # 0: every text in one encode call


def in_turn(embedder, lists: list[list[str]], workers: int) -> None:
    """`workers` threads take the lists in turn, as the server's workers take calls."""
    if workers == 1:
        for texts in lists:
            embedder.encode(texts)
        return
    threads = [threading.Thread(target=in_turn, args=(embedder, lists[k::workers], 1)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def one_call_at_a_time(embedder):
    """The Embedder as it was before 2026-12-07: every batch of a list on one call on every core
    (encode now runs a list's batches as one-thread calls side by side; one batch is still one call)."""
    embedder.session.streams = 1
    return embedder


def main(argv: list[str] | None = None) -> int:
    from e5_onnx import Embedder
    from e5_onnx.session import available_cores

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="e5-small-arch", help="a benchmarks/assets.py model or an export directory")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--texts", type=int, default=512, help="texts per workload")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    cores = available_cores()
    directory = model_dir(args.model)
    texts = {w: [t for r in reqs for t in r][: args.texts] for w, reqs in workloads().items()}
    settings = {
        f"1 call x {cores} threads, spinning": (one_call_at_a_time(Embedder(directory)), 1),
        f"1 call x {cores} threads, not spinning": (one_call_at_a_time(Embedder(directory, spinning=False)), 1),
        f"{cores} calls x 1 thread": (Embedder(directory, threads=1, spinning=False), cores),
        "encode's default": (Embedder(directory), 1),
    }
    for embedder, _ in settings.values():
        embedder.encode(texts["mixed"][:64])
    rates = {w: {name: {k: [] for k in LIST_SIZES} for name in settings} for w in texts}
    for r in range(args.rounds):
        names = list(settings) if r % 2 == 0 else list(settings)[::-1]
        for workload, items in texts.items():
            for size in LIST_SIZES:
                lists = [items] if size == 0 else [items[i : i + size] for i in range(0, len(items), size)]
                for name in names:
                    embedder, workers = settings[name]
                    start = time.perf_counter()
                    in_turn(embedder, lists, workers)
                    rates[workload][name][size].append(len(items) / (time.perf_counter() - start))
        print(f"round {r + 1}/{args.rounds} done (load average {os.getloadavg()[0]:.1f})", file=sys.stderr)
    res = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": vars(args),
           "machine": machine(), "loadavg_end": os.getloadavg(), "texts_per_s": rates}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    base = list(settings)[0]
    lines = [f"{res['started']}, {machine_line(res['machine'])}; {cores} cores used, {args.model}, {args.texts} texts per "
             f"workload, medians of {args.rounds} rounds, load average at the end {res['loadavg_end'][0]:.1f}; "
             f"`python -m benchmarks.call_parallelism --model {args.model} --rounds {args.rounds} --texts {args.texts}"
             + (f" --out {args.out}" if Path(args.out).resolve() != DEFAULT_OUT.resolve() else "") + "`"]
    for workload, by_setting in rates.items():
        lines += ["", f"| {workload}: texts per encode call | " + " | ".join(settings) + " |",
                  "|---" * (len(settings) + 1) + "|"]
        for size in LIST_SIZES:
            ref = statistics.median(by_setting[base][size])
            cells = [f"{statistics.median(by_setting[n][size]):.0f} ({statistics.median(by_setting[n][size]) / ref:.2f}x)"
                     for n in settings]
            lines.append(f"| {size or f'all {len(texts[workload])}'} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

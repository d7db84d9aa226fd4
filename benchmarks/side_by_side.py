"""encode's batches side by side (issue 20): the default against one call at a time, and the
plan's size floor (embedder.MIN_TOKENS) against pairing every alike batch.

    python -m benchmarks.side_by_side [--models e5-small-arch minilm me5] [--rounds 6]

One Embedder per model, at its defaults; "one call at a time" is the same Embedder with its
session's streams set to 1 (every batch one call on every thread, as encode ran before
2026-12-07), "pair small batches" the same with MIN_TOKENS 0. Workloads: the bench's mix in
calls of 32 texts, and short queries (the serve benchmark's) in calls of 4, 16 and 64. Rounds
alternate the settings' order; each cell is texts/s over the median round, and its ratio to the
default. Writes benchmarks/results/side_by_side.json and .md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone

from .data import ROOT
from .harness import log, machine, machine_line, model_dir, write_report

SETTINGS = ("default", "one call at a time", "pair small batches")


def timed(embedder, lists: list[list[str]], setting: str) -> float:
    import e5_onnx.embedder as em

    floor, streams = em.MIN_TOKENS, embedder.session.streams
    em.MIN_TOKENS = 0 if setting == "pair small batches" else floor
    embedder.session.streams = 1 if setting == "one call at a time" else streams
    try:
        start = time.perf_counter()
        for texts in lists:
            embedder.encode(texts)
        return time.perf_counter() - start
    finally:
        em.MIN_TOKENS, embedder.session.streams = floor, streams


def main(argv: list[str] | None = None) -> int:
    from e5_onnx import Embedder

    from .http_load import workloads
    from .mix import text_mix

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["e5-small-arch", "minilm", "me5"])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "side_by_side.json"))
    args = p.parse_args(argv)
    queries = [t for r in workloads()["query"] for t in r][:256]
    mix = text_mix(128)
    work = {"mix, 32 per call": [mix[i : i + 32] for i in range(0, len(mix), 32)]}
    work.update({f"queries, {n} per call": [queries[i : i + n] for i in range(0, len(queries), n)] for n in (4, 16, 64)})
    res: dict = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": vars(args),
                 "machine": machine(), "texts_per_s": {}}
    for model in args.models:
        embedder = Embedder(model_dir(model))
        embedder.encode(mix[:32])  # loads the one-thread session
        for name, lists in work.items():
            texts = sum(len(t) for t in lists)
            times = {s: [] for s in SETTINGS}
            for r in range(args.rounds):
                for s in (SETTINGS if r % 2 == 0 else SETTINGS[::-1]):
                    times[s].append(timed(embedder, lists, s))
            res["texts_per_s"].setdefault(model, {})[name] = {s: texts / statistics.median(t) for s, t in times.items()}
            log(model, name, {s: round(v, 1) for s, v in res["texts_per_s"][model][name].items()})
    lines = [f"{res['started']}, {machine_line(res['machine'])}; `python -m benchmarks.side_by_side --models "
             f"{' '.join(args.models)} --rounds {args.rounds}`", "",
             "| model | workload | " + " | ".join(SETTINGS) + " |", "|---" * (len(SETTINGS) + 2) + "|"]
    for model, by_work in res["texts_per_s"].items():
        for name, rates in by_work.items():
            cells = [f"{rates[s]:.1f} ({rates[s] / rates['default']:.2f}x)" for s in SETTINGS]
            lines.append(f"| {model} | {name} | " + " | ".join(cells) + " |")
    write_report(args.out, res, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

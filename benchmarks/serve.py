"""`e5-onnx serve` under load: dynamic batching vs one session call per request vs no HTTP at all.

    python -m benchmarks.serve [--model e5-small-arch|minilm|DIR] [--rounds 3] [--seconds 6]

For 1, 8, 32 and 128 concurrent clients, each sending single queries (STSb sentences with the
`query: ` prefix) or mixed batches (1-16 texts, half queries, half SciFact passages cut to 400
characters), one request after another on a keep-alive connection, it measures requests/s,
texts/s and p50/p99 latency of the server with batching on and with batching off (`--batching
off`: each worker takes one request at a time; both servers with their default workers and
threads), and `Embedder.encode` on the same texts in this process with no HTTP, as a user calls it
(default settings), also handed the queries clients/2 at a time. A cell counts the
requests answered inside its measured window; where requests outlast the window (mixed batches at
128 clients) the ones still waiting at its end are not in the latencies, so that p99 understates.
Each server runs in its own process; both are up during a round and each cell runs on one right
after the other (the order alternating), after `Embedder.encode`'s run; the table gives each
cell's median over the rounds, and the goals the median of ratios taken within each round.
Writes benchmarks/results/serve.json and .md. The load generator and the server processes are http_load.py.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .data import ROOT
from .harness import machine, machine_line, model_dir
from .http_load import batch_stats, cpu_seconds, http_request, load, start_server, workloads

CONCURRENCY = (1, 8, 32, 128)
WORKLOADS = ("query", "mixed")
def run_cell(proc: subprocess.Popen, port: int, batching: str, workload: str, clients: int, reqs: dict, args) -> dict:
    requests = [(http_request(port, texts), len(texts)) for texts in reqs[workload]]
    cpu, before = cpu_seconds(proc.pid), batch_stats(port)
    cell = asyncio.run(load(port, requests, clients, args.warm, args.seconds))
    cell["server_cpu_s"] = cpu_seconds(proc.pid) - cpu
    calls, texts, padded = (a - b for a, b in zip(batch_stats(port), before))
    cell.update(texts_per_call=texts / max(calls, 1), padded_tokens_per_text=padded / max(texts, 1))
    print(f"  batching {batching:3} {workload:6} x{clients:<4} {cell['requests_per_s']:7.1f} req/s "
          f"{cell['texts_per_s']:7.1f} texts/s p50 {cell['p50_ms']:7.1f} ms p99 {cell['p99_ms']:7.1f} ms",
          file=sys.stderr)
    return cell


def run_servers(model_dir: Path, reqs: dict, args) -> dict:
    """Both servers up at once (the idle one costs nothing); each cell runs on one, then the other,
    so the pair of figures a ratio is made of is taken minutes apart at most, not a whole round."""
    servers: dict = {}
    try:
        for batching in ("on", "off"):
            servers[batching] = start_server(model_dir, batching, args)
        out: dict = {"on": {}, "off": {}}
        for i, (workload, clients) in enumerate((w, c) for w in WORKLOADS for c in CONCURRENCY):
            for batching in (("on", "off") if i % 2 == 0 else ("off", "on")):
                proc, port = servers[batching]
                out[batching][f"{workload}/{clients}"] = run_cell(proc, port, batching, workload, clients, reqs, args)
        return out
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            proc.wait(60)


def run_embedder(model_dir: Path, reqs: dict, n_texts: int) -> dict:
    """Embedder.encode on the same texts, in this process, as a user would call it (default
    settings: every core in each call, threads spinning): the ceiling with no HTTP."""
    from e5_onnx import Embedder

    model = Embedder(model_dir)

    def rate(lists: list[list[str]]) -> float:
        """texts/s of encoding each list in turn: the median of 3 timings (one is ~1 s, and the
        spinning threads make a single timing swing by up to 2x on a shared machine)."""
        times = []
        for _ in range(3):
            start = time.perf_counter()
            for texts in lists:
                model.encode(texts)
            times.append(time.perf_counter() - start)
        return sum(map(len, lists)) / statistics.median(times)

    out = {}
    for workload in WORKLOADS:
        texts = [t for r in reqs[workload] for t in r][:n_texts]
        model.encode(texts[:64])
        batches = list(model.tokenizer.batches(texts, model.batch_size, model.max_batch_tokens))
        out[workload] = {"texts_per_s": rate([texts]), "texts": len(texts),
                         "texts_per_call": len(texts) / len(batches),
                         "padded_tokens_per_text": sum(b.input_ids.size for b in batches) / len(texts)}
    # The queries handed over clients/2 at a time: with closed-loop clients and busy workers,
    # about half of them can be waiting while the other half's pools run, so these lists are
    # the pools a server can form (1 client: one query at a time).
    queries = [t for r in reqs["query"] for t in r][:n_texts]
    out["query_pools"] = {}
    for clients in CONCURRENCY:
        size = max(1, clients // 2)
        lists = [queries[i : i + size] for i in range(0, len(queries), size)]
        out["query_pools"][str(clients)] = {"pool": size, "texts_per_s": rate(lists)}
    singles = [r[0] for r in reqs["query"][:300]]
    times = []
    for q in singles:
        start = time.perf_counter()
        model.encode([q])
        times.append((time.perf_counter() - start) * 1000)
    out["query_single"] = {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)),
                           "requests_per_s": 1000 / statistics.mean(times)}
    pools = ", ".join(f"{p['pool']}: {p['texts_per_s']:.0f}" for p in out["query_pools"].values())
    print(f"  Embedder.encode: queries {out['query']['texts_per_s']:.1f} texts/s (in lists of {pools}), mixed "
          f"{out['mixed']['texts_per_s']:.1f} texts/s, one query p50 {out['query_single']['p50_ms']:.1f} ms",
          file=sys.stderr)
    return out


def median_cells(rounds: list[dict]) -> dict:
    """Each number of each cell: its median over the rounds."""
    def med(values):
        return statistics.median(values) if isinstance(values[0], (int, float)) else values

    def merge(items):
        if isinstance(items[0], dict):
            return {k: merge([i[k] for i in items]) for k in items[0]}
        return med(items)

    return merge(rounds)


def ratio(a: float, b: float, fmt: str) -> str:
    return format(a / b, fmt) + ("x" if fmt.endswith("f") else "") if a and b and a == a and b == b else "–"


def pad(cell: dict) -> str:
    return f"{cell['texts_per_call']:.1f}, {cell['padded_tokens_per_text']:.0f}" if "texts_per_call" in cell else "–"


def ms(cell: dict) -> str:
    """p50 / p99, or a dash when no request was answered inside the measured window."""
    return f"{cell['p50_ms']:.1f} / {cell['p99_ms']:.1f}" if cell["requests"] else "–"


def pool_share(cell: dict, pool: dict | None) -> str:
    return f"{ratio(cell['texts_per_s'], pool['texts_per_s'], '.0%')} (lists of {pool['pool']})" if pool else "–"


def pool_rates(pools: dict) -> str:
    return "queries in lists of " + ", ".join(f"{p['pool']}: {p['texts_per_s']:.0f}" for p in pools.values()) + \
        " texts/s" if pools else ""


def markdown(res: dict) -> str:
    on, off, enc = res["median"]["on"], res["median"]["off"], res["median"]["encode"]
    lines = ["| workload | clients | batched req/s | p50 / p99 ms | unbatched req/s | p50 / p99 ms | "
             "batched / unbatched req/s | batched texts/s / Embedder.encode | batched texts/s / Embedder.encode "
             "in lists of clients/2 | batched: texts per call, padded tokens per text |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    pools = enc.get("query_pools", {})
    for workload in WORKLOADS:
        for clients in CONCURRENCY:
            a, b = on[f"{workload}/{clients}"], off[f"{workload}/{clients}"]
            lines.append(f"| {'single query' if workload == 'query' else 'mixed 1-16 texts'} | {clients} | "
                         f"{a['requests_per_s']:.1f} | {ms(a)} | {b['requests_per_s']:.1f} | "
                         f"{ms(b)} | {ratio(a['requests_per_s'], b['requests_per_s'], '.2f')} | "
                         f"{ratio(a['texts_per_s'], enc[workload]['texts_per_s'], '.0%')} | "
                         f"{pool_share(a, pools.get(str(clients))) if workload == 'query' else ''} | {pad(a)} |")
    lines.append(f"| Embedder.encode, no HTTP | | queries {enc['query']['texts_per_s']:.0f} texts/s, mixed "
                 f"{enc['mixed']['texts_per_s']:.0f} texts/s | one query at a time {enc['query_single']['p50_ms']:.1f} / "
                 f"{enc['query_single']['p99_ms']:.1f} | | | | | {pool_rates(pools)} | queries {pad(enc['query'])}, "
                 f"mixed {pad(enc['mixed'])} |")
    lines += ["", "| goal at 32 single-query clients (ratio within each round, median over rounds) | target | measured "
              "| met |", "|---|---|---|---|"]
    for g in res["goals"]:
        lines.append(f"| {g['goal']} | {g['target']} | {g['measured']} | {'yes' if g['met'] else 'no'} |")
    if all("query_pools" in r["encode"] for r in res["rounds"]):
        share = statistics.median(r["on"]["query/32"]["texts_per_s"] / r["encode"]["query_pools"]["32"]["texts_per_s"]
                                  for r in res["rounds"])
        lines += ["", f"Not a goal, for scale: at 32 clients the server reaches {share:.0%} of `Embedder.encode` handed "
                  "the same queries 16 at a time (the most that can wait while the other 16 clients' pool runs); "
                  "median of the ratios within each round."]
    return "\n".join(lines)


def goals(res: dict) -> list[dict]:
    """Each ratio is taken within a round (the systems side by side), then its median over rounds."""
    rounds = res["rounds"]
    share = statistics.median(r["on"]["query/32"]["texts_per_s"] / r["encode"]["query"]["texts_per_s"] for r in rounds)
    speedup = statistics.median(r["on"]["query/32"]["requests_per_s"] / r["off"]["query/32"]["requests_per_s"]
                                for r in rounds)
    p99 = statistics.median(r["on"]["query/32"]["p99_ms"] / r["off"]["query/32"]["p99_ms"] for r in rounds)
    return [
        {"goal": "texts/s vs Embedder.encode on the same queries", "target": ">= 90%", "measured": f"{share:.0%}",
         "met": share >= 0.9},
        {"goal": "requests/s vs the unbatched server", "target": ">= 1.6x", "measured": f"{speedup:.2f}x",
         "met": speedup >= 1.6},
        {"goal": "p99 latency vs the unbatched server", "target": "no worse", "measured": f"{p99:.2f}x the unbatched p99",
         "met": p99 <= 1},
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="e5-small-arch", help="a benchmarks/assets.py model or an export directory")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=6.0, help="measured seconds per cell")
    p.add_argument("--encode-texts", type=int, default=256, help="texts Embedder.encode embeds per workload")
    p.add_argument("--warm", type=float, default=1.5, help="unmeasured seconds before each cell")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    p.add_argument("--server-args", default="", help='more `e5-onnx serve` flags for both servers, e.g. "--threads 1"')
    p.add_argument("--report", metavar="JSON", help="only print the tables of an earlier run's JSON")
    args = p.parse_args(argv)
    if args.report:  # re-render an earlier run's tables (.md beside its JSON)
        res = json.loads(Path(args.report).read_text())
        res["goals"] = goals(res)
        write_md(res, Path(args.report))
        return 0
    directory = model_dir(args.model)
    reqs = workloads()
    res = {"model": args.model, "model_dir": str(directory), "args": vars(args), "machine": machine(("starlette", "uvicorn", "h11", "httptools", "uvloop")),
           "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "loadavg": [os.getloadavg()],
           "rounds": []}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds} (load average {os.getloadavg()[0]:.1f})", file=sys.stderr)
        res["rounds"].append({"encode": run_embedder(directory, reqs, args.encode_texts),
                              **run_servers(directory, reqs, args)})
        res["loadavg"].append(os.getloadavg())
    res["median"] = median_cells(res["rounds"])
    res["goals"] = goals(res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    write_md(res, out)
    return 0


def write_md(res: dict, out: Path) -> None:
    a = res["args"]
    text = (f"{res['started']}, {machine_line(res['machine'])}; load average "
            f"(1 min) before each round and at the end {[round(l[0], 1) for l in res['loadavg']]}; "
            f"`python -m benchmarks.serve --model {a['model']} --rounds {a['rounds']} --seconds {a['seconds']:g}"
            + (f" --server-args {shlex.quote(a['server_args'])}" if a.get("server_args") else "") + "`\n\n"
            + markdown(res) + "\n")
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())

"""`e5-onnx embed` as a corpus job: its streaming + checkpointing overhead against one
`Embedder.encode` call on the same texts, its peak RSS against corpus size, and Ray Data's two
1-CPU actors against one 2-thread process.

    python -m benchmarks.embed_job --model minilm --texts 100000 --rss-sizes 10000,200000 --ray-texts 4000

Every measured run is a fresh process (timed from outside, peak RSS from the kernel's rusage of
that child). Throughput runs alternate job / encode, `--rounds` times each; ratios are taken within
a round. Texts: STSb-en test+dev sentences as `query: ` and SciFact title+abstract as `passage: `,
half and half, cycled to the size asked for; the RSS corpus is the STSb sentences alone (short).
Writes benchmarks/results/embed_job.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .assets import export_dir
from .data import ROOT, scifact_passages, stsb_sentences
from .harness import machine, machine_line

ENCODE = """
import sys, numpy as np
from e5_onnx import Embedder
texts = open(sys.argv[1], encoding="utf-8").read().split("\\n")[:-1]
model = Embedder(sys.argv[2], threads=int(sys.argv[3]))
np.save(sys.argv[4], model.encode(texts))
"""


def sentences() -> list[str]:
    return stsb_sentences("en", ("test", "dev"))


def mixed(n: int) -> list[str]:
    rng = random.Random(0)
    queries = ["query: " + s for s in sentences()]
    passages = ["passage: " + " ".join(p.split()) for p in scifact_passages()]
    rng.shuffle(queries)
    rng.shuffle(passages)
    return [queries[i // 2 % len(queries)] if i % 2 == 0 else passages[i // 2 % len(passages)] for i in range(n)]


def short(n: int) -> list[str]:
    rng = random.Random(1)
    s = ["query: " + t for t in sentences()]
    rng.shuffle(s)
    return [s[i % len(s)] for i in range(n)]


def run(cmd: list[str]) -> dict:
    """Wall time and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {err}")
    return {"seconds": round(wall, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stderr_tail": err.strip()[-300:]}


def job_cmd(inp: Path, out: Path, model: Path, threads: int) -> list[str]:
    return [sys.executable, "-m", "e5_onnx.cli", "embed", str(inp), "-o", str(out), "-m", str(model),
            "--threads", str(threads), "--restart"]


def throughput(work: Path, model: Path, n: int, threads: int, rounds: int) -> dict:
    inp = work / "mixed.txt"
    inp.write_text("".join(t + "\n" for t in mixed(n)), encoding="utf-8")
    rows = []
    for r in range(rounds):
        order = ("job", "encode") if r % 2 == 0 else ("encode", "job")
        row = {}
        for system in order:
            if system == "job":
                row["job"] = run(job_cmd(inp, work / "job.npy", model, threads))
            else:
                row["encode"] = run([sys.executable, "-c", ENCODE, str(inp), str(model), str(threads), str(work / "enc.npy")])
        row["job_vs_encode"] = round(row["encode"]["seconds"] / row["job"]["seconds"], 4)
        # CPU seconds (user + sys of the child) are what the machine's other jobs disturb least
        row["job_vs_encode_cpu"] = round(row["encode"]["cpu_seconds"] / row["job"]["cpu_seconds"], 4)
        print(f"  round {r}: job {row['job']['seconds']} s ({row['job']['cpu_seconds']} CPU s), encode "
              f"{row['encode']['seconds']} s ({row['encode']['cpu_seconds']} CPU s), job throughput "
              f"{row['job_vs_encode']:.3f}x encode's by wall time, {row['job_vs_encode_cpu']:.3f}x by CPU time",
              file=sys.stderr, flush=True)
        rows.append(row)
    import numpy as np

    a, b = np.load(work / "job.npy"), np.load(work / "enc.npy")
    cos = np.sum(a * b, axis=1)
    return {"texts": n, "rounds": rows, "median_job_vs_encode": statistics.median(r["job_vs_encode"] for r in rows),
            "median_job_vs_encode_cpu": statistics.median(r["job_vs_encode_cpu"] for r in rows),
            "texts_per_s_job": [round(n / r["job"]["seconds"], 1) for r in rows],
            "texts_per_s_encode": [round(n / r["encode"]["seconds"], 1) for r in rows],
            "cosine_job_vs_encode": {"mean": float(cos.mean()), "min": float(cos.min())}}


def memory(work: Path, model: Path, sizes: list[int], threads: int) -> dict:
    out = {}
    for n in sizes:
        inp = work / f"short-{n}.txt"
        inp.write_text("".join(t + "\n" for t in short(n)), encoding="utf-8")
        result = run(job_cmd(inp, work / f"short-{n}.npy", model, threads))
        result["output_mb"] = round((work / f"short-{n}.npy").stat().st_size / 2**20, 1)
        print(f"  {n} short texts: peak RSS {result['peak_rss_mb']} MB, {result['seconds']} s", file=sys.stderr, flush=True)
        (work / f"short-{n}.npy").unlink()
        out[str(n)] = result
    first, last = out[str(sizes[0])]["peak_rss_mb"], out[str(sizes[-1])]["peak_rss_mb"]
    import resource  # the floor: a child's peak counts this process's pages until it execs

    parent = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return {"runs": out, "rss_ratio_largest_vs_smallest": round(last / first, 4), "benchmark_process_peak_rss_mb": parent}


def ray_vs_one_process(work: Path, model: Path, n: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from e5_onnx.ray import embed_dataset, read_parquet, write_parquet

    texts = mixed(n)
    src = work / "ray-in"
    src.mkdir(exist_ok=True)
    per = -(-n // 8)
    for f in range(8):  # 8 files: Ray splits the input by file, so both actors get work
        rows = range(f * per, min(n, (f + 1) * per))
        pq.write_table(pa.table({"id": list(rows), "text": [texts[i] for i in rows]}), src / f"part-{f}.parquet")
    run([sys.executable, "-m", "e5_onnx.cli", "embed", str(src / "part-0.parquet"), "-o", str(work / "x.npy"),
         "-m", str(model), "--threads", "1", "--restart"])  # warm-up: page cache, .pyc files
    whole = work / "ray-whole.parquet"
    pq.write_table(pq.read_table(src), whole)
    single = run([sys.executable, "-m", "e5_onnx.cli", "embed", str(whole), "-o", str(work / "single.parquet"),
                  "-m", str(model), "--threads", "2", "--restart"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        start = time.perf_counter()
        write_parquet(embed_dataset(read_parquet(str(src)), str(model), actors=2, cpus_per_actor=1, batch_size=256),
                      str(work / "ray-out"))
        ray_seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    result = {"texts": n, "one_process_2_threads_s": single["seconds"], "ray_2_actors_x_1_cpu_s": round(ray_seconds, 2),
              "one_process_texts_per_s": round(n / single["seconds"], 1), "ray_texts_per_s": round(n / ray_seconds, 1)}
    print(f"  ray: {result}", file=sys.stderr, flush=True)
    return result


TINY = """
import sys
from pathlib import Path
from export.build import export_model
from tests.tiny_models import build_wordpiece_bert
work = Path(sys.argv[1])
src = build_wordpiece_bert(work / "tiny-src", max_positions=64)
export_model(src, work / "tiny", source={"kind": "local", "path": str(src)}, log=lambda *a: None)
"""


def tiny_export(work: Path) -> Path:
    """The tests' random 2-layer WordPiece BERT (hidden 64, 64 tokens): the job's own memory at
    corpus sizes a real model would take hours to embed on 2 shared cores. Built in a child
    process: a child's peak RSS counts its parent's pages until it execs, so the parent must stay
    small (no torch)."""
    subprocess.run([sys.executable, "-c", TINY, str(work)], check=True, capture_output=True, cwd=ROOT)
    return work / "tiny"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="minilm", choices=("minilm", "e5-small-arch", "me5", "tiny"),
                   help="tiny: the tests' random 2-layer model, whose embedding is so cheap that the job's own "
                        "costs (reading, chunking, writing, checkpoints) weigh the most they can: an upper bound "
                        "on the overhead at corpus sizes a real model takes hours to embed here")
    p.add_argument("--texts", type=int, default=100_000, help="mixed texts for the throughput comparison")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rss-sizes", default="10000,200000")
    p.add_argument("--ray-texts", type=int, default=0, help="texts for Ray vs one process (0: skip)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model-dir", default=None, help="an export directory to use instead of --model's cached export")
    p.add_argument("--rss-model", default="same", choices=("same", "tiny"),
                   help="model for the RSS runs: the same as the throughput runs, or the tests' tiny random model")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "embed_job.json"))
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="e5-embed-job-"))
    model = Path(args.model_dir) if args.model_dir else tiny_export(work) if args.model == "tiny" else export_dir(args.model)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        result = {"command": "python -m benchmarks.embed_job " + shlex.join(sys.argv[1:] if argv is None else argv),
                  "started": started, "machine": machine(),
                  "load_average_at_start": os.getloadavg(), "model": args.model, "variant": "int8",
                  "threads": args.threads}
        if args.texts:
            print(f"throughput, {args.texts} mixed texts:", file=sys.stderr)
            result["throughput"] = throughput(work, model, args.texts, args.threads, args.rounds)
        sizes = [int(s) for s in args.rss_sizes.split(",") if s]
        if sizes:
            print(f"peak RSS, short texts {sizes}:", file=sys.stderr)
            rss_model = model if args.rss_model == "same" or args.model == "tiny" else tiny_export(work)
            result["memory"] = memory(work, rss_model, sizes, args.threads)
            result["memory"]["model"] = args.model if args.rss_model == "same" else "tiny random WordPiece BERT (2 x 64, 64 tokens)"
        if args.ray_texts:
            result["ray"] = ray_vs_one_process(work, model, args.ray_texts)
        result["load_average_at_end"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    Path(args.out).with_suffix(".md").write_text(report(result))
    print(report(result))
    return 0


def report(r: dict) -> str:
    lines = [f"# e5-onnx embed as a corpus job ({r['started']})", "", f"`{r['command']}`; {machine_line(r['machine'])}; model {r['model']} "
             f"INT8, {r['threads']} threads; load average {r['load_average_at_start']} at start, "
             f"{r.get('load_average_at_end')} at end."]
    if "throughput" in r:
        t = r["throughput"]
        lines += ["", f"Throughput, {t['texts']:,} mixed texts, fresh process each (load + embed + write):", "",
                  "| round | e5-onnx embed | Embedder.encode | job / encode, wall | job / encode, CPU |", "|---|---|---|---|---|"]
        for i, row in enumerate(t["rounds"]):
            job, enc = row["job"], row["encode"]
            lines.append(f"| {i} | {job['seconds']} s, {job['cpu_seconds']} CPU s, {job['peak_rss_mb']} MB | "
                         f"{enc['seconds']} s, {enc['cpu_seconds']} CPU s, {enc['peak_rss_mb']} MB | "
                         f"{row['job_vs_encode']:.3f} | {row['job_vs_encode_cpu']:.3f} |")
        lines += ["", f"Throughput ratio (> 1: the job is faster), median: {t['median_job_vs_encode']:.3f} by wall time, "
                  f"{t['median_job_vs_encode_cpu']:.3f} by CPU seconds (user + sys of each process). Cosine job vs encode: "
                  f"mean {t['cosine_job_vs_encode']['mean']:.6f}, min {t['cosine_job_vs_encode']['min']:.6f} (the job "
                  "batches within chunks of 1,024 texts; INT8 rows do not depend on their batch-mates)."]
    if "memory" in r:
        m = r["memory"]
        lines += ["", f"Peak RSS of `e5-onnx embed` by corpus size (short texts; model: {m['model']}):", "",
                  "| texts | peak RSS | time | output |", "|---|---|---|---|"]
        for n, run_ in m["runs"].items():
            lines.append(f"| {int(n):,} | {run_['peak_rss_mb']} MB | {run_['seconds']} s | {run_['output_mb']} MB |")
        lines += ["", f"Largest / smallest: {m['rss_ratio_largest_vs_smallest']:.3f}x (the benchmark process itself peaked "
                  f"at {m.get('benchmark_process_peak_rss_mb')} MB: a child's figure cannot be below its parent's)."]
    if "ray" in r:
        y = r["ray"]
        lines += ["", f"Ray Data, {y['texts']:,} mixed texts: one process with 2 threads {y['one_process_2_threads_s']} s "
                  f"({y['one_process_texts_per_s']} texts/s, incl. process start + load) vs 2 actors x 1 CPU on "
                  f"ray.init(num_cpus=2) {y['ray_2_actors_x_1_cpu_s']} s ({y['ray_texts_per_s']} texts/s, incl. actor "
                  "start + 2 model loads, excl. cluster start)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

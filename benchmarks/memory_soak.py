"""Memory across many batches of random shapes: onnxruntime defaults vs e5-onnx's session settings.

onnxruntime's CPU arena keeps what each new shape needed (fastembed #222, #570); this runs
the same random (batch, length) sequence through both configurations, alternating, and
records each one's resident memory (RSS) as it goes. Each configuration runs in its own
process so the two RSS curves do not mix.

    python -m benchmarks.memory_soak [--batches 10000] [--model e5-small-arch]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .harness import proc_status_mb

CONFIGS = ("ort-defaults", "e5-onnx")


def worker(model_dir: str, config: str, batches: int, seed: int, threads: int) -> dict:
    """Run `batches` random shapes through one session; RSS sampled every 1/20th of the run."""
    import onnxruntime as ort

    from e5_onnx import Embedder

    model = Embedder(model_dir, threads=threads)
    if config == "ort-defaults":  # same file, onnxruntime's default SessionOptions
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        graph = Path(model_dir) / model.graph  # by path: its weights sit beside it
        model.session.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    samples, start = [], time.perf_counter()
    for i in range(batches):
        n, length = int(rng.integers(1, 3)), int(rng.integers(2, model.max_length + 1))
        ids = rng.integers(1000, 20000, size=(n, length), dtype=np.int64)
        model.session.run(ids, np.ones_like(ids))
        if (i + 1) % max(1, batches // 20) == 0:
            samples.append({"batch": i + 1, "rss_mb": round(proc_status_mb("VmRSS"), 1), "seconds": round(time.perf_counter() - start, 1)})
    return {"config": config, "samples": samples}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=10_000)
    p.add_argument("--model", default="e5-small-arch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "memory_soak.json")
    p.add_argument("--worker", nargs=2, metavar=("MODEL_DIR", "CONFIG"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.batches, 0, args.threads)))
        return

    from .assets import export_dir

    model_dir = str(export_dir(args.model))
    procs = {c: subprocess.Popen([sys.executable, "-m", "benchmarks.memory_soak", "--worker", model_dir, c,
                                  "--batches", str(args.batches), "--threads", str(args.threads // 2 or 1)],
                                 stdout=subprocess.PIPE, text=True) for c in CONFIGS}
    results = {c: json.loads(proc.communicate()[0]) for c, proc in procs.items()}
    report = {"command": " ".join(sys.argv), "model": args.model, "batches": args.batches,
              "shapes": "batch 1-2 x length 2-max_length, uniform, seed 0", "results": results}
    print(f"{'batch':>8} " + " ".join(f"{c:>14}" for c in CONFIGS) + "   (RSS MB)")
    for rows in zip(*(results[c]["samples"] for c in CONFIGS)):
        print(f"{rows[0]['batch']:>8} " + " ".join(f"{r['rss_mb']:>14.1f}" for r in rows))
    for c in CONFIGS:
        s = results[c]["samples"]
        half = s[len(s) // 2]["rss_mb"]
        report[c] = {"rss_mb_end": s[-1]["rss_mb"], "rss_mb_half": half, "growth_second_half_mb": round(s[-1]["rss_mb"] - half, 1)}
        print(f"{c}: RSS at half {half} MB, at end {s[-1]['rss_mb']} MB, second-half growth {report[c]['growth_second_half_mb']} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

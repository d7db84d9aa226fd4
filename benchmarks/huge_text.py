"""What one huge text costs: time and peak RSS of embedding a 1-10 MB text, whole vs cut first.

    python -m benchmarks.huge_text [--models minilm me5] [--sizes 1 2 5 10]

Each (model, size, path) runs in a fresh process (peak RSS is per process): load the INT8 export,
build the text (SciFact passages joined by newlines until it has N MB of characters), then time one
call. Paths: "whole" is `tokenizers` on the whole text, as Embedder.encode(..., long_text="truncate")
did before the cut (it tokenises everything, then keeps 512 tokens and the rest as overflowing
encodings); "cut" is TextTokenizer.encode(head_only=True) (src/e5_onnx/cut.py), then the same
session call. Both give the same token ids, checked here, and the same vector (max abs difference reported).
Results: benchmarks/results/huge_text.json (+ .md).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from .data import ROOT, scifact_passages
from .harness import proc_status_mb, reset_peak_rss

RESULTS = ROOT / "benchmarks" / "results"


def build_text(megabytes: float) -> str:
    passages = scifact_passages()
    n = int(megabytes * 1_000_000)
    parts, total, i = [], 0, 0
    while total < n:
        parts.append(passages[i % len(passages)])
        total += len(parts[-1]) + 1
        i += 1
    return "\n".join(parts)[:n]


def one(model_dir: str, megabytes: float, path: str) -> dict:
    """Runs in the child process."""
    import numpy as np

    from e5_onnx import Embedder
    from e5_onnx.pool import mean_pool_normalize

    model = Embedder(model_dir)
    text = build_text(megabytes)
    model.encode(["warm up"])
    # VmHWM, not ru_maxrss (which a child inherits from this script's parent, that exports models
    # in-process), reset to the current RSS: the peak below is the call's own
    reset_peak_rss()
    before = proc_status_mb("VmRSS")
    start = time.perf_counter()
    [enc] = model.tokenizer.encode([text], head_only=(path == "cut"))
    tokenised = time.perf_counter() - start
    batch = model.tokenizer.batch_encodings([enc], 1, model.max_length)[0]
    vector = mean_pool_normalize(model.session.run(batch.input_ids, batch.attention_mask), batch.attention_mask)[0]
    seconds = time.perf_counter() - start
    peak = proc_status_mb("VmHWM")
    return {"chars": len(text), "seconds": round(seconds, 4), "tokenise_seconds": round(tokenised, 4),
            "rss_before_mb": round(before, 1), "peak_rss_mb": round(peak, 1),
            "peak_growth_mb": round(peak - before, 1), "ids": enc.ids, "truncated": bool(enc.overflowing),
            "vector": np.asarray(vector, dtype=float).tolist()}


def run_child(model_dir: str, megabytes: float, path: str) -> dict:
    code = ("import json, sys; from benchmarks.huge_text import one; "
            f"print(json.dumps(one({model_dir!r}, {megabytes!r}, {path!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["minilm", "me5"])
    p.add_argument("--sizes", nargs="+", type=float, default=[1, 2, 5, 10], help="MB of text")
    p.add_argument("--out", default=str(RESULTS / "huge_text"))
    args = p.parse_args(argv)
    from .assets import export_dir
    from .harness import machine

    rows = []
    for name in args.models:
        model_dir = str(export_dir(name))
        for mb in args.sizes:
            whole, cut = run_child(model_dir, mb, "whole"), run_child(model_dir, mb, "cut")
            assert whole["ids"] == cut["ids"] and whole["truncated"] == cut["truncated"], (name, mb)
            diff = max(abs(a - b) for a, b in zip(whole["vector"], cut["vector"]))
            for path, r in (("whole", whole), ("cut", cut)):
                rows.append({"model": name, "mb": mb, "path": path, "same_ids_as_whole": True,
                             "max_abs_diff_to_whole": diff,
                             **{k: v for k, v in r.items() if k not in ("ids", "vector")}})
                print(json.dumps(rows[-1]), flush=True)
    res = {"machine": machine(), "command": "python -m benchmarks.huge_text " + " ".join(sys.argv[1:] if argv is None else argv),
           "rows": rows}
    with open(args.out + ".json", "w") as f:
        json.dump(res, f, indent=1)
    lines = ["| model | MB | path | seconds | tokenise s | peak RSS growth MB | max abs diff to whole |",
             "|---|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['mb']:g} | {r['path']} | {r['seconds']:.3f} | {r['tokenise_seconds']:.3f} | "
              f"{r['peak_growth_mb']:.0f} | {r['max_abs_diff_to_whole']:.1g} |" for r in rows]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

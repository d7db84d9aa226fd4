"""multilingual-e5-small cold start, before and after tokenizer_unigram.npz, side by side in one run.

    python -m benchmarks.coldstart_tokenizer [--reps 5] [--model me5]

Every figure is a fresh process, repetitions interleaved in rotating order:
- probes: where loading the 250k-piece Unigram tokenizer spends its time and memory (json.loads,
  Tokenizer.from_file / from_str, models.Unigram built from Python lists, tokenizer.json without
  its vocabulary, e5-onnx's compact load); CPU seconds besides wall ones, as the machine is shared.
- cold starts (benchmarks/coldstart.py, as bench.py runs them: import, load, embed one query):
  e5-onnx INT8 and e5-onnx's tokenizer alone, "before" on the export seen without its
  tokenizer_unigram.npz (what an older export loads: tokenizer.json), "after" on the export itself.
Writes benchmarks/results/coldstart_tokenizer.json and .md.
"""
from __future__ import annotations

import json
import os
import sys
import time

PROBES = ("import only", "json.loads", "Tokenizer.from_file", "Tokenizer.from_str", "models.Unigram(lists)",
          "tokenizer.json without vocab", "unigram.load (compact)")


def _status() -> dict[str, float]:
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) / 1024 for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}


def probe_child(name: str, export: str) -> None:
    """One probe in this fresh process: the op's wall and CPU seconds, RSS before and after, peak RSS."""
    import numpy  # noqa: F401  (what every variant imports anyway, kept out of the op)
    from tokenizers import Tokenizer, models

    from e5_onnx import unigram

    path = os.path.join(export, "tokenizer.json")
    setup = kept = None
    if name == "models.Unigram(lists)":  # the vocabulary as Python lists first, then only the build is timed
        with open(path, encoding="utf-8") as f:
            model = json.load(f)["model"]
        setup = [(p, s) for p, s in model["vocab"]], model["unk_id"], model.get("byte_fallback", False)
    elif name == "tokenizer.json without vocab":
        with open(path, encoding="utf-8") as f:
            full = json.load(f)
        setup = json.dumps(unigram.compact_config(full) | {"model": {"type": "WordLevel", "vocab": {"<unk>": 0},
                                                                      "unk_token": "<unk>"}})
        del full
    before = _status()
    t, c = time.perf_counter(), time.process_time()
    if name == "json.loads":
        with open(path, encoding="utf-8") as f:
            kept = json.loads(f.read())
    elif name == "Tokenizer.from_file":
        kept = Tokenizer.from_file(path)
    elif name == "Tokenizer.from_str":
        with open(path, encoding="utf-8") as f:
            kept = Tokenizer.from_str(f.read())
    elif name == "models.Unigram(lists)":
        kept = models.Unigram(*setup)
    elif name == "tokenizer.json without vocab":
        kept = Tokenizer.from_str(setup)
    elif name == "unigram.load (compact)":
        kept = unigram.load(os.path.join(export, unigram.COMPACT))
    elif name != "import only":
        raise SystemExit(f"unknown probe {name!r}")
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    after = _status()
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "rss_before_mb": before["VmRSS"], "rss_after_mb": after["VmRSS"],
                      "peak_rss_mb": after["VmHWM"]}))
    del kept


def throughput_child(export: str, legacy: str, texts_per_rep: int, reps: int) -> None:
    """The price of segmenting in Python, in one process: the same shuffled multilingual texts
    (Tatoeba + STSb, new ones each repetition) through both tokenizers and both Embedders
    (INT8), interleaved; CPU seconds of tokenising alone, and texts/s of `encode`."""
    import random

    from e5_onnx import Embedder

    from .data import STSB_LANGS, shared_dir, stsb, tatoeba

    texts = []
    for path in sorted((shared_dir() / "data" / "tatoeba-laser" / "v1").glob("tatoeba.*-eng.eng")):
        texts += tatoeba(path.name.split(".")[1].split("-")[0])[0]
    texts += [a for lang in STSB_LANGS for a, _, _ in stsb(lang, "test")]
    random.Random(0).shuffle(texts)
    models = {"before": Embedder(legacy), "after": Embedder(export)}
    out = {k: {"tokenise_cpu_s": [], "encode_s": []} for k in models}
    for rep in range(reps):
        chunk = ["query: " + t for t in texts[rep * texts_per_rep:(rep + 1) * texts_per_rep]]
        for name in (list(models) if rep % 2 == 0 else list(models)[::-1]):
            c = time.process_time()
            models[name].tokenizer.encode(chunk)
            out[name]["tokenise_cpu_s"].append(time.process_time() - c)
        chunk = ["query: " + t for t in texts[(reps + rep) * texts_per_rep:(reps + rep + 1) * texts_per_rep]]
        for name in (list(models) if rep % 2 == 0 else list(models)[::-1]):
            t = time.perf_counter()
            models[name].encode(chunk)
            out[name]["encode_s"].append(time.perf_counter() - t)
    print(json.dumps({"texts_per_rep": texts_per_rep, **out}))


def run_probe(name: str, export: str) -> dict:
    return run_child(["--probe", name, export])


def run_child(args: list[str]) -> dict:
    import subprocess

    from .coldstart import ROOT_DIR

    p = subprocess.run([sys.executable, "-m", "benchmarks.coldstart_tokenizer", *args],
                       cwd=ROOT_DIR, capture_output=True, text=True, timeout=1200)
    if p.returncode != 0:
        raise RuntimeError(f"child {args[:2]} failed: {p.stderr.strip()[-800:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def legacy_view(export, out):
    """The export as one written before tokenizer_unigram.npz: symlinks to its files, a manifest without it."""
    import shutil
    from pathlib import Path

    from e5_onnx.manifest import MANIFEST
    from e5_onnx.unigram import COMPACT

    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for f in Path(export).iterdir():
        if f.name not in (COMPACT, MANIFEST):
            (out / f.name).symlink_to(f)
    manifest = json.loads((Path(export) / MANIFEST).read_text())
    if manifest["files"].pop(COMPACT, None) is None:
        raise SystemExit(f"{export} has no {COMPACT}: re-export it with this version")
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


def main(argv: list[str] | None = None) -> dict:
    import argparse
    import statistics

    from .assets import export_dir, work_dir
    from .coldstart import cold_start
    from .measure import rotate
    from .harness import machine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="me5")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--texts", type=int, default=512, help="texts per repetition of the throughput part")
    args = ap.parse_args(argv)
    export = export_dir(args.model)
    old = legacy_view(export, work_dir() / "legacy" / export.name)
    query = "query: Wie viel Eiweiß sollte eine Frau täglich essen?"
    env = dict(os.environ)
    colds = {("python", "-"): ("python", str(export)),
             ("e5onnx-tokenizer", "before"): ("e5onnx-tokenizer", str(old)),
             ("e5onnx-tokenizer", "after"): ("e5onnx-tokenizer", str(export)),
             ("e5onnx-int8", "before"): ("e5onnx-int8", str(old)),
             ("e5onnx-int8", "after"): ("e5onnx-int8", str(export))}
    runs: dict = {k: [] for k in list(colds) + [("probe", p) for p in PROBES]}
    started = machine()
    for rep in range(args.reps):
        for key in rotate(list(runs), rep):
            if key[0] == "probe":
                runs[key].append(run_probe(key[1], str(export)))
            else:
                system, model_dir = colds[key]
                runs[key].append(cold_start(system, {"export": model_dir}, args.threads, query, env))
        print(f"  rep {rep + 1}/{args.reps}", file=sys.stderr)
    print("  throughput (in one process)", file=sys.stderr)
    thr = run_child(["--throughput", str(export), str(old), str(args.texts), str(args.reps)])
    med = {f"{a} {b}".strip(" -"): {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "latencies_s"}
           for (a, b), rs in runs.items()}
    result = {"command": "python -m benchmarks.coldstart_tokenizer " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": started, "loadavg_end": os.getloadavg(), "export": str(export), "reps": args.reps,
              "median": med, "throughput": thr, "runs": {f"{a} {b}": rs for (a, b), rs in runs.items()}}
    from pathlib import Path

    results = Path(__file__).parent / "results"
    (results / "coldstart_tokenizer.json").write_text(json.dumps(result, indent=1) + "\n")
    (results / "coldstart_tokenizer.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return result


def markdown(res: dict) -> str:
    import statistics

    from .harness import machine_line

    m, med = res["machine"], res["median"]
    lines = [f"Machine: {machine_line(m)}; load average {m['loadavg_start'][0]:.1f} at the "
             f"start, {res['loadavg_end'][0]:.1f} at the end; tokenizers {m['versions']['tokenizers']}, onnxruntime "
             f"{m['versions']['onnxruntime']}. `{res['command']}`, medians of {res['reps']} fresh processes per row, "
             "interleaved.", "",
             "| cold start (import, load, embed one query) | before: tokenizer.json | after: tokenizer_unigram.npz | after / before |",
             "|---|---|---|---|"]
    for system, label in (("e5onnx-int8", "e5-onnx INT8, wall s"), ("e5onnx-tokenizer", "e5-onnx's tokenizer alone, wall s")):
        b, a = med[f"{system} before"], med[f"{system} after"]
        lines.append(f"| {label} | {b['total_s']:.3f} (import {b['import_s']:.3f}, load {b['load_s']:.3f}) | "
                     f"{a['total_s']:.3f} (import {a['import_s']:.3f}, load {a['load_s']:.3f}) | {a['total_s'] / b['total_s']:.2f}x |")
        lines.append(f"| {label.split(',')[0]}, CPU s (the process's own) | {b['cpu_s']:.3f} | {a['cpu_s']:.3f} | "
                     f"{a['cpu_s'] / b['cpu_s']:.2f}x |")
        lines.append(f"| {label.split(',')[0]}, peak RSS MB | {b['peak_rss_mb']:.0f} | {a['peak_rss_mb']:.0f} | "
                     f"{a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x |")
    lines.append(f"| bare interpreter, wall s / CPU s / peak MB | {med['python']['total_s']:.3f} / {med['python']['cpu_s']:.3f} / "
                 f"{med['python']['peak_rss_mb']:.0f} | | |")
    lines += ["", "| probe (fresh process, after importing numpy, tokenizers, e5_onnx) | wall s | CPU s | RSS added MB | peak RSS MB |",
              "|---|---|---|---|---|"]
    for p in PROBES:
        r = med[f"probe {p}"]
        lines.append(f"| {p} | {r['wall_s']:.3f} | {r['cpu_s']:.3f} | {r['rss_after_mb'] - r['rss_before_mb']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    thr = res["throughput"]
    n = thr["texts_per_rep"]
    tok = {k: statistics.median(thr[k]["tokenise_cpu_s"]) / n * 1e6 for k in ("before", "after")}
    enc = {k: n / statistics.median(thr[k]["encode_s"]) for k in ("before", "after")}
    lines += ["", f"Throughput, one process, {n} new shuffled Tatoeba + STSb texts per repetition (the most varied "
              "words, so the fewest cache hits):", "",
              "| | before | after | after / before |", "|---|---|---|---|",
              f"| tokenise, CPU us per text | {tok['before']:.0f} | {tok['after']:.0f} | {tok['after'] / tok['before']:.2f}x |",
              f"| `encode` (INT8), texts/s | {enc['before']:.1f} | {enc['after']:.1f} | {enc['after'] / enc['before']:.2f}x |"]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--probe":
        probe_child(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 6 and sys.argv[1] == "--throughput":
        throughput_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()

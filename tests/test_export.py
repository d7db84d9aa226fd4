"""The exporter end to end on tiny models: CLI, offline guarantee, manifest, parity gate, hub wiring."""
import json
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from e5_onnx import Embedder
from e5_onnx.manifest import sha256_file
from export.parity import INT8_MEAN_COSINE, INT8_MIN_COSINE
from tests.conftest import ROOT

SENTENCES = [
    "query: how much protein should a female eat",
    "passage: the summit is the highest point of a mountain",
    "Москва — столица России.", "南瓜的家常做法", "", "a",
    "passage: " + "the quick brown fox jumps over the lazy dog " * 40,  # > 64 tokens: truncated
]


def network_guard(tmp_path):
    """A sitecustomize that records (and refuses) every socket connection or DNS lookup."""
    guard = Path(tempfile.mkdtemp(prefix="guard-", dir=tmp_path))
    log = guard / "network-attempts.log"
    (guard / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import socket
        def _refuse(*args, **kwargs):
            with open({str(log)!r}, "a") as f:
                f.write(repr(args[:2]) + "\\n")
            raise OSError("network access during a test")
        socket.socket.connect = _refuse
        socket.socket.connect_ex = _refuse
        socket.getaddrinfo = _refuse
        socket.create_connection = _refuse
    """))
    return guard, log


def run_export(args, tmp_path, extra_env=None):
    guard, log = network_guard(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = os.pathsep.join([str(guard), str(ROOT)])
    env.update(extra_env or {})
    proc = subprocess.run([sys.executable, "-m", "export", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    attempts = log.read_text() if log.exists() else ""
    return proc, attempts


def torch_reference(source, texts, limit):
    tok = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source).eval()
    with torch.inference_mode():
        enc = tok(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()


def test_cli_export_of_a_local_directory_never_touches_the_network(tiny_sources, tmp_path):
    out = tmp_path / "out"
    proc, attempts = run_export(["--source", str(tiny_sources["unigram-bert"]), "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert attempts == "", f"network was attempted:\n{attempts}"
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "model_int8.onnx", "tokenizer.json", "manifest.json", "reference.npz"} <= names
    for graph in ("model.onnx", "model_int8.onnx"):  # weights apart, readable by any user (a service's own)
        weights = out / f"{graph}.data"
        assert stat.S_IMODE(weights.stat().st_mode) & 0o044 == 0o044, graph
        inline = [t.name for t in onnx.load(str(out / graph), load_external_data=False).graph.initializer
                  if t.data_location != onnx.TensorProto.EXTERNAL and len(t.raw_data) >= 1024]
        assert inline == [], f"{graph}: weights left in the graph file: {inline}"

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == {"kind": "local", "path": str(tiny_sources["unigram-bert"].resolve())}
    for name, entry in manifest["files"].items():
        assert sha256_file(out / name) == entry["sha256"], name
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert manifest["export"]["fusions"]["MultiHeadAttention"] == 2  # both layers fused
    ops = manifest["export"]["int8_graph_ops"]
    # Q, K, V (one QAttention) and FFN in: smoothed, fixed activation ranges; attention output and
    # FFN out: per-row activation scales; every INT8 GEMM one fused kernel (export/fuse.py)
    assert ops["QAttention"] == 2 and "MultiHeadAttention" not in ops and "MatMulInteger" not in ops
    assert ops["MatMulIntegerToFloat"] == 2 * 3
    assert ops["QuantizeLinear"] == 2 * 4 and "DynamicQuantizeLinear" not in ops and "MatMulNBits" not in ops
    assert ops["Mul"] >= 2 * 2  # smoothing of the two LayerNorm outputs per layer (attention output: folded into V)
    assert ops["LayerNormalization"] == 2 * 2 and "SkipLayerNormalization" not in ops
    assert manifest["export"]["calibration_texts"] >= 50
    assert ops["QEmbedLayerNormalization"] == 1 and "MatMul" not in ops
    assert {"torch", "optimum", "onnxruntime", "tokenizers"} <= set(manifest["versions"])
    par = manifest["parity"]
    assert par["torch_vs_fp32"]["cosine_min"] >= 0.99999
    assert par["torch_vs_int8"]["cosine_min"] >= INT8_MIN_COSINE and par["torch_vs_int8"]["cosine_mean"] >= INT8_MEAN_COSINE


@pytest.mark.parametrize("family", ["wordpiece-bert", "unigram-bert", "unigram-xlmr"])
def test_runtime_matches_torch_for_each_family(tiny_sources, tiny_exports, family):
    manifest = json.loads((tiny_exports[family] / "manifest.json").read_text())
    assert manifest["max_length"] == 64  # the XLM-R layout has 66 position rows but holds 64 tokens
    assert manifest["position_offset"] == (2 if family == "unigram-xlmr" else 0)
    ref = torch_reference(tiny_sources[family], SENTENCES, 64)
    fp32 = Embedder(tiny_exports[family], variant="fp32").encode(SENTENCES)
    int8 = Embedder(tiny_exports[family]).encode(SENTENCES)
    assert np.sum(ref * fp32, axis=1).min() >= 0.99999
    cos8 = np.sum(ref * int8, axis=1)
    assert cos8.min() >= INT8_MIN_COSINE and cos8.mean() >= INT8_MEAN_COSINE


def test_parity_failure_exits_nonzero_names_the_text_and_leaves_nothing(tiny_sources, tmp_path):
    out = tmp_path / "out"
    proc, _ = run_export(["--source", str(tiny_sources["wordpiece-bert"]), "--out", str(out),
                          "--int8-min-cosine", "1.000001"], tmp_path)
    assert proc.returncode == 1
    assert "parity check failed" in proc.stderr and "torch_vs_int8: cosine" in proc.stderr
    assert "for text #" in proc.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_unpinned_model_is_refused_before_any_download(tmp_path):
    proc, attempts = run_export(["e5-small-unsupervised", "--out", str(tmp_path / "x")], tmp_path)
    assert proc.returncode == 1
    assert "unpinned" in proc.stderr and "--allow-unpinned" in proc.stderr
    assert attempts == ""


def test_bad_source_and_unknown_name_are_clear_errors(tmp_path):
    proc, _ = run_export(["--source", str(tmp_path), "--out", str(tmp_path / "o")], tmp_path)
    assert proc.returncode == 1 and "no config.json" in proc.stderr
    proc, _ = run_export(["e5-large-nonexistent", "--out", str(tmp_path / "o")], tmp_path)
    assert proc.returncode != 0 and "unknown model name 'e5-large-nonexistent'" in proc.stderr


def test_refuses_to_replace_a_directory_that_is_not_an_export(tiny_sources, tmp_path):
    from export.build import ExportError, export_model

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an e5-onnx export"):
        export_model(tiny_sources["wordpiece-bert"], precious, source={"kind": "local"}, log=lambda *_: None)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_named_export_fetches_the_pinned_revision_into_the_cache(tiny_sources, tmp_path, monkeypatch):
    """The hub path with huggingface_hub replaced by a local stand-in: the pinned revision is asked
    for, the export lands in the cache, and Embedder('e5-small-v2') finds it."""
    import huggingface_hub

    from e5_onnx.manifest import ModelDirError
    from export.__main__ import main

    calls = []
    src = tiny_sources["wordpiece-bert"]

    class FakeApi:
        def list_repo_files(self, repo, revision=None):
            calls.append(("list", repo, revision))
            return sorted(p.name for p in src.iterdir())

    def fake_snapshot_download(repo, revision=None, allow_patterns=None):
        calls.append(("download", repo, revision, tuple(allow_patterns)))
        return str(src)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("E5_ONNX_CACHE", str(tmp_path / "cache"))
    assert main(["e5-small-v2"]) == 0

    pin = "dca8b1a9dae0d4575df2bf423a5edb485a431236"
    assert calls[0] == ("list", "intfloat/e5-small-v2", pin)
    assert calls[1][:3] == ("download", "intfloat/e5-small-v2", pin)
    assert "model.safetensors" in calls[1][3] and "config.json" in calls[1][3]
    manifest = json.loads((tmp_path / "cache" / "e5-small-v2" / "manifest.json").read_text())
    assert manifest["source"]["revision"] == pin and manifest["name"] == "e5-small-v2"
    assert Embedder("e5-small-v2").encode(["query: hi"]).shape == (1, 64)

    manifest["source"]["revision"] = "0" * 40  # an export of another revision is stale
    (tmp_path / "cache" / "e5-small-v2" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirError, match="re-export it with: e5-onnx export e5-small-v2"):
        Embedder("e5-small-v2")


def test_lock_refresh_records_upstream_hashes(tmp_path, monkeypatch):
    """`python -m export lock` with the hub replaced by a stand-in: LFS files take the hub's sha256,
    small files are downloaded and hashed, unpinned models get pinned only when asked."""
    import hashlib
    from types import SimpleNamespace

    import huggingface_hub

    from export.fetch import refresh_lock

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    small = hashlib.sha256(b"{}").hexdigest()

    class FakeApi:
        def model_info(self, repo, revision=None, files_metadata=False):
            files = ["config.json", "tokenizer.json", "model.safetensors", "pytorch_model.bin", "README.md"]
            siblings = [SimpleNamespace(rfilename=f, lfs=SimpleNamespace(sha256="ab" * 32) if "model" in f else None)
                        for f in files]
            return SimpleNamespace(sha="f" * 40 if revision is None else revision, siblings=siblings)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, f, revision=None: str(tmp_path / f))
    lock = tmp_path / "models.lock"
    lock.write_text((ROOT / "models.lock").read_text())
    refresh_lock(lock, ["e5-small-v2", "e5-small-unsupervised"], update=False)
    doc = json.loads(lock.read_text())["models"]
    assert doc["e5-small-v2"]["revision"] == "dca8b1a9dae0d4575df2bf423a5edb485a431236"
    assert doc["e5-small-v2"]["files"] == {"config.json": small, "tokenizer.json": small, "model.safetensors": "ab" * 32}
    assert doc["e5-small-unsupervised"]["revision"] == "f" * 40  # resolved from main, now pinned
    assert doc["e5-small"]["files"] == {}  # not asked for: untouched

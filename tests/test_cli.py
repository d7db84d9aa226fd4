"""`e5-onnx embed`: lines or JSONL in, .npy or JSONL out, same numbers as the Python API."""
import json
import subprocess
import sys

import numpy as np
import pytest

from e5_onnx import Embedder

TEXTS = ["how much protein should a female eat", "summit define", "", "Москва"]


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "e5_onnx.cli", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_lines_to_npy_with_query_prefix(tiny_exports, tmp_path):
    d = tiny_exports["unigram-bert"]
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n")
    proc = run_cli("embed", tmp_path / "in.txt", "-o", tmp_path / "out.npy", "-m", d, "--prefix", "query")
    assert proc.returncode == 0, proc.stderr
    got = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(got, Embedder(d).encode_queries(TEXTS), atol=1e-6)


def test_jsonl_to_jsonl_keeps_order_and_accepts_objects(tiny_exports, tmp_path):
    d = tiny_exports["wordpiece-bert"]
    lines = [json.dumps(TEXTS[0]), json.dumps({"text": TEXTS[1], "id": 7}), json.dumps(TEXTS[3])]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    proc = run_cli("embed", tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl", "-m", d, "--variant", "fp32")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    want = Embedder(d, variant="fp32").encode([TEXTS[0], TEXTS[1], TEXTS[3]])
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), want, atol=1e-6)


def test_stdin_and_env_configured_model(tiny_exports, tmp_path, monkeypatch):
    d = tiny_exports["wordpiece-bert"]
    monkeypatch.setenv("E5_ONNX_MODEL", str(d))
    proc = run_cli("embed", "-", "-o", "-", stdin="hello\nworld\n")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2


@pytest.mark.parametrize("line", ['{"txt": "x"}', "42"])
def test_bad_jsonl_line_is_reported_with_its_line_number(tiny_exports, tmp_path, line):
    (tmp_path / "bad.jsonl").write_text('"ok"\n' + line + "\n")
    proc = run_cli("embed", tmp_path / "bad.jsonl", "-o", tmp_path / "o.npy", "-m", tiny_exports["wordpiece-bert"])
    assert proc.returncode != 0 and "bad.jsonl:2" in proc.stderr

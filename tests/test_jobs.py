"""Corpus embedding: Embedder.embed_stream / count_tokens / long_text="window", and the
`e5-onnx embed` job's formats, progress and errors (one line on stderr, never a traceback)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from e5_onnx import Embedder
from e5_onnx.pool import mean_pool_normalize
from e5_onnx.tokenize import window_overlap

WORDS = "the of and to in is was for on that with as by at from it an be this which".split()


def texts(n, seed=0, long_every=0, max_words=12):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = 200 if long_every and i % long_every == 0 else int(rng.integers(0, max_words))
        out.append(" ".join(rng.choice(WORDS, size=k)))
    return out


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "e5_onnx.cli", "embed", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def model_dir(tiny_exports):
    return tiny_exports["wordpiece-bert"]


@pytest.fixture(scope="module")
def fp32(model_dir):
    return Embedder(model_dir, variant="fp32")


def test_embed_stream_is_lazy_ordered_and_batched_like_encode(model_dir):
    model = Embedder(model_dir)  # INT8: chunks must batch exactly as encode does, to the bit
    corpus = texts(50, long_every=9)
    pulled = []

    def source():
        for t in corpus:
            pulled.append(t)
            yield t

    stream = model.embed_stream(source(), chunk_size=16)
    first = next(stream)
    assert first.shape == (16, model.dim) and len(pulled) == 16  # memory bounded by the chunk, not the corpus
    chunks = [first, *stream]
    assert [len(c) for c in chunks] == [16, 16, 16, 2]
    for k, chunk in enumerate(chunks):
        np.testing.assert_array_equal(chunk, model.encode(corpus[16 * k : 16 * (k + 1)]))


def test_embed_stream_names_a_bad_item_by_its_stream_index(fp32):
    with pytest.raises(TypeError, match=r"texts\[5\]"):
        list(fp32.embed_stream(["a"] * 5 + [7], chunk_size=4))
    with pytest.raises(TypeError):
        next(fp32.embed_stream("one string"))


def test_count_tokens_after_truncation(model_dir, fp32):
    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    raw.no_truncation()
    raw.no_padding()
    corpus = ["", "summit define", " ".join(["protein"] * 300)]
    full = [len(raw.encode(t).ids) for t in corpus]
    counts = fp32.count_tokens(corpus)
    assert full[2] > fp32.max_length
    assert counts.tokens.tolist() == [full[0], full[1], fp32.max_length]
    assert counts.over_limit.tolist() == [False, False, True]


def reference_windows(model, raw, text):
    """Independent of tokenizers' overflow: split the content ids by hand into windows of
    max_length - 2 that overlap by window_overlap(max_length), run each alone, average."""
    specials = raw.encode("").ids  # [CLS], [SEP]
    content = raw.encode(text, add_special_tokens=False).ids
    body, overlap = model.max_length - len(specials), window_overlap(model.max_length)
    vectors, start = [], 0
    while True:
        ids = np.array([[specials[0], *content[start : start + body], specials[1]]], dtype=np.int64)
        mask = np.ones_like(ids)
        vectors.append(mean_pool_normalize(model.session.run(ids, mask), mask)[0])
        if start + body >= len(content):
            break
        start += body - overlap
    mean = np.mean(vectors, axis=0)
    return mean / np.linalg.norm(mean), len(vectors)


def test_window_mode_averages_every_window(model_dir, fp32):
    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    raw.no_truncation()
    raw.no_padding()
    long_text = " ".join(texts(1, seed=3, long_every=1)[0].split()[:170])
    short = "how much protein should a female eat"
    got = fp32.encode([short, long_text], long_text="window")
    want, n_windows = reference_windows(fp32, raw, long_text)
    assert n_windows >= 3
    assert float(got[1] @ want) >= 0.99999
    np.testing.assert_allclose(got[0], fp32.encode([short])[0], atol=1e-6)  # short texts: one window
    truncated = fp32.encode([long_text])[0]
    assert float(truncated @ want) < 0.9999  # the windows past the limit do change the vector
    windowed = Embedder(model_dir, variant="fp32", long_text="window")
    np.testing.assert_allclose(windowed.encode([long_text])[0], got[1], atol=1e-6)
    assert windowed.count_tokens([long_text]).tokens[0] > fp32.max_length * (n_windows - 1)
    with pytest.raises(ValueError, match="long_text"):
        Embedder(model_dir, long_text="split")


def test_lines_to_npy_equals_encode_across_chunks(model_dir, tmp_path):
    corpus = texts(300, long_every=25)
    (tmp_path / "in.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    proc = run_cli(tmp_path / "in.txt", "-o", tmp_path / "out.npy", "-m", model_dir, "--chunk-size", "64",
                   "--prefix", "passage")
    assert proc.returncode == 0, proc.stderr
    model = Embedder(model_dir)
    want = np.concatenate([model.encode_passages(corpus[i : i + 64]) for i in range(0, 300, 64)])
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), want)
    summary = proc.stderr.strip().splitlines()
    assert len(summary) == 1 and "embedded 300 texts" in summary[0] and "12 truncated" in summary[0]
    assert not (tmp_path / "out.npy.e5-onnx-job").exists()


def test_jsonl_with_ids_to_parquet(model_dir, fp32, tmp_path):
    corpus = texts(40, seed=1)
    lines = [json.dumps({"id": f"doc-{i}", "body": t}) for i, t in enumerate(corpus)]
    lines.insert(7, "")  # blank lines are skipped
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = run_cli(tmp_path / "in.jsonl", "-o", tmp_path / "out.parquet", "-m", model_dir, "--variant", "fp32",
                   "--text-column", "body", "--chunk-size", "16")
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), fp32.dim)
    assert table.column("id").to_pylist() == [f"doc-{i}" for i in range(40)]
    assert table.column("index").to_pylist() == list(range(40))
    got = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(got, fp32.encode(corpus), atol=1e-5)


def test_parquet_to_jsonl_keeps_ids(model_dir, fp32, tmp_path):
    corpus = texts(30, seed=2)
    pq.write_table(pa.table({"key": list(range(100, 130)), "text": corpus, "other": [1.0] * 30}),
                   tmp_path / "in.parquet", row_group_size=7)
    proc = run_cli(tmp_path / "in.parquet", "-o", tmp_path / "out.jsonl", "-m", model_dir, "--variant", "fp32",
                   "--id-column", "key", "--progress")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(100, 130)) and [r["index"] for r in rows] == list(range(30))
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), fp32.encode(corpus), atol=1e-5)


def test_progress_reports_rate_eta_and_truncated(model_dir, tmp_path):
    # --progress on a pipe writes a line every 10 s; the 100 % line of a short job is the summary.
    (tmp_path / "in.txt").write_text("\n".join(texts(100, long_every=10)) + "\n", encoding="utf-8")
    proc = run_cli(tmp_path / "in.txt", "-o", tmp_path / "o.jsonl", "-m", model_dir, "--progress")
    assert proc.returncode == 0, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "embedded 100 texts" in last and "tokens/s" in last and "10 truncated at 64 tokens" in last


def write(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


@pytest.mark.parametrize("case", ["missing", "directory", "utf8", "json", "json-field", "column", "not-parquet"])
def test_input_problems_are_one_line(model_dir, tmp_path, case):
    path, out, want = {
        "missing": (tmp_path / "nope.txt", "o.npy", "cannot read input"),
        "directory": (tmp_path, "o.npy", "cannot read input"),
        "utf8": (write(tmp_path / "in.txt", b"fine\nalso fine\nbad \xff byte\n"), "o.npy", "in.txt:3: not valid UTF-8"),
        "json": (write(tmp_path / "in.jsonl", '{"text": "a"}\n{"text": "b"\n'), "o.npy", "in.jsonl:2: not valid JSON"),
        "json-field": (write(tmp_path / "f.jsonl", '"a"\n\n{"txt": "b"}\n'), "o.npy", 'f.jsonl:3: expected a JSON string'),
        "column": (tmp_path / "in.parquet", "o.npy", "no column 'text' (columns: body)"),
        "not-parquet": (write(tmp_path / "t.parquet", "just text"), "o.npy", "not a readable Parquet file"),
    }[case]
    if case == "column":
        pq.write_table(pa.table({"body": ["x"]}), path)
    proc = run_cli(path, "-o", tmp_path / out, "-m", model_dir)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert want in proc.stderr
    assert not (tmp_path / out).exists() and not (tmp_path / f"{out}.e5-onnx-job").exists()


@pytest.mark.parametrize("out", ["missing-dir/o.npy", "file/o.npy", "o.csv", "."])
def test_unwritable_output_is_refused_before_the_model_is_even_loaded(tmp_path, out):
    (tmp_path / "in.txt").write_text("a\nb\n")
    (tmp_path / "file").write_text("a file, not a directory")
    proc = run_cli(tmp_path / "in.txt", "-o", tmp_path / out, "-m", tmp_path / "no-such-model")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "output" in proc.stderr and "no-such-model" not in proc.stderr  # checked first


def test_unknown_model_is_one_line(tmp_path):
    (tmp_path / "in.txt").write_text("a\n")
    for model in ("no-such-model-name", tmp_path / "missing-export"):
        proc = run_cli(tmp_path / "in.txt", "-o", tmp_path / "o.npy", "-m", model)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert str(model) in proc.stderr


@pytest.mark.parametrize("precision,out", [("int8", "o.npy"), ("uint8", "o.parquet"), ("binary", "o.jsonl"),
                                           ("ubinary", "o.parquet"), ("binary-centred", "o.npy"),
                                           ("ubinary-centred", "o.jsonl"), ("ubinary-centred", "o.parquet")])
def test_compact_precisions_in_every_output_format(model_dir, tmp_path, precision, out):
    corpus = texts(7, seed=3)
    (tmp_path / "in.txt").write_text("\n".join(corpus) + "\n")
    proc = run_cli(tmp_path / "in.txt", "-o", tmp_path / out, "-m", model_dir, "--precision", precision,
                   "--chunk-size", "3")
    assert proc.returncode == 0, proc.stderr
    want = Embedder(model_dir).encode(corpus, precision=precision)
    if out.endswith(".npy"):
        got = np.load(tmp_path / out)
    elif out.endswith(".jsonl"):
        got = np.array([json.loads(line)["embedding"] for line in open(tmp_path / out)], dtype=want.dtype)
    else:
        table = pq.read_table(tmp_path / out)
        kind = table.schema.field("embedding").type
        assert kind.list_size == want.shape[1] and kind.value_type == pa.from_numpy_dtype(want.dtype)
        assert table.schema.metadata[b"e5_onnx.precision"] == precision.encode()
        got = np.array(table.column("embedding").to_pylist(), dtype=want.dtype)
    assert got.dtype == want.dtype and np.array_equal(got, want)
    assert f"(7 x {Embedder(model_dir).dim} {precision})" in proc.stderr  # dims, stored as {precision}


def test_bad_precision_is_one_line(model_dir, tmp_path):
    (tmp_path / "in.txt").write_text("a\n")
    old = tmp_path / "old-export"  # made before compact vectors: no ranges in its manifest
    shutil.copytree(model_dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["compact"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    for args, env, want in [(["--precision", "int4"], {}, "unknown --precision 'int4'; choose one of float32, int8"),
                            ([], {"E5_ONNX_PRECISION": "fp16"}, "unknown --precision 'fp16'"),
                            (["--precision", "int8", "-m", old], {}, "records no int8/uint8 ranges"),
                            (["--precision", "binary-centred", "-m", old], {}, "records no centre"),
                            (["--precision", "centred"], {}, "choose one of float32, int8, uint8, binary, ubinary, "
                                                             "binary-centred, ubinary-centred"),
                            (["--precision", "binary", "--ray"], {}, "not supported with --ray")]:
        proc = subprocess.run([sys.executable, "-m", "e5_onnx.cli", "embed", str(tmp_path / "in.txt"), "-o",
                               str(tmp_path / "o.npy"), "-m", str(model_dir), *map(str, args)],
                              capture_output=True, text=True, timeout=300, env={**os.environ, **env})
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert want in proc.stderr
        assert not (tmp_path / "o.npy").exists() and not (tmp_path / "o.npy.e5-onnx-job").exists()

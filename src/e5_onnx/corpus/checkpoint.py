"""Resumable jobs: each finished chunk is saved atomically beside the output, so a job killed at
any point (SIGKILL, power loss) picks up at the first missing chunk when run again.

Layout of `<output>.e5-onnx-job/`:
  job.json                the job's settings and the model's file hashes (refused if they change)
  00000012.npy            chunk 12's vectors, then
  00000012.json           its rows, ids, token counts and the sha256 of its input records;
                          written last, so its presence is what marks the chunk done.
Every file is written to a temporary name, fsynced, renamed, and the directory fsynced. A
resumed job re-reads the input and compares every finished chunk's digest before embedding
anything new: a changed input or model is refused, never mixed into one output.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

SUFFIX = ".e5-onnx-job"


def records_digest(records: Sequence[tuple[Any, str]]) -> str:
    """sha256 of a chunk's (id, text) records, as they were read."""
    h = hashlib.sha256()
    for id_, text in records:
        h.update(json.dumps([id_, text], ensure_ascii=False).encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpoint:
    def __init__(self, output: Path, settings: dict, restart: bool = False) -> None:
        """Open the job directory for `output`, or create it. `settings` holds everything the
        vectors depend on (model file hashes, variant, prefix, chunk size, ...)."""
        self.dir = output.with_name(output.name + SUFFIX)
        if restart:
            shutil.rmtree(self.dir, ignore_errors=True)
        state = self.dir / "job.json"
        if state.is_file():
            self._check_settings(json.loads(state.read_text(encoding="utf-8")), settings)
        else:
            self.dir.mkdir(exist_ok=True)
            _write_atomic(state, json.dumps(settings, indent=1, sort_keys=True).encode())
            fsync_dir(self.dir.parent)
        for leftover in self.dir.glob("*.tmp"):  # a write cut short by the kill
            leftover.unlink()
        self.done = 0  # finished chunks form a prefix: the job writes them in order
        while self._meta_path(self.done).is_file():
            self.done += 1

    def _check_settings(self, saved: dict, settings: dict) -> None:
        changed = sorted(k for k in saved.keys() | settings.keys() if saved.get(k) != settings.get(k))
        if changed:
            what = "; ".join(f"{k}: {saved.get(k)!r} then, {settings.get(k)!r} now" for k in changed)
            raise ValueError(f"{self.dir} holds a checkpoint of a different job ({what}); "
                             "run with the same model and arguments to resume, or pass --restart to start over")

    def _meta_path(self, k: int) -> Path:
        return self.dir / f"{k:08d}.json"

    def meta(self, k: int) -> dict:
        return json.loads(self._meta_path(k).read_text(encoding="utf-8"))

    def check_input(self, k: int, first_row: int, digest: str) -> dict:
        """The saved metadata of finished chunk k, after checking its input is unchanged."""
        meta = self.meta(k)
        if meta["input_sha256"] != digest:
            raise ValueError(f"the input changed since the checkpoint in {self.dir} was made (rows {first_row}-"
                             f"{first_row + meta['rows'] - 1} differ); pass --restart to start over on the new input")
        return meta

    def check_complete(self, chunks_read: int) -> None:
        if chunks_read < self.done:
            raise ValueError(f"the input changed since the checkpoint in {self.dir} was made (it ends after "
                             f"{chunks_read} chunks; {self.done} were done); pass --restart to start over")

    def save(self, k: int, vectors: np.ndarray, meta: dict) -> None:
        vectors_path = self.dir / f"{k:08d}.npy"
        tmp = vectors_path.with_name(vectors_path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(vectors))  # float32, or the compact precision's dtype
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, vectors_path)
        _write_atomic(self._meta_path(k), json.dumps(meta, ensure_ascii=False).encode())
        fsync_dir(self.dir)
        self.done = k + 1

    def chunks(self) -> Iterator[tuple[np.ndarray, list]]:
        """Every finished chunk in order: (vectors, ids)."""
        for k in range(self.done):
            yield np.load(self.dir / f"{k:08d}.npy"), self.meta(k)["ids"]

    def remove(self) -> None:
        shutil.rmtree(self.dir)

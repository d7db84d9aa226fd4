"""Pruning a pip --target tree down to what inference imports, and reading ELF headers.

Every removal is measured and reported with its bytes, so the list stays honest as versions
move. Whole distributions outside RUNTIME_DISTRIBUTIONS go (tokenizers declares
huggingface_hub, which pulls hf-xet, httpx and more; `Tokenizer.from_file` imports none of them;
onnxruntime declares protobuf, flatbuffers and packaging for its build-time tools), then the
build-time parts of the three that stay. A shared library is removed only if no ELF file
left in the tree lists it as DT_NEEDED.
"""
from __future__ import annotations

import importlib.metadata
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

RUNTIME_DISTRIBUTIONS = ("onnxruntime", "numpy", "tokenizers")

# (glob relative to the site directory, why inference does not need it)
FILE_RULES: tuple[tuple[str, str], ...] = (
    ("bin", "console scripts of the dropped packages"),
    ("onnxruntime/transformers", "onnxruntime's transformer optimizer (export time)"),
    ("onnxruntime/quantization", "onnxruntime's quantization tools (export time)"),
    ("onnxruntime/tools", "onnxruntime's model conversion tools"),
    ("onnxruntime/backend", "the ONNX backend-test API (imports onnx)"),
    ("onnxruntime/datasets", "sample models"),
    ("numpy/**/tests", "numpy's test suites"),
    ("numpy/f2py", "numpy's Fortran wrapper generator"),
    ("numpy/_core/include", "C headers for building numpy extensions"),
    ("numpy/_core/lib", "static npymath library and pkg-config files"),
    ("numpy/_pyinstaller", "PyInstaller hooks"),
    ("numpy/distutils", "numpy's build system (Python < 3.12 wheels)"),
    # numpy loads these on first attribute access (np.random, ...); neither `import numpy`,
    # onnxruntime, tokenizers nor e5_onnx touches them (sys.modules after a handler call)
    ("numpy/random", "np.random, lazily imported, never used by inference"),
    ("numpy/polynomial", "np.polynomial, lazily imported, never used by inference"),
    ("numpy/ma", "np.ma, lazily imported, never used by inference"),
    ("numpy/fft", "np.fft, lazily imported, never used by inference"),
    ("**/*.pyi", "type stubs"),
)
# Shared libraries shipped for C API users; removed only when nothing left links them.
UNLINKED_LIBRARY_RULES: tuple[tuple[str, str], ...] = (
    ("onnxruntime/capi/libonnxruntime.so.*", "onnxruntime's C API library: the Python extension does not link it"),
)

ELF_MACHINES = {3: "i386", 62: "x86_64", 183: "aarch64", 40: "arm"}


@dataclass(frozen=True)
class Removal:
    what: str
    why: str
    bytes: int
    files: int


def tree_bytes(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


def _remove(paths: list[Path]) -> tuple[int, int]:
    size = files = 0
    for path in paths:
        if not path.exists() and not path.is_symlink():
            continue
        size += tree_bytes(path)
        files += 1 if path.is_file() else sum(1 for p in path.rglob("*") if p.is_file())
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return size, files


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def drop_distributions(site: Path, keep: tuple[str, ...] = RUNTIME_DISTRIBUTIONS) -> list[Removal]:
    """Remove every installed distribution not in `keep`, file by file from its RECORD."""
    removals = []
    keep_names = {_canonical(k) for k in keep}
    for dist in sorted(importlib.metadata.distributions(path=[str(site)]), key=lambda d: _canonical(d.metadata["Name"])):
        name, version = dist.metadata["Name"], dist.version  # read before its METADATA file goes
        if _canonical(name) in keep_names:
            continue
        # RECORD lists the .dist-info files too; scripts outside the tree ("../bin") go with FILE_RULES
        size, files = _remove([Path(dist.locate_file(f)) for f in dist.files or [] if ".." not in Path(f).parts])
        removals.append(Removal(f"{name} {version}", "not imported by inference", size, files))
    _remove_empty_dirs(site)
    return removals


def prune_files(site: Path) -> list[Removal]:
    removals = []
    for pattern, why in FILE_RULES:
        size, files = _remove(sorted(site.glob(pattern), reverse=True))
        if files:
            removals.append(Removal(pattern, why, size, files))
    for pattern, why in UNLINKED_LIBRARY_RULES:
        candidates = sorted(site.glob(pattern))
        if not candidates:
            continue
        needed = {lib for elf in elf_files(site) if elf not in candidates for lib in elf_needed(elf)}
        unlinked = [c for c in candidates if c.name not in needed and not any(c.name.startswith(n) for n in needed)]
        size, files = _remove(unlinked)
        if files:
            removals.append(Removal(pattern, why, size, files))
    _remove_empty_dirs(site)
    return removals


def _remove_empty_dirs(root: Path) -> None:
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


# --- ELF: which CPU a native library is for, and which libraries it links -------------------

def elf_header(path: Path) -> bytes | None:
    with open(path, "rb") as f:
        head = f.read(64)
    return head if head[:4] == b"\x7fELF" and len(head) == 64 else None


def elf_machine(path: Path) -> str | None:
    """'x86_64', 'aarch64', ... from e_machine, or None if `path` is not an ELF file."""
    head = elf_header(path)
    if head is None:
        return None
    endian = "<" if head[5] == 1 else ">"
    (machine,) = struct.unpack_from(endian + "H", head, 18)
    return ELF_MACHINES.get(machine, f"e_machine {machine}")


def elf_files(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and elf_header(p) is not None]


def elf_needed(path: Path) -> list[str]:
    """DT_NEEDED entries of a 64-bit little-endian ELF (empty for anything else)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    loads, dynamic = [], None
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 1:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return []
    entries = [struct.unpack_from("<qQ", data, dynamic[0] + i) for i in range(0, dynamic[1], 16)]
    strtab = next((v for tag, v in entries if tag == 5), None)
    offset = next((off + strtab - va for va, off, size in loads if strtab is not None and va <= strtab < va + size), None)
    if offset is None:
        return []
    names = []
    for tag, value in entries:
        if tag == 0:
            break
        if tag == 1:
            start = offset + value
            names.append(data[start:data.index(b"\0", start)].decode())
    return names

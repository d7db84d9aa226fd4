"""Which engine runs the graph: onnxruntime (the runtime's own, every variant) or OpenVINO (an
optional extra, the fp32 graph at bf16 or f32), and the variant each defaults to.

"auto" takes OpenVINO at bf16 where it is installed and the CPU has AMX (measured there at
1.3-1.8x onnxruntime INT8's batch throughput, though slower for one short query: docs/benchmarks.md,
"The fastest CPU engines side by side"), onnxruntime INT8 everywhere else (on an AVX2-only AMD
EPYC, OpenVINO's f32 measured 0.75-0.97x INT8's batch throughput and 2.8-3.7x its single-query p50).
The OpenVINO backend's own default is bf16 where the CPU has it, f32 elsewhere.
"""
from __future__ import annotations

import os
import platform
from importlib.util import find_spec
from pathlib import Path

BACKENDS = ("onnxruntime", "openvino", "auto")
VARIANTS = {"onnxruntime": ("int8", "fp32"), "openvino": ("bf16", "fp32")}
DEFAULT_VARIANT = {"onnxruntime": "int8", "openvino": "bf16"}
ENV = "E5_ONNX_BACKEND"  # the backend when none is passed: every surface (server, Lambda, jobs, Ray) reads it


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# CPU flags with which OpenVINO runs bf16 (its default there; f32 elsewhere)
BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
# CPU flags with which onnxruntime multiplies uint8 by int8 exactly (vpdpbusd, AMX tiles)
EXACT_U8S8 = {"avx512_vnni", "avx_vnni", "amx_int8"}


def int8_saturates(flags: set[str] | None = None, machine: str | None = None) -> bool:
    """Whether onnxruntime's U8S8 kernels clip here: on x86 with AVX2 but no VNNI / AMX they add
    pairs of u8 x s8 products in a saturating int16 (vpmaddubsw; export/u8u8.py). Such a CPU runs
    an export's U8U8 INT8 graph instead. An x86 CPU whose flags cannot be read counts as one."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False  # ARM: udot / sdot and the NEON fallbacks are exact
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return True
    return "avx2" in flags and not flags & EXACT_U8S8


def resolve(backend: str | None, variant: str | None) -> tuple[str, str]:
    """(backend, variant) to load, from what the caller asked (None: $E5_ONNX_BACKEND, else
    onnxruntime; the backend's default variant); a ValueError names what is not possible."""
    backend = backend or os.environ.get(ENV) or "onnxruntime"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        fast_bf16 = "amx_bf16" in cpu_flags() and find_spec("openvino") is not None
        wants_openvino = variant in (None, "bf16") and fast_bf16 or variant == "bf16"
        backend = "openvino" if wants_openvino else "onnxruntime"
    if variant is None:
        variant = DEFAULT_VARIANT[backend]
        if backend == "openvino" and not cpu_flags() & BF16_FLAGS:
            variant = "fp32"  # OpenVINO refuses bf16 where the CPU has none
    if variant not in VARIANTS[backend]:
        known = sorted({v for vs in VARIANTS.values() for v in vs})
        if variant not in known:
            raise ValueError(f"unknown variant {variant!r}; choose one of {known}")
        other = next(b for b, vs in VARIANTS.items() if variant in vs)
        raise ValueError(f"the {backend} backend does not run the {variant!r} variant; use backend={other!r}")
    return backend, variant


def open_session(backend: str, variant: str, graph: Path, threads: int | None, position_offset: int,
                 spinning: bool = True):
    """A session with run(input_ids, attention_mask) -> last hidden state, for a resolved pair."""
    if backend == "openvino":
        from .openvino_session import OpenVINOSession
        from .session import available_cores

        # `threads` cores as that many one-thread streams: calls side by side on one core each beat
        # one call on every core (docs/benchmarks.md); Embedder.encode runs its batches so.
        return OpenVINOSession(graph, variant, threads=1, streams=threads or available_cores(),
                               position_offset=position_offset)
    from .session import EncoderSession

    return EncoderSession(graph, threads=threads, position_offset=position_offset, spinning=spinning)

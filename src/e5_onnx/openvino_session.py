"""An OpenVINO session for the export's fp32 graph: the optional backend for CPUs where OpenVINO's
kernels are faster than onnxruntime's (bf16 on Intel AMX; benchmarks/bench.py measures it).

OpenVINO reads the export's `model.onnx` as it is (its ONNX frontend converts onnxruntime's
MultiHeadAttention, EmbedLayerNormalization and BiasGelu); it cannot read `model_int8.onnx`
(no rule for QEmbedLayerNormalization), so the variants here are "bf16" and "fp32": the same
fp32 graph run at OpenVINO's bf16 or f32 inference precision.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .session import check_inputs, graph_feed

INSTALL_HINT = "pip install 'e5-onnx[openvino]'"
PRECISION = {"bf16": "bf16", "fp32": "f32"}
PAD_MULTIPLE = 16  # sequence widths OpenVINO sees


def import_openvino():
    """openvino, or an ImportError that says what to install."""
    try:
        import openvino
    except ImportError as error:
        raise ImportError(f"the openvino backend needs the openvino package: {INSTALL_HINT}") from error
    return openvino


class OpenVINOSession:
    """Runs input_ids + attention_mask (and whatever else the graph declares: graph_feed) through OpenVINO.

    `threads` per call; `streams` calls may run side by side (one per caller thread: the server's
    workers, Embedder.encode's batches), each on its own infer request: a compiled model is
    shared, an infer request is not.
    """

    def __init__(self, model_path: Path, variant: str, threads: int, streams: int = 1, position_offset: int = 0,
                 *, pad_multiple: int = PAD_MULTIPLE, config: dict | None = None) -> None:
        if variant not in PRECISION:
            raise ValueError(f"the openvino backend runs the fp32 graph at 'bf16' or 'fp32' precision, not {variant!r} "
                             "(it cannot read onnxruntime's int8 graph); use backend='onnxruntime' for 'int8'")
        ov = import_openvino()
        core = ov.Core()
        if variant == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ValueError("this CPU has no bf16 support in OpenVINO; use variant='fp32' or backend='onnxruntime'")
        model = core.read_model(str(model_path))
        self.streams = streams
        self.threads_per_call = threads
        self.input_names = check_inputs([i.get_any_name() for i in model.inputs])
        self.position_offset = position_offset
        self.pad_multiple = pad_multiple  # benchmarks/ov_levers.py measures others
        self.compiled = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": PRECISION[variant],
            "INFERENCE_NUM_THREADS": threads * streams,
            "NUM_STREAMS": streams,
            # A pinned pool would fight other processes for the same cores (Ray actors, several servers).
            "ENABLE_CPU_PINNING": False,
            **(config or {}),  # more OpenVINO properties (benchmarks/ov_levers.py)
        })
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # "bf16" / "f32"
        self._local = threading.local()
        # One call here, on the loading thread: the first infer() of a process initialises statics
        # in OpenVINO's Python binding, and two threads making that first call at once deadlocked
        # (one waiting for the GIL inside a C++ static initialiser the other waits on; seen with
        # the server's two workers, openvino 2026.4).
        self.run(np.zeros((1, 2), dtype=np.int64), np.ones((1, 2), dtype=np.int64))

    def side_by_side(self) -> OpenVINOSession:
        """The session for `streams` callers at once: this one (each caller thread has its own infer request)."""
        return self

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(batch, seq) int64 ids and mask -> (batch, seq, dim) last hidden state.

        The sequence is padded to a multiple of pad_multiple (PAD_MULTIPLE; masked: the real tokens' states do not
        change): OpenVINO caches its kernels per input shape, and fewer shapes plus AMX-sized tiles
        gave 1.15-1.3x the throughput of exact widths on the bench's mix (docs/benchmarks.md).
        """
        width = input_ids.shape[1]
        extra = -width % self.pad_multiple
        if extra:
            input_ids = np.pad(input_ids, ((0, 0), (0, extra)))
            attention_mask = np.pad(attention_mask, ((0, 0), (0, extra)))
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        feed = graph_feed(self.input_names, input_ids, attention_mask, self.position_offset)
        # share_outputs=False: the array must outlive the next call on this request
        return request.infer(feed, share_inputs=True, share_outputs=False)[0][:, :width]

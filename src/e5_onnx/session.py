"""An onnxruntime session for an exported encoder, fed with whatever inputs its graph declares."""
from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def available_cores() -> int:
    """Cores this process may really use: its CPU affinity, lowered by a cgroup CPU quota.

    onnxruntime would size its pool to the host's cores; in a container limited to one CPU
    (or a Lambda with one vCPU) that oversubscribes it.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


# The export leaves residual Add + LayerNormalization unfused on purpose: onnxruntime's
# SkipLayerNormalization CPU kernel is slower (3.0 vs 0.67 ms on 32 x 96 x 384, 2 threads),
# and its load-time optimizer would otherwise fuse them back.
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def session_options(threads: int | None = None, spinning: bool = True) -> ort.SessionOptions:
    """e5-onnx's onnxruntime settings; benchmarks/session_settings.py measures each against its
    alternatives (README, "Session settings"): none measured better. Spinning and the CPU arena
    stay on as onnxruntime has them (spinning off saved 11-28% of the CPU per query and was up
    to 1.9x slower per query on a quiet machine; the arena off raised peak RSS), and the
    optimisation level stays full: below the extended level the quantized MatMul chains stay
    unfused, 413 kernels per call instead of 185."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Memory patterns are planned and cached per input shape; every (batch, length) here is
    # new, so they only add work and cached plans (benchmarks/memory_soak.py compares).
    options.enable_mem_pattern = False
    if not spinning:  # the server: a spinning worker takes the core its event loop needs (benchmarks/serve.py)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class EncoderSession:
    """Runs input_ids + attention_mask through the graph; token_type_ids / position_ids
    are supplied only if the graph asks for them.

    `threads` cores: each call runs on all of them, and `streams` (= threads) one-thread calls may
    run side by side on `side_by_side()`'s session, which is how Embedder.encode runs the batches
    of a call of several (one-thread calls do not wait for each other at every kernel;
    docs/benchmarks.md, "encode's batches side by side").
    """

    def __init__(self, model_path: Path, threads: int | None = None, position_offset: int = 0,
                 spinning: bool = True) -> None:
        self.model_path = model_path
        self.position_offset = position_offset  # XLM-R layout: positions start at padding_idx + 1
        self.spinning = spinning
        self.streams = threads or available_cores()
        self.session = ort.InferenceSession(str(model_path), session_options(self.streams, spinning),
                                            providers=["CPUExecutionProvider"],
                                            disabled_optimizers=DISABLED_OPTIMIZERS)
        self.input_names = check_inputs([i.name for i in self.session.get_inputs()])
        self.output_name = self.session.get_outputs()[0].name
        self._one_thread: EncoderSession | None = None
        self._lock = threading.Lock()

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(batch, seq) int64 ids and mask -> (batch, seq, dim) last hidden state."""
        feed = graph_feed(self.input_names, input_ids, attention_mask, self.position_offset)
        return self.session.run([self.output_name], feed)[0]

    @property
    def threads_per_call(self) -> int:
        """Each call here runs on every thread; side_by_side()'s session's on one."""
        return self.streams

    def side_by_side(self) -> EncoderSession:
        """A session whose calls run on one thread each, for `streams` callers at once: this one if
        it has one thread, else a one-thread session of the same graph, loaded on first use (its
        own packed weights: +29-32 MB RSS and 0.1 s for e5-small / multilingual-e5-small INT8)."""
        if self.streams == 1:
            return self
        with self._lock:
            if self._one_thread is None:
                self._one_thread = EncoderSession(self.model_path, 1, self.position_offset, self.spinning)
        return self._one_thread


GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def check_inputs(names: list[str]) -> list[str]:
    """The graph's input names, if this runtime knows how to feed every one of them."""
    if set(names) - set(GRAPH_INPUTS) or "input_ids" not in names:
        raise ValueError(f"unsupported ONNX graph inputs {names}; expected a BERT-style encoder")
    return names


def graph_feed(input_names: list[str], input_ids: np.ndarray, attention_mask: np.ndarray,
               position_offset: int = 0) -> dict[str, np.ndarray]:
    """The inputs the graph declares: token_type_ids are zeros, position_ids count from
    position_offset (XLM-R layout: padding_idx + 1)."""
    feed: dict[str, np.ndarray] = {"input_ids": input_ids}
    if "attention_mask" in input_names:
        feed["attention_mask"] = attention_mask
    if "token_type_ids" in input_names:
        feed["token_type_ids"] = np.zeros_like(input_ids)
    if "position_ids" in input_names:
        feed["position_ids"] = np.broadcast_to(
            np.arange(input_ids.shape[1], dtype=np.int64) + position_offset, input_ids.shape
        ).copy()
    return feed

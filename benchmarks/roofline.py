"""The INT8 matmul roofline: what the machine's int8 units reach on the model's FFN shapes, timed
beside the systems, and the share of it e5-onnx INT8 reaches.

numpy and onnxruntime are imported inside the functions, after bench.main has set the thread variables.
"""
from __future__ import annotations

import time
from typing import Callable

ROOFLINE = "int8-matmul"  # pseudo-system timed in the batch-32 rounds


def load_roofline(hidden: int, ffn: int, threads: int, rows: int = 4096,
                  repeats: int = 10) -> tuple[Callable[[], list[float]], int]:
    """One session holding a large uint8 x int8 MatMulInteger pair with the model's FFN shapes.

    Returns (run, ops per pair); run() times `repeats` pairs after two untimed ones. One session,
    not one per shape: a second session's spinning worker threads took a core from the first and
    halved the measured rate (388 vs ~730 GOPS, scratch A/B), and a single pair right after
    another system's run measured that system's spinning threads, not the machine.
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from e5_onnx.backends import int8_saturates

    # the kernel e5-onnx runs here: U8U8 where onnxruntime's U8S8 clips (x86 without VNNI; export/u8u8.py)
    weight_type = np.uint8 if int8_saturates() else np.int8
    rng = np.random.default_rng(0)
    nodes, inputs, outputs, weights, feed = [], [], [], [], {}
    for i, (k, n) in enumerate(((hidden, ffn), (ffn, hidden))):
        w = rng.integers(-127, 128, (k, n), dtype=np.int16)
        weights.append(numpy_helper.from_array((w + 128 if weight_type is np.uint8 else w).astype(weight_type), f"w{i}"))
        nodes.append(helper.make_node("MatMulInteger", [f"a{i}", f"w{i}"], [f"y{i}"]))
        inputs.append(helper.make_tensor_value_info(f"a{i}", TensorProto.UINT8, [rows, k]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.INT32, [rows, n]))
        feed[f"a{i}"] = rng.integers(0, 256, (rows, k), dtype=np.uint8)
    model = helper.make_model(helper.make_graph(nodes, "mm", inputs, outputs, weights),
                              opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def run() -> list[float]:
        times = []
        for i in range(repeats + 2):
            t = time.perf_counter()
            session.run(None, feed)
            if i >= 2:
                times.append(time.perf_counter() - t)
        return times
    return run, 2 * 2 * rows * hidden * ffn


def flops_per_token(config: dict, mean_len: float) -> float:
    """2 x matmul weights per layer x layers, plus attention scores and mix (4 x seq x hidden per layer)."""
    h, f, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return 2 * (4 * h * h + 2 * h * f) * layers + 4 * mean_len * h * layers


def roofline_result(systems: dict, cfg: dict, lengths: list[int], roof_ops: int, roof_times: list[float]) -> dict:
    """The roofline's rate and token ceiling, and the share of it e5-onnx INT8 (and 6x st-torch) reach."""
    import numpy as np

    mean_len = float(np.mean(lengths))
    gops = roof_ops / float(np.median(roof_times)) / 1e9
    fpt = flops_per_token(cfg, mean_len)
    h, f = cfg["hidden_size"], cfg["intermediate_size"]
    r = {"matmul_shapes": f"[4096,{h}]x[{h},{f}] + [4096,{f}]x[{f},{h}]", "runs_s": roof_times,
         "method": "one onnxruntime session, both MatMulIntegers, constant int8 weights (U8U8 where U8S8 clips: "
                   "x86 without VNNI); median of the timed pairs",
         "int8_gops": gops, "flops_per_token": fpt, "mean_tokens": mean_len,
         "ceiling_tokens_per_s": gops * 1e9 / fpt}
    got = systems.get("e5onnx-int8", {}).get("throughput", {}).get("32")
    if got:
        r["e5onnx_int8_b32_pct"] = 100 * got["tokens_per_s"] / r["ceiling_tokens_per_s"]
    base = systems.get("st-torch", {}).get("throughput", {}).get("32")
    if base:  # what the 6x goal asks of the matmul units
        r["six_x_st_torch_pct"] = 100 * 6 * base["tokens_per_s"] / r["ceiling_tokens_per_s"]
    return r


def load_bf16_roofline(hidden: int, ffn: int, threads: int, rows: int = 4096,
                       repeats: int = 10) -> tuple[Callable[[], list[float]], int] | None:
    """The same two FFN-shaped matmuls in OpenVINO at the backend's precision here: bf16 (AMX where
    the CPU has it), f32 on CPUs without bf16. The ceiling of e5-onnx's OpenVINO backend; None where
    openvino is not installed. (The result keys say bf16; `bf16_method` names the precision.)"""
    try:
        import numpy as np
        import openvino as ov
        from openvino import opset13 as ops
    except ImportError:
        return None
    core = ov.Core()
    precision = "bf16" if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"
    rng = np.random.default_rng(0)
    x = ops.parameter([rows, hidden], ov.Type.f32, name="x")
    h = ops.matmul(x, ops.constant(rng.standard_normal((hidden, ffn), dtype=np.float32)), False, False)
    y = ops.matmul(h, ops.constant(rng.standard_normal((ffn, hidden), dtype=np.float32)), False, False)
    compiled = core.compile_model(ov.Model([y], [x]), "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                              "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    feed = rng.standard_normal((rows, hidden), dtype=np.float32)

    def run() -> list[float]:
        times = []
        for i in range(repeats + 2):
            t = time.perf_counter()
            request.infer([feed])
            if i >= 2:
                times.append(time.perf_counter() - t)
        return times
    run.precision = precision
    return run, 2 * 2 * rows * hidden * ffn


def bf16_result(systems: dict, cfg: dict, lengths: list[int], ops: int, times: list[float],
                precision: str = "bf16") -> dict:
    """The bf16 roofline's rate and token ceiling, and the share of it e5-onnx's OpenVINO backend reaches."""
    import numpy as np

    gflops = ops / float(np.median(times)) / 1e9
    ceiling = gflops * 1e9 / flops_per_token(cfg, float(np.mean(lengths)))
    r = {"bf16_gflops": gflops, "bf16_ceiling_tokens_per_s": ceiling, "bf16_runs_s": times,
         "bf16_method": f"one OpenVINO model, both MatMuls, f32 weights at {precision} inference precision",
         "ov_precision": precision}
    got = (systems.get("e5onnx-ov") or systems.get("e5onnx-ov-bf16") or {}).get("throughput", {}).get("32")
    if got:
        r["e5onnx_ov_bf16_b32_pct"] = 100 * got["tokens_per_s"] / ceiling
    return r

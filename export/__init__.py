"""Build-time exporter: PyTorch checkpoint -> ONNX fp32 (optimised) + INT8, parity-checked.

This package may use torch, transformers and optimum; the runtime (src/e5_onnx) never does.
"""

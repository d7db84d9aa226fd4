"""Model packages: an export shipped as a pip-installable wheel, found through the entry-point
group `e5_onnx.models` (read by e5_onnx/registry.py, core).

    pack.py     `e5-onnx pack`: an export -> a model package wheel
    listing.py  `e5-onnx models`: what this machine can load, and how to get the rest
"""

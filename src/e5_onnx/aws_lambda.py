"""`e5_onnx.aws_lambda.handler`, the name deployed Lambda functions are configured with: kept for them.

The handler's code is e5_onnx/aws/handler.py. This module makes itself that module (sys.modules),
so both names are one module object: `EMBEDDER`, `MAX_TEXTS`, a monkeypatch, all shared.
"""
import sys

from .aws import handler as _module
from .aws.handler import EMBEDDER, MAX_TEXTS, MODEL_NAME, handler, respond  # noqa: F401  (for readers and doc tools)

sys.modules[__name__] = _module

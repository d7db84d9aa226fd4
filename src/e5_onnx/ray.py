"""`e5_onnx.ray`: Ray Data, the public import path (`pip install "e5-onnx[ray]"`).

The code is e5_onnx/corpus/ray.py, beside the corpus jobs that `e5-onnx embed --ray` runs. This
module makes itself that module (sys.modules), so both names are one module object.
"""
import sys

from .corpus import ray as _module
from .corpus.ray import EmbedBatch, embed_dataset, read_parquet, run_job, write_parquet  # noqa: F401

sys.modules[__name__] = _module

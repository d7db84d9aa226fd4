"""e5-onnx: E5 small text embeddings on CPU with onnxruntime, tokenizers and numpy only."""
from . import _moved
from .compact import MissingRangesError
from .embedder import Embedder
from .extras import MissingExtraError
from .lock import UnknownModelError
from .manifest import HashMismatchError, ModelDirError
from .pool import mean_pool_normalize
from .registry import ModelConflictError

__all__ = [
    "Embedder", "HashMismatchError", "MissingExtraError", "MissingRangesError", "ModelConflictError", "ModelDirError",
    "UnknownModelError", "mean_pool_normalize",
]
__version__ = "0.1.0"

_moved.install()  # e5_onnx.server, e5_onnx.bundle, ... : the paths from before the subpackages

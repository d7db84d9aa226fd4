"""e5-onnx: E5 small text embeddings on CPU with onnxruntime, tokenizers and numpy only."""
from .compact import MissingRangesError
from .embedder import Embedder
from .lock import UnknownModelError
from .manifest import HashMismatchError, ModelDirError
from .pool import mean_pool_normalize
from .registry import ModelConflictError

__all__ = [
    "Embedder", "HashMismatchError", "MissingRangesError", "ModelConflictError", "ModelDirError", "UnknownModelError", "mean_pool_normalize",
]
__version__ = "0.1.0"

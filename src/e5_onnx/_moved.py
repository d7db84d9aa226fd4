"""Module paths from before the package had subpackages (0.1.0), still importable.

`import e5_onnx.bundle` or `from e5_onnx.server import parse_args` keep working: a finder at the
end of sys.meta_path answers only these names, imports the module's new home, and puts that very
module object under the old name too (so attributes and monkeypatches are shared), with a
DeprecationWarning that names the new path. No file is left at the old place, so the package's
file list shows the layout as it is. The two public paths with a file of their own are
e5_onnx/aws_lambda.py (the name deployed Lambda functions are configured with) and e5_onnx/ray.py.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    "e5_onnx.jobs": "e5_onnx.corpus.jobs",
    "e5_onnx.corpus_io": "e5_onnx.corpus.io",
    "e5_onnx.checkpoint": "e5_onnx.corpus.checkpoint",
    "e5_onnx.progress": "e5_onnx.corpus.progress",
    "e5_onnx.server": "e5_onnx.serving.server",
    "e5_onnx.batcher": "e5_onnx.serving.batcher",
    "e5_onnx.openai_api": "e5_onnx.serving.openai_api",
    "e5_onnx.metrics": "e5_onnx.serving.metrics",
    "e5_onnx.bundle": "e5_onnx.aws.bundle",
    "e5_onnx.prune": "e5_onnx.aws.prune",
    "e5_onnx.pack": "e5_onnx.packages.pack",
    "e5_onnx.models": "e5_onnx.packages.listing",
}


class MovedModules:
    """Finds the old names in MOVED; loading one returns the module at its new path. (A finder and
    loader by protocol, not by importlib.abc's classes: importing those costs a cold start ~18 ms.)"""

    def find_spec(self, name: str, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name in MOVED else None

    def create_module(self, spec) -> None:
        return None  # the default module, replaced in exec_module

    def exec_module(self, module: ModuleType) -> None:
        old, new = module.__name__, MOVED[module.__name__]
        warnings.warn(f"{old} moved to {new}; import that (the old path is kept for compatibility)",
                      DeprecationWarning, stacklevel=2)
        sys.modules[old] = importlib.import_module(new)  # the import system returns what sys.modules holds


def install() -> None:
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.append(MovedModules())

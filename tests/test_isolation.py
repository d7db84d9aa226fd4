"""The runtime must work where torch, transformers and optimum cannot even be imported."""
import ast
import subprocess
import sys
import textwrap

from export.parity import INT8_MEAN_COSINE, INT8_MIN_COSINE
from tests.conftest import ROOT

FORBIDDEN = ("torch", "transformers", "optimum")


def test_no_module_under_src_imports_torch_transformers_or_optimum():
    offenders = []
    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_embeds_in_a_process_where_torch_transformers_optimum_cannot_be_imported(tiny_exports, minilm_export):
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {FORBIDDEN!r}:
                    raise ImportError("blocked in this test: " + name)
        sys.meta_path.insert(0, Block())
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("the import blocker did not work")

        import numpy as np
        from e5_onnx import Embedder
        for d in {[str(tiny_exports["unigram-xlmr"]), str(minilm_export)]!r}:
            ref = np.load(d + "/reference.npz")
            got = Embedder(d).encode(list(ref["texts"]))
            cos = (got * ref["embeddings"]).sum(1)
            assert cos.min() >= {INT8_MIN_COSINE} and cos.mean() >= {INT8_MEAN_COSINE}, (d, cos.min(), cos.mean())
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})
        assert not loaded, loaded
        print("ok", got.shape)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok (")

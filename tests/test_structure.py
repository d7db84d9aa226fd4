"""The code stays one idea per file and layered: no module past the line limit, no import cycle.

One import graph covers the runtime (src/e5_onnx), the exporter (export/, shipped as
e5_onnx.export through a symlink) and benchmarks/. Imports are read with ast wherever they stand
(a function-level import closes a cycle as surely as a module-level one: bench.py once imported
profile.py inside a function while profile.py imported bench.py at the top). The old flat module
paths (e5_onnx._moved.MOVED) count as their new homes. A package's __init__ is a node of its own;
the implicit import of a parent package is not an edge (every module would be in a cycle with it).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from e5_onnx._moved import MOVED

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
# (directory on sys.path, top-level package) of every tree the rules cover
TREES = ((ROOT / "src", "e5_onnx"), (ROOT, "export"), (ROOT, "benchmarks"))
MAX_LINES = 400
# Files allowed past MAX_LINES, each with its reason and the length it may not grow past. None now.
OVER_LIMIT: dict[str, tuple[int, str]] = {}
ALIASES = {"e5_onnx.export": "export", **MOVED}  # a symlinked package; the pre-subpackage paths


def modules(base: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file, for every .py of `package` (symlinked directories not followed)."""
    top = base / package
    found = {}
    for path in sorted(top.rglob("*.py")):
        parts = path.relative_to(base).with_suffix("").parts
        if any((base / Path(*parts[:i])).is_symlink() for i in range(1, len(parts))):
            continue
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def canonical(name: str, known: set[str]) -> str | None:
    """The known module `name` is, or is inside (e5_onnx.ray.EmbedBatch -> e5_onnx.ray), aliases applied."""
    for old, new in ALIASES.items():
        if name == old or name.startswith(old + "."):
            name = new + name[len(old):]
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules that module `name` (file `path`) imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from pkg import x`: the submodule pkg.x if there is one, else pkg itself
            targets = [f"{base}.{a.name}" if canonical(f"{base}.{a.name}", known) == f"{base}.{a.name}" else base
                       for a in node.names]
        found |= {c for t in targets if (c := canonical(t, known))}
    return found - {name}


def import_graph(trees=TREES) -> dict[str, set[str]]:
    files = {name: path for base, package in trees for name, path in modules(base, package).items()}
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_the_runtime_the_exporter_or_the_benchmarks():
    graph = import_graph()
    # The parser sees the real wiring (an empty graph would be acyclic for the wrong reason).
    assert {"benchmarks.measure", "benchmarks.profile", "benchmarks.report", "benchmarks.systems"} <= graph["benchmarks.bench"]
    assert "benchmarks.systems" in graph["benchmarks.coldstart"]
    assert {"e5_onnx.corpus.io", "e5_onnx.corpus.ray", "e5_onnx.embedder"} <= graph["e5_onnx.corpus.jobs"]
    assert "e5_onnx.serving.openai_api" in graph["e5_onnx.aws.handler"]
    assert "e5_onnx.corpus.ray" in graph["e5_onnx.ray"] and "e5_onnx.aws.handler" in graph["e5_onnx.aws_lambda"]
    assert {"e5_onnx.demo", "e5_onnx.manifest"} <= graph["export.probes"] | graph["export.build"] | graph["export.fetch"]
    assert "e5_onnx.aws.bundle" in graph["benchmarks.lambda_cold_start"]
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_core_imports_no_surface():
    """The flat modules of e5_onnx (tokenise, session, pool, embedder, ...) never import a surface
    subpackage: a surface can be removed, or its extra missing, without touching the core."""
    graph = import_graph()
    surfaces = ("e5_onnx.corpus", "e5_onnx.serving", "e5_onnx.aws", "e5_onnx.packages", "e5_onnx.integrations")
    shims_and_commands = {"e5_onnx.ray", "e5_onnx.aws_lambda", "e5_onnx.demo", "e5_onnx.cli"}
    core = [m for m in graph if m.count(".") == 1 and m.startswith("e5_onnx.") and m not in shims_and_commands]
    assert {"e5_onnx.embedder", "e5_onnx.session", "e5_onnx.registry"} <= set(core)
    leaks = {m: sorted(t for t in graph[m] if t.startswith(surfaces)) for m in core}
    assert not {m: t for m, t in leaks.items() if t}, leaks


def test_cycle_detector_sees_function_level_relative_and_aliased_imports(tmp_path):
    pkg = tmp_path / "benchmarks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import os\nfrom .b import x\n")
    (pkg / "b.py").write_text("def f():\n    from benchmarks import c\n")
    (pkg / "c.py").write_text("import benchmarks.a\n")
    (pkg / "d.py").write_text("from . import a, b\nfrom benchmarks.data import y\nimport e5_onnx.server\n")
    graph = import_graph([(tmp_path, "benchmarks")])
    assert {k: v for k, v in graph.items() if k != "benchmarks"} == {
        "benchmarks.a": {"benchmarks.b"}, "benchmarks.b": {"benchmarks.c"}, "benchmarks.c": {"benchmarks.a"},
        "benchmarks.d": {"benchmarks", "benchmarks.a", "benchmarks.b"}}  # benchmarks.data is not there: its package
    assert find_cycle(graph) == ["benchmarks.a", "benchmarks.b", "benchmarks.c", "benchmarks.a"]
    graph["benchmarks.c"] = set()
    assert find_cycle(graph) is None
    # an old path counts as its new home, a symlinked package as its target
    both = import_graph([(tmp_path, "benchmarks"), (ROOT / "src", "e5_onnx")])
    assert "e5_onnx.serving.server" in both["benchmarks.d"]
    assert canonical("e5_onnx.export.build", set(import_graph())) == "export.build"


def test_no_file_over_the_line_limit():
    files = [p for base, package in TREES for p in modules(base, package).values()]
    assert len(files) > 80, "the trees were not found"
    lengths = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in files}
    over = {name: n for name, n in lengths.items() if n > OVER_LIMIT.get(name, (MAX_LINES, ""))[0]}
    assert not over, f"files over {MAX_LINES} lines (split them by idea): {over}"
    stale = {name for name in OVER_LIMIT if lengths.get(name, 0) <= MAX_LINES}
    assert not stale, f"now within {MAX_LINES} lines, drop them from OVER_LIMIT: {stale}"


def _modules_loaded_by(statement: str) -> set[str]:
    code = f"import sys; before = set(sys.modules); {statement}; print(' '.join(sorted(set(sys.modules) - before)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=BENCH_DIR.parent, capture_output=True, text=True,
                         timeout=120, check=True)
    return set(out.stdout.split())


def test_bench_leaves_numeric_libraries_unloaded_until_main_sets_threads():
    """bench.main sets OMP_NUM_THREADS etc. first; a library loaded at import would miss them, and the
    cold-start child would charge its import to every system (it loads coldstart + systems alone)."""
    loaded = _modules_loaded_by("import benchmarks.bench")
    assert {"benchmarks.measure", "benchmarks.report", "benchmarks.profile"} <= loaded
    assert not {m.split(".")[0] for m in loaded} & {"numpy", "onnxruntime", "onnx", "tokenizers", "torch", "e5_onnx"}
    child = {m for m in _modules_loaded_by("import benchmarks.coldstart") if m.startswith("benchmarks")}
    assert child == {"benchmarks", "benchmarks.coldstart", "benchmarks.systems", "benchmarks.engines"}

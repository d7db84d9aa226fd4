"""The benchmarks stay one idea per file: no module past the line limit, no import cycle among them.

Imports are read with ast from every benchmarks/*.py, wherever they stand (a function-level import
closes a cycle as surely as a module-level one: bench.py once imported profile.py inside a function
while profile.py imported bench.py at the top).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
MAX_LINES = 450
# Files over the limit that are not yet split, capped at their length when this test was written,
# so they can only shrink (none left: fidelity.py's recipes went to recipes.py, its tasks to tasks.py).
OVER_LIMIT: dict[str, int] = {}


def imports_of(path: Path, package: str = "benchmarks") -> set[str]:
    """Names of the sibling modules `path` imports: `from .x import`, `from . import x`,
    `import benchmarks.x`, `from benchmarks.x import` / `from benchmarks import x`."""
    siblings = {p.stem for p in path.parent.glob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith(package + ".")}
        elif isinstance(node, ast.ImportFrom):
            relative = node.level == 1
            module = node.module if relative else (node.module or "").removeprefix(package).lstrip(".")
            if not relative and not (node.module or "").startswith(package):
                continue
            if module:
                found.add(module.split(".")[0])
            else:  # from . import x, y
                found |= {a.name for a in node.names}
    return (found & siblings) - {path.stem}


def import_graph(folder: Path) -> dict[str, set[str]]:
    return {p.stem: imports_of(p) for p in sorted(folder.glob("*.py"))}


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


def test_benchmark_modules_import_no_cycle():
    graph = import_graph(BENCH_DIR)
    # The parser sees the real wiring (an empty graph would be acyclic for the wrong reason).
    assert {"measure", "profile", "report", "systems"} <= graph["bench"], graph["bench"]
    assert "systems" in graph["coldstart"]
    assert find_cycle(graph) is None, f"import cycle among benchmarks/: {' -> '.join(find_cycle(graph))}"


def test_cycle_detector_sees_function_level_and_package_imports(tmp_path):
    (tmp_path / "a.py").write_text("import os\nfrom .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from benchmarks import c\n")
    (tmp_path / "c.py").write_text("import benchmarks.a\n")
    (tmp_path / "d.py").write_text("from . import a, b\nfrom benchmarks.data import y\n")
    graph = import_graph(tmp_path)
    assert graph == {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "b"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    graph["c"] = set()
    assert find_cycle(graph) is None


def test_no_benchmark_file_over_the_line_limit():
    lengths = {p.name: len(p.read_text().splitlines()) for p in BENCH_DIR.glob("*.py")}
    over = {name: n for name, n in lengths.items() if n > OVER_LIMIT.get(name, MAX_LINES)}
    assert not over, f"benchmarks/ files over {MAX_LINES} lines (split them): {over}"
    stale = {name for name, cap in OVER_LIMIT.items() if lengths.get(name, 0) <= MAX_LINES}
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

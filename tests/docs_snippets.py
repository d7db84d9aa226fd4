"""The fenced code blocks and quoted names of README.md and docs/*.md, read for tests/test_docs.py.

A block runs in the tests unless the line before its fence is `<!-- not-run: REASON -->`.
`<!-- server -->` before a block marks the command that starts `e5-onnx serve`: the tests start it
in the background (on a free port instead of 8080) for the blocks that call 127.0.0.1:8080.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUNNABLE = {"python": "python", "py": "python", "bash": "shell", "sh": "shell", "shell": "shell", "console": "shell"}
FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w+-]*)")
MARK = re.compile(r"<!--\s*(not-run|server)\s*(?::\s*(.*?))?\s*-->")
CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    mark: str | None  # "not-run", "server" or None
    reason: str

    @property
    def kind(self) -> str | None:
        return RUNNABLE.get(self.lang)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of one Markdown file, with the marker on the line before its fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:end])
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = MARK.search(before)
        out.append(Block(path, i + 1, lang.lower(), body + "\n", mark and mark.group(1), (mark and mark.group(2)) or ""))
        i = end + 1
    return out


def all_blocks() -> list[Block]:
    return [b for path in DOC_FILES for b in blocks(path)]


def prose(path: Path) -> str:
    """The text outside fenced blocks."""
    lines, keep, fence = path.read_text(encoding="utf-8").splitlines(), [], None
    for line in lines:
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(2)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            keep.append(line)
    return "\n".join(keep)


def code_spans(text: str) -> list[str]:
    return [m.group(2).strip() for m in CODE_SPAN.finditer(text)]


def message_pattern(node: ast.AST) -> str | None:
    """A string expression as a pattern: the literal text, `…` for each formatted part."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return (message_pattern(node.left) or "…") + (message_pattern(node.right) or "…")
    return None


def source_strings(dirs: list[Path]) -> list[str]:
    """Every string in the code, as a pattern (f-strings with `…` for their formatted parts)."""
    out = []
    for d in dirs:
        for f in sorted(d.rglob("*.py")):  # subpackages too; symlinked dirs (src/e5_onnx/export) are not followed
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.Constant, ast.JoinedStr)):
                    text = message_pattern(node)
                    if text:
                        out.append(text)
    return out


# Helpers whose second argument is the message (the first names a field or an HTTP status).
MESSAGE_SECOND = {"ApiError", "_bad", "bad"}


def raised_messages(dirs: list[Path]) -> list[tuple[str, str]]:
    """(where, pattern) of every `raise X(message)` and `parser.error(message)` in the code."""
    out = []
    for d in dirs:
        for f in sorted(d.rglob("*.py")):  # subpackages too; symlinked dirs (src/e5_onnx/export) are not followed
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                call, where = None, f"{f.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                    call = node.exc
                elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "error"
                      and getattr(node.func.value, "id", "") in ("p", "parser")):  # argparse, not a logger
                    call = node
                if call is None or not call.args:
                    continue
                name = getattr(call.func, "id", getattr(call.func, "attr", ""))
                args = call.args[1:] if name in MESSAGE_SECOND and len(call.args) > 1 else call.args
                pattern = message_pattern(args[0])
                if pattern and pattern.strip("… "):
                    out.append((where, pattern))
    return out


def fragments(pattern: str, shortest: int = 4) -> list[str]:
    """The literal pieces of a pattern, whitespace collapsed, the short ones left out."""
    pieces = (" ".join(p.split()) for p in pattern.split("…"))
    return [p for p in pieces if len(p.strip(" .,;:()'\"")) >= shortest]

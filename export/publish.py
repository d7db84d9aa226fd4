"""How an export reaches OUT: under a lock, built in a staging directory, swapped in by two renames.

A SIGKILL at any instant leaves the previous export loadable (at OUT, or for an instant under a
trash name that the next export renames back), never a mixed directory. Everything lives in OUT's
parent directory (renames stay on one filesystem), named after OUT:

    .OUT.lock                   fcntl lock, held for a whole export: a second export to OUT waits
    .OUT.partial-PID-XXXXXXXX/  the export being built; STAGING_MARKER inside records PID and host
    .OUT.old-PID/               the previous export, between the two renames of the swap

The swap, once the staging directory is complete (manifest.json written last):
    1. rename OUT -> .OUT.old-PID            (skipped if there is no OUT)
    2. rename .OUT.partial-PID-... -> OUT    (the new export is in place)
    3. remove OUT/STAGING_MARKER, then .OUT.old-PID
Killed between 1 and 2, OUT is missing and .OUT.old-PID holds the previous export, complete: the
next export to OUT renames it back first thing (`recover`). Killed after 2, the leftover trash is
removed. A staging directory whose marker names a dead process on this host is removed too; a live
one (another export, or a process that does not take the lock) is left alone.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

STAGING_MARKER = ".e5-onnx-staging"


def _sibling(out: Path, kind: str) -> str:
    return f".{out.name}.{kind}"


@contextmanager
def export_lock(out: Path, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold OUT's lock file for the block; if another export holds it, say so and wait for it.

    The lock is an fcntl lock on `.OUT.lock`: the kernel drops it when its holder exits, however
    it exits, so a killed export never leaves OUT locked. The file itself stays (removing a lock
    file that others may be waiting on would let two exports in at once).
    """
    path = out.parent / _sibling(out, "lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            log(f"another export to {out} is running (pid {holder}); waiting for it to finish ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def new_staging(out: Path) -> Path:
    """An empty staging directory beside OUT, marked with this process's PID and host."""
    staging = Path(tempfile.mkdtemp(prefix=_sibling(out, f"partial-{os.getpid()}-"), dir=out.parent))
    (staging / STAGING_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    return staging


def publish(staging: Path, out: Path) -> None:
    """Swap a complete staging directory in as OUT (steps 1-3 above); call under `export_lock`."""
    trash = out.parent / _sibling(out, f"old-{os.getpid()}")
    if out.exists():
        os.rename(out, trash)
    os.rename(staging, out)
    (out / STAGING_MARKER).unlink()  # killed before this, `recover` removes it (manifest.json never lists it)
    if trash.exists():
        shutil.rmtree(trash)


def recover(out: Path, log: Callable[[str], None] = print) -> None:
    """Undo what a killed export left beside OUT; call under `export_lock`, before anything else."""
    trash = sorted(out.parent.glob(_sibling(out, "old-*")), key=lambda p: p.stat().st_mtime, reverse=True)
    if trash and not out.exists():
        log(f"restoring the previous export to {out} from {trash[0].name} (an export was killed mid-swap)")
        os.rename(trash[0], out)
        trash = trash[1:]
    for path in trash:
        shutil.rmtree(path)
    if (out / STAGING_MARKER).is_file():
        (out / STAGING_MARKER).unlink()
    for path in out.parent.glob(_sibling(out, "partial-*")):
        if _abandoned(path):
            log(f"removing {path.name}, left by a killed export")
            shutil.rmtree(path)


def _abandoned(staging: Path) -> bool:
    """A staging directory of a process that is gone: marked by STAGING_MARKER (or, if killed
    before writing it, empty), named after a PID that is dead on this host (the marker's PID and
    host when it could be written whole, else the PID in the name)."""
    try:
        pid, host = int(staging.name.split(".partial-", 1)[1].split("-", 1)[0]), socket.gethostname()
    except (IndexError, ValueError):
        return False  # not a name new_staging makes
    marker = staging / STAGING_MARKER
    if not marker.is_file() and any(staging.iterdir()):
        return False  # not ours
    try:
        owner = json.loads(marker.read_text())
        pid, host = int(owner["pid"]), owner["host"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # killed while writing it
    return host == socket.gethostname() and not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True

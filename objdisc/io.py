"""Atomic writes: the one place that writes a file under a temporary name and renames it.

A reader (a resumed run, DVC, a person) never sees half a file: everything objdisc writes is built
as ``<name>.tmp-<pid>`` beside its final path, flushed, and renamed into place in one step. The pid
in the name tells whose temporary a leftover is, so ``remove_stale_temps`` can clear what a killed
process left behind without touching a live writer's file.

Files come out with the user's umask applied (``tempfile.mkstemp`` would give 0600), like any
other file the user creates.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any thread starts.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()
_TEMP = re.compile(r"^(?P<name>.+)\.tmp-(?P<pid>\d+)$")


def temp_path(path: Path) -> Path:
    """The temporary sibling of ``path`` used by this process."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def fsync_path(path: Path) -> None:
    """Flush a file (or a folder entry) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write (a file, or a folder); on success it replaces
    ``path``, on any error it is removed and ``path`` is left as it was.

    ``durable`` fsyncs the file and its folder entry (checkpoints and shards: a power cut must not
    leave a renamed but empty file). A folder replaces an existing folder at ``path`` only when the
    caller removed that first: ``os.replace`` refuses a non-empty target folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    _remove(tmp)  # a leftover of an earlier process that had our pid
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~UMASK)
            if durable:
                fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    if durable:
        fsync_path(path.parent)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, durable: bool = False, **kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` that appears under its name only when the ``with`` block succeeds."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write writes whole files; mode {mode!r} is not a write mode")
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, **dumps: Any) -> Path:
    """``obj`` as JSON (indent 1 unless told otherwise), with a final newline."""
    dumps.setdefault("indent", 1)
    return write_text(path, json.dumps(obj, **dumps) + "\n")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_temps(folder: str | os.PathLike, pattern: str = "*") -> list[Path]:
    """Temporaries (``<name>.tmp-<pid>``) in ``folder`` whose writing process no longer runs."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = []
    for entry in sorted(folder.glob(pattern)):
        match = _TEMP.match(entry.name)
        if match and not _alive(int(match["pid"])):
            stale.append(entry)
    return stale


def remove_stale_temps(folder: str | os.PathLike, pattern: str = "*") -> list[Path]:
    """Remove what killed writers left in ``folder`` (only names this module makes); returns them."""
    removed = stale_temps(folder, pattern)
    for entry in removed:
        _remove(entry)
    return removed

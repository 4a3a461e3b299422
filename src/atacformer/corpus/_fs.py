"""Filesystem steps that make corpus writes atomic: synced files, renames, a writer lock."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path


def install_dir(tmp: Path, path: Path) -> None:
    """Move a finished folder into place, replacing (after the move) what was there."""
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(path, old)
    os.rename(tmp, path)
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, obj) -> None:
    """Write JSON to a temporary sibling, sync it, then atomically replace ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fsync_dir(path: Path) -> None:
    """Sync a folder's entries, so that renames inside it survive a crash."""
    with contextlib.suppress(OSError):  # not every platform can fsync a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def writer_lock(path: Path):
    """Exclusive writer lock on the corpus (released by the OS if the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: single writer is up to the user
        yield
        return
    with open(path / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{path}: another process is appending to this corpus") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

"""Filesystem steps that make corpus writes atomic: synced files, renames, a writer lock."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from atacformer.errors import AtacformerError

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
LOCK_TIMEOUT = 600.0  # seconds a writer waits for another one to finish
LOCK_POLL = 0.2


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
def writer_lock(path: Path, timeout: float | None = LOCK_TIMEOUT, poll: float = LOCK_POLL):
    """Exclusive writer lock on the corpus (released by the OS if the process dies).

    A writer that finds the corpus locked waits for the other writer to finish, polling
    every ``poll`` seconds, for at most ``timeout`` seconds (``None``: no limit); then
    :class:`AtacformerError` names the corpus and the lock file.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: single writer is up to the user
        yield
        return
    lock = Path(path) / LOCK_NAME
    with open(lock, "a") as f:
        start = time.monotonic()
        waiting = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if timeout is not None and waited >= timeout:
                    raise AtacformerError(
                        f"{path}: another process is appending to this corpus and still held its writer "
                        f"lock {lock} after {waited:.1f} s; try again when it has finished (the lock is "
                        "released as soon as that process ends)") from None
                if not waiting:
                    logger.warning("waiting for the writer lock on %s (%s): another process is appending",
                                   path, lock)
                    waiting = True
                time.sleep(poll if timeout is None else max(0.0, min(poll, timeout - waited)))
        if waiting:
            logger.info("%s: writer lock acquired after %.1f s", path, time.monotonic() - start)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

"""Atomic output files: written under a temporary sibling name and renamed into place, so
that a failure (an exception, Ctrl-C) leaves neither a partial file nor the temporary one."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp"):
    """Yield the temporary name ``path + suffix`` to write; it replaces ``path`` when the
    block succeeds and is removed when it fails.

    Examples
    --------
    >>> with atomic_path("cells.h5ad", ".tmp.h5ad") as tmp:  # doctest: +SKIP
    ...     adata.write_h5ad(tmp)
    """
    path = os.fspath(path)
    tmp = path + suffix
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


@contextlib.contextmanager
def deferred_interrupt():
    """Hold Ctrl-C (SIGINT) until the block ends, then raise :class:`KeyboardInterrupt`.

    For writes that a library cannot abandon cleanly half-way (``torch.save`` turns an
    interrupt inside its writer into an unrelated ``RuntimeError``). Outside the main thread,
    or when SIGINT is not handled by Python's default handler, the block runs unchanged.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    caught = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt

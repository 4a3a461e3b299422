"""Region names ``chrom:start-end`` as fixed-width bytes, written by a compiled loop (numba).

Formatting hundreds of thousands of names through Python strings costs seconds; the names of
a vocabulary are only ever written out, so they are formatted straight into a byte buffer.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, inline="always")
def _put_int(out, i, p, v):
    """Write the decimal digits of ``v >= 0`` at ``out[i, p:]``; returns the next position."""
    if v == 0:
        out[i, p] = 48
        return p + 1
    n = 0
    t = v
    while t > 0:
        t //= 10
        n += 1
    q = p + n - 1
    while v > 0:
        out[i, q] = 48 + v % 10
        v //= 10
        q -= 1
    return p + n


@njit(nogil=True, cache=True)
def _format(codes, chrom_bytes, chrom_lens, starts, ends, out):
    for i in range(len(codes)):
        c = codes[i]
        p = 0
        for j in range(chrom_lens[c]):
            out[i, p] = chrom_bytes[c, j]
            p += 1
        out[i, p] = 58  # ':'
        p = _put_int(out, i, p + 1, starts[i])
        out[i, p] = 45  # '-'
        _put_int(out, i, p + 1, ends[i])


def region_names_bytes(codes, chrom_names, starts, ends) -> np.ndarray:
    """``chrom:start-end`` per region as a fixed-width ``S`` array (ASCII chromosome names).

    Examples
    --------
    >>> region_names_bytes(np.array([0, 1]), ["chr1", "chrX"], np.array([0, 5000]), np.array([5000, 10000]))
    array([b'chr1:0-5000', b'chrX:5000-10000'], dtype='|S16')
    """
    enc = [str(c).encode("ascii") for c in chrom_names]
    clen = np.array([len(e) for e in enc], np.int64)
    cb = np.zeros((len(enc), max(int(clen.max()), 1)), np.uint8)
    for k, e in enumerate(enc):
        cb[k, :len(e)] = np.frombuffer(e, np.uint8)
    starts = np.asarray(starts, np.int64)
    ends = np.asarray(ends, np.int64)
    digits = len(str(int(max(ends.max(initial=0), starts.max(initial=0), 1))))
    width = int(clen.max()) + 2 + 2 * digits
    out = np.zeros((len(starts), width), np.uint8)
    _format(np.asarray(codes, np.int64), cb, clen, starts, ends, out)
    return out.view(f"S{width}").ravel()


def ascii_to_unicode(codes: np.ndarray) -> np.ndarray:
    """``(n, width)`` uint8 ASCII bytes (NUL padded) -> a numpy ``U{width}`` array.

    Widening each byte to a UCS-4 code unit is what ``S -> U`` conversion does, minus its
    per-element decoding (about 8x faster on a million barcodes)."""
    n, width = codes.shape
    if width == 0:
        return np.zeros(n, dtype="U1")
    return np.ascontiguousarray(codes, dtype=np.uint32).view(f"U{width}").reshape(n)


def unicode_to_ascii(arr: np.ndarray) -> np.ndarray | None:
    """A numpy ``U`` array of ASCII strings -> the same as an ``S`` array (``None`` when a
    string holds a non-ASCII character); the fast form of ``arr.astype("S")``.

    Examples
    --------
    >>> unicode_to_ascii(np.array(["AAC-1", "GT"]))
    array([b'AAC-1', b'GT'], dtype='|S5')
    """
    arr = np.ascontiguousarray(arr)
    width = arr.dtype.itemsize // 4
    if arr.dtype.kind != "U" or width == 0:
        return None
    cps = arr.view(np.uint32).reshape(len(arr), width)
    if len(arr) and int(cps.max()) >= 128:
        return None
    return cps.astype(np.uint8).view(f"S{width}").reshape(len(arr))

"""Single-pass parser of fragments text blocks (numba, GIL released).

One scan over the bytes of a block finds the four leading fields of every line
(``chrom start end barcode``), parses the two coordinates and maps chromosome and barcode
to dense ids through exact hash tables that persist across blocks: open addressing over
64-bit FNV-1a hashes, every hit confirmed by comparing the key bytes, so two different
barcodes can never share an id. Ids are given in order of first appearance.

The parser validates as it goes (four fields, unsigned decimal coordinates, start <= end)
and stops at the first bad line, returning its byte offset; the caller turns that into an
error naming the line and value.
"""

from __future__ import annotations

import numpy as np
from numba import njit

OK, GROW, BAD = 0, 1, 2
_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


@njit(nogil=True, cache=True, inline="always")
def _hash(buf, a, b):
    h = _FNV_OFFSET
    for i in range(a, b):
        h = (h ^ np.uint64(buf[i])) * _FNV_PRIME
    return h


@njit(nogil=True, cache=True)
def _lookup(buf, a, b, slots, key_off, key_len, arena, state):
    """Id of key ``buf[a:b]``; inserts it if new. Returns -1 when the table must grow.

    ``state`` = [n_keys, arena_used].
    """
    n = b - a
    mask = len(slots) - 1
    h = _hash(buf, a, b)
    pos = np.int64(h & np.uint64(mask))
    while True:
        k = slots[pos]
        if k < 0:
            break
        if key_len[k] == n:
            o = key_off[k]
            same = True
            for i in range(n):
                if arena[o + i] != buf[a + i]:
                    same = False
                    break
            if same:
                return k
        pos = (pos + 1) & mask
    nk = state[0]
    # keep the load factor under 1/2 and room in the key arrays and arena
    if 2 * (nk + 1) > len(slots) or nk + 1 > len(key_off) or state[1] + n > len(arena):
        return -1
    slots[pos] = nk
    key_off[nk] = state[1]
    key_len[nk] = n
    for i in range(n):
        arena[state[1] + i] = buf[a + i]
    state[1] += n
    state[0] = nk + 1
    return nk


@njit(nogil=True, cache=True, inline="always")
def _uint_field(buf, i, n):
    """Parse the digits from ``i`` up to a tab; returns (value, index of the tab) or (0, -1)."""
    d0 = i
    v = np.int64(0)
    while i < n and buf[i] >= 48 and buf[i] <= 57:
        v = v * 10 + (buf[i] - 48)
        i += 1
    if i == d0 or i >= n or buf[i] != 9 or i - d0 > 18:
        return np.int64(0), -1
    return v, i


@njit(nogil=True, cache=True)
def parse_fragments(buf, pos, row, chrom_out, start_out, end_out, bc_out,
                    c_slots, c_off, c_len, c_arena, c_state,
                    b_slots, b_off, b_len, b_arena, b_state):
    """Parse lines of ``buf`` from byte ``pos``; fill outputs from index ``row``.

    Returns ``(status, pos, row)``: ``OK`` when the block is done, ``GROW`` when a hash table
    needs more room (grow it and call again with the returned ``pos``/``row``), ``BAD`` with
    ``pos`` at the start of the first malformed line.
    """
    n = len(buf)
    pc_a = -1  # previous line's chromosome bytes: files are grouped by chromosome,
    pc_b = -1  # so most lines skip the chromosome hash lookup
    pc = -1
    while pos < n:
        line = pos
        if buf[pos] == 10:  # empty line
            pos += 1
            continue
        # field 1: chrom
        i = pos
        while i < n and buf[i] != 9 and buf[i] != 10:
            i += 1
        if i >= n or buf[i] != 9 or i == pos:
            return BAD, line, row
        ca, cb = pos, i
        # fields 2, 3: unsigned decimal integers (at most 18 digits)
        s, i = _uint_field(buf, i + 1, n)
        if i < 0:
            return BAD, line, row
        e, i = _uint_field(buf, i + 1, n)
        if i < 0:
            return BAD, line, row
        # field 4: barcode, ends at tab, '\r' or newline
        i += 1
        ba = i
        while i < n and buf[i] != 9 and buf[i] != 10 and buf[i] != 13:
            i += 1
        if i == ba or s > e:
            return BAD, line, row
        bb = i
        c = -1
        if pc >= 0 and cb - ca == pc_b - pc_a:
            c = pc
            for k in range(cb - ca):
                if buf[ca + k] != buf[pc_a + k]:
                    c = -1
                    break
        if c < 0:
            c = _lookup(buf, ca, cb, c_slots, c_off, c_len, c_arena, c_state)
            if c < 0:
                return GROW, line, row
            pc, pc_a, pc_b = c, ca, cb
        b = _lookup(buf, ba, bb, b_slots, b_off, b_len, b_arena, b_state)
        if b < 0:
            return GROW, line, row
        chrom_out[row] = c
        start_out[row] = s
        end_out[row] = e
        bc_out[row] = b
        row += 1
        while i < n and buf[i] != 10:
            i += 1
        pos = i + 1
    return OK, pos, row


class KeyTable:
    """Growable exact hash table of byte strings -> dense ids (first-appearance order)."""

    def __init__(self, capacity: int = 1 << 12, arena_bytes: int = 1 << 16):
        self.slots = np.full(2 * capacity, -1, dtype=np.int64)
        self.off = np.zeros(capacity, dtype=np.int64)
        self.len = np.zeros(capacity, dtype=np.int32)
        self.arena = np.zeros(arena_bytes, dtype=np.uint8)
        self.state = np.zeros(2, dtype=np.int64)  # n_keys, arena used

    def __len__(self) -> int:
        return int(self.state[0])

    def arrays(self):
        return self.slots, self.off, self.len, self.arena, self.state

    def grow(self) -> None:
        """Double every store and rehash (keys keep their ids)."""
        n = len(self)
        cap = 2 * len(self.off)
        self.off = np.concatenate([self.off, np.zeros(cap - len(self.off), np.int64)])
        self.len = np.concatenate([self.len, np.zeros(cap - len(self.len), np.int32)])
        self.arena = np.concatenate([self.arena, np.zeros(len(self.arena), np.uint8)])
        self.slots = np.full(2 * cap, -1, dtype=np.int64)
        _rehash(self.slots, self.off, self.len, self.arena, n)

    def keys(self, start: int = 0) -> list[str]:
        """Keys with ids ``start..`` as strings."""
        a = self.arena
        return [a[o:o + n].tobytes().decode("utf-8", "replace")
                for o, n in zip(self.off[start:len(self)].tolist(), self.len[start:len(self)].tolist())]


@njit(nogil=True, cache=True)
def _rehash(slots, off, ln, arena, n):
    mask = len(slots) - 1
    for k in range(n):
        pos = np.int64(_hash(arena, off[k], off[k] + ln[k]) & np.uint64(mask))
        while slots[pos] >= 0:
            pos = (pos + 1) & mask
        slots[pos] = k

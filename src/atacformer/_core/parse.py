"""Single-pass parser of fragments text blocks (numba, GIL released).

One scan over the bytes of a block finds the four leading fields of every line
(``chrom start end barcode``), parses the two coordinates and maps chromosome and barcode
to dense ids through exact hash tables that persist across blocks. Ids are given in order of
first appearance.

The tables are open-addressing hash tables whose 32-byte rows hold a key's first 24 bytes
inline (three little-endian words, read with unaligned 8-byte loads), its length and its id.
A lookup reads one row: a key of up to 24 bytes (10x barcodes have 16 to 20) is equal to a
row exactly when the three words and the length are, so two different barcodes can never share
an id; longer keys also compare their tail bytes against the key store. The key store (all
keys' bytes, in id order) gives the keys back as strings.

The parser validates as it goes (four fields, unsigned decimal coordinates, start <= end)
and stops at the first bad line, returning its byte offset; the caller turns that into an
error naming the line and value.
"""

from __future__ import annotations

import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from atacformer._core.names import ascii_to_unicode

if sys.byteorder != "little":  # the word-at-a-time code reads bytes as little-endian words
    raise ImportError("atacformer's fragments parser needs a little-endian CPU (x86-64, ARM64)")

OK, GROW, BAD, FULL = 0, 1, 2, 3
INLINE = 24  # key bytes held in a row
AHEAD = 16  # keys hashed and prefetched ahead of their lookup
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_FNV_PRIME = np.uint64(1099511628211)
_ONE = np.uint64(1)
_EMPTY = np.uint64(0)


@intrinsic
def _load_u64(typingctx, arr, idx):
    """Little-endian 8-byte load from ``arr`` (uint8) at byte ``idx``, any alignment."""
    sig = types.uint64(arr, types.int64)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        return builder.load(builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)

    return sig, codegen


@intrinsic
def _cttz(typingctx, x):
    """Count of trailing zero bits of a uint64 (64 for 0)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


@intrinsic
def _prefetch_row(typingctx, rows, idx):
    """Ask the CPU to bring row ``idx`` of a C-contiguous ``(n, 4)`` uint64 table into cache
    (``llvm.prefetch``: a hint, it never faults)."""
    sig = types.void(rows, types.int64)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [builder.mul(args[1], ir.Constant(ir.IntType(64), 4))])
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = builder.module.globals.get("llvm.prefetch.p0")
        if fn is None:
            fn = ir.Function(builder.module, ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32]),
                             "llvm.prefetch.p0")
        # read, keep in all cache levels, data cache
        builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


_LO = np.uint64(0x0101010101010101)
_HI = np.uint64(0x8080808080808080)
_TAB = np.uint64(0x0909090909090909)
_LF = np.uint64(0x0A0A0A0A0A0A0A0A)
_CR = np.uint64(0x0D0D0D0D0D0D0D0D)


@njit(nogil=True, cache=True, inline="always")
def _zero_bytes(x):
    """High bit set in the bytes of ``x`` that are zero (exact up to the first one, which is
    all that is used: borrows only run upwards)."""
    return (x - _LO) & ~x & _HI


@njit(nogil=True, cache=True, inline="always")
def _find_sep(buf, i, n, cr):
    """First index >= ``i`` holding a tab or newline (or '\r' when ``cr``), else ``n``;
    eight bytes at a time."""
    while i + 8 <= n:
        w = _load_u64(buf, i)
        m = _zero_bytes(w ^ _TAB) | _zero_bytes(w ^ _LF)
        if cr:
            m |= _zero_bytes(w ^ _CR)
        if m != _EMPTY:
            return i + np.int64(_cttz(m) >> np.uint64(3))
        i += 8
    while i < n and buf[i] != 9 and buf[i] != 10 and not (cr and buf[i] == 13):
        i += 1
    return i


@njit(nogil=True, cache=True, inline="always")
def _find_lf(buf, i, n):
    """First index >= ``i`` holding a newline, else ``n``."""
    while i + 8 <= n:
        m = _zero_bytes(_load_u64(buf, i) ^ _LF)
        if m != _EMPTY:
            return i + np.int64(_cttz(m) >> np.uint64(3))
        i += 8
    while i < n and buf[i] != 10:
        i += 1
    return i


@njit(nogil=True, cache=True, inline="always")
def _word(buf, a, b):
    """Bytes ``buf[a:min(a + 8, b)]`` as a little-endian word, zero padded."""
    m = b - a
    if m <= 0:
        return _EMPTY
    if a + 8 <= len(buf):
        w = _load_u64(buf, a)
        if m < 8:
            w &= (_ONE << np.uint64(8 * m)) - _ONE
        return w
    w = _EMPTY
    for j in range(min(m, 8)):
        w |= np.uint64(buf[a + j]) << np.uint64(8 * j)
    return w


@njit(nogil=True, cache=True, inline="always")
def _mix(w0, w1, w2, n):
    h = (w0 ^ np.uint64(n)) * _M1
    h = (h ^ w1) * _M2
    h = (h ^ w2) * _M1
    h ^= h >> np.uint64(32)
    return h


@njit(nogil=True, cache=True, inline="always")
def _tail_hash(h, buf, a, b):
    for i in range(a, b):
        h = (h ^ np.uint64(buf[i])) * _FNV_PRIME
    return h


@njit(nogil=True, cache=True, inline="always")
def _key(buf, a, b):
    """Row words, hash and length tag of key ``buf[a:b]``."""
    n = b - a
    w0 = _word(buf, a, b)
    w1 = _word(buf, a + 8, b)
    w2 = _word(buf, a + 16, b)
    h = _mix(w0, w1, w2, n)
    if n > INLINE:
        h = _tail_hash(h, buf, a + INLINE, b)
    return w0, w1, w2, h, np.uint64(n) << np.uint64(32)


@njit(nogil=True, cache=True, inline="always")
def _row_holds(rows, pos, w0, w1, w2, tag):
    """Whether slot ``pos`` holds a key with these inline words and length tag (bitwise, no
    branches)."""
    return ((rows[pos, 0] == w0) & (rows[pos, 1] == w1) & (rows[pos, 2] == w2)
            & ((rows[pos, 3] >> np.uint64(32)) << np.uint64(32) == tag))


@njit(nogil=True, cache=True, inline="always")
def _probe(buf, a, b, rows, key_off, arena):
    """``(id, slot)`` of key ``buf[a:b]``: ``id`` -1 when absent, ``slot`` then being where it goes.

    Read-only, so a loop of probes over many keys runs them in parallel in the CPU.
    """
    n = b - a
    w0, w1, w2, h, tag = _key(buf, a, b)
    mask = rows.shape[0] - 1
    pos = np.int64(h & np.uint64(mask))
    while True:
        meta = rows[pos, 3]
        if meta == _EMPTY:
            return -1, pos
        if _row_holds(rows, pos, w0, w1, w2, tag):
            k = np.int64(meta & np.uint64(0xFFFFFFFF)) - 1
            if n <= INLINE:
                return k, pos
            o = key_off[k]
            same = True
            for i in range(INLINE, n):
                if arena[o + i] != buf[a + i]:
                    same = False
                    break
            if same:
                return k, pos
        pos = (pos + 1) & mask


@njit(nogil=True, cache=True)
def _lookup(buf, a, b, rows, key_off, arena, state):
    """Id of key ``buf[a:b]``; inserts it if new. Returns -1 when the table must grow.

    ``rows`` is ``(n_slots, 4)`` uint64 (words 0-2, ``len << 32 | id + 1``; 0 = empty);
    ``state`` = [n_keys, arena_used].
    """
    k, pos = _probe(buf, a, b, rows, key_off, arena)
    if k >= 0:
        return k
    n = b - a
    nk = state[0]
    # keep the load factor under 1/2 and room in the key offsets and the arena
    if 2 * (nk + 1) > rows.shape[0] or nk + 2 > len(key_off) or state[1] + n > len(arena):
        return -1
    w0, w1, w2, h, tag = _key(buf, a, b)
    rows[pos, 0] = w0
    rows[pos, 1] = w1
    rows[pos, 2] = w2
    rows[pos, 3] = tag | np.uint64(nk + 1)
    o = state[1]
    for i in range(n):
        arena[o + i] = buf[a + i]
    key_off[nk + 1] = o + n
    state[1] = o + n
    state[0] = nk + 1
    return nk


@njit(nogil=True, cache=True)
def find_keys(buf, key_a, key_b, n, rows, key_off, arena, ids):
    """``ids[r]`` = id of key ``buf[key_a[r]:key_b[r]]`` for ``r < n``, -1 when absent.

    Returns how many are absent (then :func:`insert_keys`). Each key's home slot is hashed
    ``AHEAD`` keys early and prefetched (kept in ``ids`` until its turn), so a table larger
    than the caches costs overlapping memory reads, not one full miss per key. The common
    case, a short key in its home slot, is tested without branches (a mispredicted branch on
    a value still coming from memory stalls the loop); anything else takes the full probe.
    """
    mask = rows.shape[0] - 1
    for r in range(min(n, AHEAD)):
        ids[r] = np.int64(_key(buf, key_a[r], key_b[r])[3] & np.uint64(mask))
        _prefetch_row(rows, ids[r])
    miss = 0
    for r in range(n):
        q = r + AHEAD
        if q < n:
            ids[q] = np.int64(_key(buf, key_a[q], key_b[q])[3] & np.uint64(mask))
            _prefetch_row(rows, ids[q])
        a = key_a[r]
        b = key_b[r]
        w0, w1, w2, h, tag = _key(buf, a, b)
        pos = ids[r]
        if _row_holds(rows, pos, w0, w1, w2, tag) & (b - a <= INLINE):
            ids[r] = np.int64(rows[pos, 3] & np.uint64(0xFFFFFFFF)) - 1
        else:
            k, _ = _probe(buf, a, b, rows, key_off, arena)
            ids[r] = k
            miss += k < 0
    return miss


@njit(nogil=True, cache=True)
def insert_keys(buf, key_a, key_b, n, rows, key_off, arena, state, ids, r0):
    """Give ids to the absent keys (``ids[r] < 0``) from ``r0``, in order, so new keys are
    numbered by first appearance. Returns -1 when done, else the ``r`` where the table must
    grow (grow it and call again from there)."""
    for r in range(r0, n):
        if ids[r] < 0:
            k = _lookup(buf, key_a[r], key_b[r], rows, key_off, arena, state)
            if k < 0:
                return r
            ids[r] = k
    return -1


@njit(nogil=True, cache=True)
def _rehash(old, rows, key_off, arena):
    mask = rows.shape[0] - 1
    for p in range(old.shape[0]):
        meta = old[p, 3]
        if meta == _EMPTY:
            continue
        k = np.int64(meta & np.uint64(0xFFFFFFFF)) - 1
        n = np.int64(meta >> np.uint64(32))
        h = _mix(old[p, 0], old[p, 1], old[p, 2], n)
        if n > INLINE:
            h = _tail_hash(h, arena, key_off[k] + INLINE, key_off[k] + n)
        pos = np.int64(h & np.uint64(mask))
        while rows[pos, 3] != _EMPTY:
            pos = (pos + 1) & mask
        for j in range(4):
            rows[pos, j] = old[p, j]


_ZEROS = np.uint64(0x3030303030303030)
_SIX = np.uint64(0x0606060606060606)
_F0 = np.uint64(0xF0F0F0F0F0F0F0F0)
_THREES = np.uint64(0x3333333333333333)


@njit(nogil=True, cache=True, inline="always")
def _digits8(buf, a, k):
    """Value of the ``k`` (1..8) ASCII digits at ``buf[a:a + k]``, or -1 if one is not a
    digit; needs ``a + 8 <= len(buf)``. Eight digits are combined in three multiply-adds
    (the SWAR method of simdjson/Lemire)."""
    w = _load_u64(buf, a)
    if k < 8:  # keep the k digits in the high bytes, pad the low ones with '0'
        w = (w << np.uint64(8 * (8 - k))) | (_ZEROS >> np.uint64(8 * k))
    if (w & _F0) | (((w + _SIX) & _F0) >> np.uint64(4)) != _THREES:
        return np.int64(-1)
    w -= _ZEROS
    w = ((w & np.uint64(0x0F000F000F000F00)) >> np.uint64(8)) + (w & np.uint64(0x000F000F000F000F)) * np.uint64(10)
    w = ((w & np.uint64(0x00FF000000FF0000)) >> np.uint64(16)) + (w & np.uint64(0x000000FF000000FF)) * np.uint64(100)
    w = ((w & np.uint64(0x0000FFFF00000000)) >> np.uint64(32)) + (w & np.uint64(0x000000000000FFFF)) * np.uint64(10000)
    return np.int64(w)


@njit(nogil=True, cache=True, inline="always")
def _uint_field(buf, i, n):
    """Parse the digits from ``i`` up to a tab; returns (value, index of the tab) or (0, -1).

    At most 18 digits; eight at a time when the buffer has room, else one by one.
    """
    t = _find_sep(buf, i, n, False)
    k = t - i
    if t >= n or buf[t] != 9 or k == 0 or k > 18:
        return np.int64(0), -1
    if t + 8 <= n:  # the last 8 digits, then the 8 before, then the rest
        lo = min(k, 8)
        v = _digits8(buf, t - lo, lo)
        if k > 8:
            m = min(k - 8, 8)
            h = _digits8(buf, t - lo - m, m)
            v = np.int64(-1) if v < 0 or h < 0 else h * 100000000 + v
            if k > 16:
                g = _digits8(buf, i, k - 16)
                v = np.int64(-1) if v < 0 or g < 0 else g * 10000000000000000 + v
        if v < 0:
            return np.int64(0), -1
        return v, t
    v = np.int64(0)
    for j in range(i, t):
        d = buf[j]
        if d < 48 or d > 57:
            return np.int64(0), -1
        v = v * 10 + (d - 48)
    return v, t


@njit(nogil=True, cache=True)
def parse_fragments(buf, pos, row, lines, chrom_out, start_out, end_out, bc_a, bc_b,
                    c_rows, c_off, c_arena, c_state, count_out=None):
    """Parse lines of ``buf`` from byte ``pos``; fill outputs from index ``row``.

    With ``count_out``, the optional fifth field (the 10x duplicate count) is read too: an
    unsigned integer, 1 when the line has four fields; anything else there is a bad line.

    Barcodes are returned as byte spans ``buf[bc_a[r]:bc_b[r]]`` and given ids afterwards by
    :func:`find_keys` / :func:`insert_keys`: a separate loop of independent probes is about
    twice as fast as probing inside this loop, whose lines depend on each other.

    Returns ``(status, pos, row, lines)`` (``lines``: lines consumed so far, blank ones
    included): ``OK`` when the block is done, ``GROW`` when the chromosome table needs more
    room, ``FULL`` when the outputs do (grow it or them and call again with the returned
    ``pos``/``row``/``lines``), ``BAD`` with ``pos`` at the start of the first malformed line.
    """
    n = len(buf)
    cap = len(start_out)
    pc_a = -1  # previous line's chromosome bytes: files are grouped by chromosome,
    pc_b = -1  # so most lines skip the chromosome hash lookup
    pc = -1
    while pos < n:
        line = pos
        if buf[pos] == 10:  # empty line
            pos += 1
            lines += 1
            continue
        if row >= cap:
            return FULL, line, row, lines
        # field 1: chrom
        i = _find_sep(buf, pos, n, False)
        if i >= n or buf[i] != 9 or i == pos:
            return BAD, line, row, lines
        ca, cb = pos, i
        # fields 2, 3: unsigned decimal integers (at most 18 digits)
        s, i = _uint_field(buf, i + 1, n)
        if i < 0:
            return BAD, line, row, lines
        e, i = _uint_field(buf, i + 1, n)
        if i < 0:
            return BAD, line, row, lines
        # field 4: barcode, ends at tab, '\r' or newline
        i += 1
        ba = i
        i = _find_sep(buf, i, n, True)
        if i == ba or s > e:
            return BAD, line, row, lines
        bb = i
        if count_out is not None:
            cnt = np.int64(1)
            if i < n and buf[i] == 9:
                j = _find_sep(buf, i + 1, n, True)
                if j == i + 1 or j - i - 1 > 18:
                    return BAD, line, row, lines
                cnt = np.int64(0)
                for q in range(i + 1, j):
                    d = buf[q]
                    if d < 48 or d > 57:
                        return BAD, line, row, lines
                    cnt = cnt * 10 + (d - 48)
                i = j
            count_out[row] = cnt
        c = -1
        if pc >= 0 and cb - ca == pc_b - pc_a:
            c = pc
            for k in range(cb - ca):
                if buf[ca + k] != buf[pc_a + k]:
                    c = -1
                    break
        if c < 0:
            c = _lookup(buf, ca, cb, c_rows, c_off, c_arena, c_state)
            if c < 0:
                return GROW, line, row, lines
            pc, pc_a, pc_b = c, ca, cb
        chrom_out[row] = c
        start_out[row] = s
        end_out[row] = e
        bc_a[row] = ba
        bc_b[row] = bb
        row += 1
        lines += 1
        pos = _find_lf(buf, i, n) + 1
    return OK, pos, row, lines


def _rows(n: int) -> np.ndarray:
    """``(n, 4)`` zeroed uint64 rows starting on a 64-byte boundary (a row never straddles
    two cache lines)."""
    raw = np.zeros(4 * n + 8, dtype=np.uint64)
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip: skip + 4 * n].reshape(n, 4)


@njit(nogil=True, cache=True)
def _fixed_width(arena, off, start, n, out):
    """Copy keys ``start..n-1`` into the rows of ``out`` (uint8, zero padded); returns whether
    every byte is ASCII."""
    ascii_only = True
    for k in range(start, n):
        a = off[k]
        for j in range(off[k + 1] - a):
            b = arena[a + j]
            out[k - start, j] = b
            if b >= 128:
                ascii_only = False
    return ascii_only


class KeyTable:
    """Growable exact hash table of byte strings -> dense ids (first-appearance order)."""

    def __init__(self, capacity: int = 1 << 12, arena_bytes: int = 1 << 16):
        self.rows = _rows(2 * capacity)
        self.off = np.zeros(capacity + 1, dtype=np.int64)  # key k is arena[off[k]:off[k + 1]]
        self.arena = np.zeros(arena_bytes, dtype=np.uint8)
        self.state = np.zeros(2, dtype=np.int64)  # n_keys, arena used

    def __len__(self) -> int:
        return int(self.state[0])

    def arrays(self):
        return self.rows, self.off, self.arena, self.state

    def grow(self) -> None:
        """Double every store and rehash (keys keep their ids)."""
        self.off = np.concatenate([self.off, np.zeros(len(self.off), np.int64)])
        self.arena = np.concatenate([self.arena, np.zeros(len(self.arena), np.uint8)])
        old, self.rows = self.rows, _rows(2 * len(self.rows))
        _rehash(old, self.rows, self.off, self.arena)

    def keys_array(self, start: int = 0) -> np.ndarray | None:
        """Keys with ids ``start..`` as a numpy unicode array, built without a Python loop;
        ``None`` when a key is not plain ASCII (or ends in a NUL byte), for :meth:`keys`."""
        n = len(self)
        if start >= n:
            return np.empty(0, dtype="U1")
        lens = np.diff(self.off[start:n + 1])
        width = max(int(lens.max()), 1)
        buf = np.zeros((n - start, width), np.uint8)
        if not _fixed_width(self.arena, self.off, start, n, buf):
            return None
        if (buf[np.arange(n - start), lens - 1] == 0).any():  # fixed-width bytes drop trailing NULs
            return None
        return ascii_to_unicode(buf)

    def keys(self, start: int = 0) -> list[str]:
        """Keys with ids ``start..`` as strings."""
        n = len(self)
        if start >= n:
            return []
        arr = self.keys_array(start)
        if arr is not None:
            return arr.tolist()
        off = self.off[start:n + 1]
        text = self.arena[off[0]:off[-1]].tobytes()
        rel = (off - off[0]).tolist()
        return [text[a:b].decode("utf-8", "replace") for a, b in zip(rel[:-1], rel[1:])]

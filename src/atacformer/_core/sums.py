"""Sums of (row, column) pairs streamed block by block, into a CSR matrix.

Each pair is one int64 key ``row * n_cols + col``. Blocks only append their keys; once the
pending keys outnumber both ``MERGE_MIN_ENTRIES`` and the merged entries, they are sorted
(numpy's vectorised sort, ~12 ns a key here), run-length counted and merged into the sorted
running sums in one linear compiled pass. Memory thus stays within a constant factor of the
output matrix, however many fragments stream through, and no step costs time in the number
of rows (scipy's COO -> CSR conversion per block is ``O(k + n_rows)``, dominated by the rows
with tens of thousands of cells; an argsort carrying the counts is ~10x slower than a sort).
The CSR is built from the sorted unique keys directly.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit

# counted blocks are merged once they hold this many entries and twice the merged size
MERGE_MIN_ENTRIES = 16_000_000


@njit(nogil=True, cache=True)
def _merge_counts(k1, s1, keys, out_k, out_s):
    """Merge sorted unique keys ``k1`` (sums ``s1``) with sorted ``keys`` (repeats allowed, each
    counting 1) into sorted unique ``out_k`` / ``out_s``; returns the number written.

    Counting the runs of ``keys`` in the merge itself spares a pass and two temporaries."""
    i = j = 0
    m = -1
    n1 = len(k1)
    n2 = len(keys)
    while i < n1 or j < n2:
        if j >= n2 or (i < n1 and k1[i] <= keys[j]):
            k = k1[i]
            v = s1[i]
            i += 1
        else:
            k = keys[j]
            v = 1
            j += 1
        if m >= 0 and out_k[m] == k:
            out_s[m] += v
        else:
            m += 1
            out_k[m] = k
            out_s[m] = v
    return m + 1


@njit(nogil=True, cache=True)
def _keys_to_csr(keys, sums, n_cols, indptr, indices, data):
    """Sorted unique keys ``row * n_cols + col`` -> CSR arrays (``indptr`` zeroed, of length
    n_rows + 1). Returns -1, or the first row out of range."""
    n_rows = len(indptr) - 1
    for i in range(len(keys)):
        r = keys[i] // n_cols
        if r >= n_rows:
            return r
        indptr[r + 1] += 1
        indices[i] = keys[i] - r * n_cols
        data[i] = sums[i]
    for r in range(n_rows):
        indptr[r + 1] += indptr[r]
    return -1


class PairSums:
    """Accumulate ``(row, col)`` pairs block by block; :meth:`csr` sums them.

    Examples
    --------
    >>> s = PairSums(n_cols=4)
    >>> s.add(np.array([0, 1, 0]), np.array([2, 3, 2]))
    >>> s.add(np.array([0]), np.array([2]))
    >>> s.csr(2).toarray()
    array([[0, 0, 3, 0],
           [0, 0, 0, 1]], dtype=int32)
    """

    def __init__(self, n_cols: int, merge_min_entries: int | None = None):
        self.n_cols = int(n_cols)
        self.merge_min = MERGE_MIN_ENTRIES if merge_min_entries is None else merge_min_entries
        self._pending: list[np.ndarray] = []
        self._n_pending = 0
        self._keys = np.empty(0, np.int64)
        self._sums = np.empty(0, np.int64)

    def add(self, rows: np.ndarray, cols: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return
        if int(rows.max()) >= (np.iinfo(np.int64).max // max(self.n_cols, 1)):
            raise OverflowError("too many rows for int64 (row, column) keys")
        keys = rows * self.n_cols
        keys += cols
        self.add_keys(keys)

    def add_keys(self, keys: np.ndarray) -> None:
        """Add pairs already as keys ``row * n_cols + col`` (int64)."""
        if not len(keys):
            return
        self._pending.append(keys)
        self._n_pending += len(keys)
        if self._n_pending > max(self.merge_min, len(self._keys)):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0].copy()
        keys.sort()  # in place: the concatenation is ours
        self._pending, self._n_pending = [], 0
        out_k = np.empty(len(self._keys) + len(keys), np.int64)
        out_s = np.empty(len(out_k), np.int64)
        m = _merge_counts(self._keys, self._sums, keys, out_k, out_s)
        del keys
        out_k.resize(m, refcheck=False)  # in place (the slack is returned, nothing is copied)
        out_s.resize(m, refcheck=False)
        self._keys, self._sums = out_k, out_s

    @property
    def n_entries(self) -> int:
        """Entries held now (merged sums plus pending keys)."""
        return len(self._keys) + self._n_pending

    def csr(self, n_rows: int, dtype=np.int32) -> sp.csr_matrix:
        """The summed ``n_rows x n_cols`` matrix, indices sorted within rows."""
        self._merge()
        keys, sums = self._keys, self._sums
        idx_dtype = np.int32 if max(len(keys), self.n_cols) < np.iinfo(np.int32).max else np.int64
        indptr = np.zeros(n_rows + 1, dtype=idx_dtype)
        indices = np.empty(len(keys), dtype=idx_dtype)
        data = np.empty(len(keys), dtype=dtype)
        bad = _keys_to_csr(keys, sums, max(self.n_cols, 1), indptr, indices, data)
        if bad >= 0:
            raise ValueError(f"row {bad} out of range for {n_rows} rows")
        m = sp.csr_matrix((data, indices, indptr), shape=(n_rows, self.n_cols))
        m.has_sorted_indices = True
        m.has_canonical_format = True
        return m

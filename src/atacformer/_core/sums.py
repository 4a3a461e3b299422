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
MERGE_MIN_ENTRIES = 4_000_000


@njit(nogil=True, cache=True)
def _run_lengths(keys, out_keys, out_counts):
    """Count the runs of equal sorted ``keys``; returns the number of runs written."""
    m = -1
    for i in range(len(keys)):
        if m < 0 or keys[i] != out_keys[m]:
            m += 1
            out_keys[m] = keys[i]
            out_counts[m] = 1
        else:
            out_counts[m] += 1
    return m + 1


@njit(nogil=True, cache=True)
def _merge_sums(k1, s1, k2, s2, out_k, out_s):
    """Merge two sorted unique key runs, adding the sums of keys in both."""
    i = j = m = 0
    while i < len(k1) and j < len(k2):
        if k1[i] < k2[j]:
            out_k[m] = k1[i]
            out_s[m] = s1[i]
            i += 1
        elif k2[j] < k1[i]:
            out_k[m] = k2[j]
            out_s[m] = s2[j]
            j += 1
        else:
            out_k[m] = k1[i]
            out_s[m] = s1[i] + s2[j]
            i += 1
            j += 1
        m += 1
    while i < len(k1):
        out_k[m] = k1[i]
        out_s[m] = s1[i]
        i += 1
        m += 1
    while j < len(k2):
        out_k[m] = k2[j]
        out_s[m] = s2[j]
        j += 1
        m += 1
    return m


def count_keys(keys: np.ndarray):
    """Sorted unique keys and how often each occurs."""
    keys = np.sort(np.asarray(keys, dtype=np.int64))
    out_k = np.empty(len(keys), np.int64)
    out_s = np.empty(len(keys), np.int64)
    m = _run_lengths(keys, out_k, out_s)
    return out_k[:m], out_s[:m]


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
        k2, s2 = count_keys(np.concatenate(self._pending))
        self._pending, self._n_pending = [], 0
        out_k = np.empty(len(self._keys) + len(k2), np.int64)
        out_s = np.empty(len(out_k), np.int64)
        m = _merge_sums(self._keys, self._sums, k2, s2, out_k, out_s)
        self._keys, self._sums = out_k[:m], out_s[:m]

    @property
    def n_entries(self) -> int:
        """Entries held now (merged sums plus pending keys)."""
        return len(self._keys) + self._n_pending

    def csr(self, n_rows: int, dtype=np.int32) -> sp.csr_matrix:
        """The summed ``n_rows x n_cols`` matrix, indices sorted within rows."""
        self._merge()
        keys, sums = self._keys, self._sums
        rows = keys // max(self.n_cols, 1)
        cols = keys - rows * self.n_cols
        if len(rows) and rows[-1] >= n_rows:
            raise ValueError(f"row {int(rows[-1])} out of range for {n_rows} rows")
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
        idx_dtype = np.int32 if max(len(keys), self.n_cols) < np.iinfo(np.int32).max else np.int64
        m = sp.csr_matrix((sums.astype(dtype), cols.astype(idx_dtype), indptr.astype(idx_dtype)),
                          shape=(n_rows, self.n_cols))
        m.has_sorted_indices = True
        m.has_canonical_format = True
        return m

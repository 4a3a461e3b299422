"""Reading cells from memory-mapped corpus shards.

Nothing is loaded up front: each shard's ``.npy`` files are memory-mapped on first use
(``numpy.load(mmap_mode="r")``), so reading a cell touches only the pages holding its
``indptr`` entries and its token ids and counts; the operating system's page cache does the
rest. Row gathers are vectorised (one fancy index per shard), never a loop per cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp


class ShardArrays:
    """The three memory-mapped arrays of one shard, checked against its manifest entry.

    Parameters
    ----------
    folder
        The shard folder.
    entry
        Its manifest entry (``n_cells``, ``n_tokens``, ``counts_dtype``).

    Examples
    --------
    >>> arrays = ShardArrays(corpus_path / "shards" / "00000-1a2b3c4d", entry)  # doctest: +SKIP
    >>> arrays.row(0)  # doctest: +SKIP
    (array([ 17, 912]), array([1, 2], dtype=uint8))
    """

    def __init__(self, folder, entry: dict):
        folder = Path(folder)
        self.indptr = self._load(folder / "indptr.npy", (entry["n_cells"] + 1,), np.int64)
        self.indices = self._load(folder / "indices.npy", (entry["n_tokens"],), np.int32)
        self.counts = self._load(folder / "counts.npy", (entry["n_tokens"],), np.dtype(entry["counts_dtype"]))

    @staticmethod
    def _load(path: Path, shape: tuple, dtype) -> np.ndarray:
        try:
            a = np.load(path, mmap_mode="r") if shape[0] else np.load(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"corpus shard file {path} cannot be read: {e}") from None
        if a.shape != shape or a.dtype != np.dtype(dtype):
            raise ValueError(f"corpus shard file {path} is damaged: holds {a.dtype}{list(a.shape)}, "
                             f"manifest says {np.dtype(dtype)}{list(shape)}")
        return a

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and counts of local cell ``i`` (copies, not views of the map)."""
        a, b = int(self.indptr[i]), int(self.indptr[i + 1])
        return np.array(self.indices[a:b], dtype=np.int64), np.array(self.counts[a:b])


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for every ``(s, n)``, without a Python loop.

    Examples
    --------
    >>> ranges(np.array([10, 0]), np.array([2, 3])).tolist()
    [10, 11, 0, 1, 2]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    out_starts = np.cumsum(lengths) - lengths
    return np.repeat(np.asarray(starts, dtype=np.int64) - out_starts, lengths) + np.arange(total)


def take_rows(shards: list[ShardArrays], offsets: np.ndarray, idx: np.ndarray, n_regions: int,
              dtype) -> sp.csr_matrix:
    """Rows ``idx`` (global cell indices, any order, repeats allowed) as one CSR matrix.

    ``offsets[k]`` is the global index of shard ``k``'s first cell (``offsets[-1]`` = total).
    """
    shard_of = np.searchsorted(offsets, idx, side="right") - 1
    starts = np.empty(len(idx), dtype=np.int64)
    lengths = np.empty(len(idx), dtype=np.int64)
    groups = [(k, np.flatnonzero(shard_of == k)) for k in np.unique(shard_of)]
    for k, pos in groups:
        local = idx[pos] - offsets[k]
        ip = shards[k].indptr
        starts[pos] = ip[local]
        lengths[pos] = ip[local + 1] - starts[pos]
    indptr = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int32)
    data = np.empty(indptr[-1], dtype=dtype)
    for k, pos in groups:
        src = ranges(starts[pos], lengths[pos])
        dst = ranges(indptr[pos], lengths[pos])
        indices[dst] = shards[k].indices[src]
        data[dst] = shards[k].counts[src]
    return sp.csr_matrix((data, indices, indptr), shape=(len(idx), n_regions))


def take_slice(shards: list[ShardArrays], offsets: np.ndarray, start: int, stop: int, n_regions: int,
               dtype) -> sp.csr_matrix:
    """Cells ``start:stop`` (global, contiguous) as CSR, read as contiguous slices per shard.

    The output arrays are allocated once and filled shard by shard (no concatenated copies).
    """
    pieces = []  # (shard, row pointers of its cells in the range)
    for k in range(max(int(np.searchsorted(offsets, start, side="right") - 1), 0), len(shards)):
        if offsets[k] >= stop:
            break
        lo, hi = max(start, offsets[k]) - offsets[k], min(stop, offsets[k + 1]) - offsets[k]
        if hi > lo:
            pieces.append((shards[k], np.asarray(shards[k].indptr[lo:hi + 1])))
    n_rows = sum(len(ip) - 1 for _, ip in pieces)
    n_tok = sum(int(ip[-1] - ip[0]) for _, ip in pieces)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    indices = np.empty(n_tok, dtype=np.int32)
    data = np.empty(n_tok, dtype=dtype)
    row = tok = 0
    for shard, ip in pieces:
        a, b = int(ip[0]), int(ip[-1])
        indptr[row + 1:row + len(ip)] = ip[1:] - a + tok
        indices[tok:tok + b - a] = shard.indices[a:b]
        data[tok:tok + b - a] = shard.counts[a:b]
        row, tok = row + len(ip) - 1, tok + b - a
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_regions))

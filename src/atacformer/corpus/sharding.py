"""Which cells each distributed rank and data-loader worker reads in an epoch (no torch needed).

Every (rank, worker) pair computes the same epoch order from ``(seed, epoch)`` and keeps its
own contiguous part of it, so no communication is needed and the parts are disjoint and
together cover the epoch exactly once. Ranks split the order first, then each rank's part is
split among its workers, so the split across ranks does not depend on ``num_workers``.
"""

from __future__ import annotations

import numpy as np

from atacformer.corpus._reader import ranges

__all__ = ["epoch_order", "shard_indices"]


def epoch_order(n: int, epoch: int = 0, seed: int = 0, shuffle: bool = False,
                block_size: int = 1) -> np.ndarray:
    """The order in which the ``n`` cells are visited in ``epoch``.

    Parameters
    ----------
    n
        Number of cells.
    epoch, seed
        The order is a deterministic function of both (and of ``n`` and ``block_size``).
    shuffle
        ``False``: ``0, 1, ..., n-1`` (sequential reads).
    block_size
        With ``shuffle``, permute blocks of ``block_size`` consecutive cells instead of single
        cells (cells keep their order inside a block). Larger blocks read the disk in longer
        contiguous runs; pair them with a shuffle buffer (see
        :class:`atacformer.corpus.CorpusDataset`) so batches still mix datasets.

    Returns
    -------
    numpy.ndarray
        int64 permutation of ``range(n)``; 8 bytes per cell (80 MB for 10^7 cells).

    Examples
    --------
    >>> epoch_order(6, shuffle=True, seed=1, block_size=2).reshape(3, 2)[:, 1] % 2
    array([1, 1, 1])
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(epoch)])
    if block_size == 1:
        return rng.permutation(n).astype(np.int64)
    n_blocks = -(-n // block_size)
    starts = rng.permutation(n_blocks).astype(np.int64) * block_size
    lengths = np.minimum(block_size, n - starts)
    return ranges(starts, lengths)


def shard_indices(n: int, rank: int = 0, world_size: int = 1, worker_id: int = 0, num_workers: int = 1,
                  epoch: int = 0, seed: int = 0, shuffle: bool = False, block_size: int = 1,
                  drop_last: bool = False) -> np.ndarray:
    """Cell indices read by one (rank, worker) in one epoch.

    For a fixed ``(n, epoch, seed, shuffle, block_size, drop_last)`` the results over all
    ``rank < world_size`` and ``worker_id < num_workers`` are disjoint and their union is every
    cell (every cell but the ``n % world_size`` last of the epoch order with ``drop_last``).

    Parameters
    ----------
    n
        Number of cells.
    rank, world_size
        Distributed rank and number of ranks (``torch.distributed``; 0 and 1 without it).
    worker_id, num_workers
        Data-loader worker (``torch.utils.data.get_worker_info()``; 0 and 1 without workers).
    epoch, seed, shuffle, block_size
        See :func:`epoch_order`.
    drop_last
        Give every rank exactly ``n // world_size`` cells, as DDP needs the same number of
        steps on every rank; which cells are left out changes with the epoch when shuffled.

    Returns
    -------
    numpy.ndarray
        int64 cell indices in the order to read them.

    Examples
    --------
    >>> [shard_indices(10, rank=r, world_size=2, worker_id=w, num_workers=2).tolist()
    ...  for r in range(2) for w in range(2)]
    [[0, 1, 2], [3, 4], [5, 6, 7], [8, 9]]
    >>> parts = [shard_indices(10, r, 2, w, 2, epoch=3, seed=7, shuffle=True)
    ...          for r in range(2) for w in range(2)]
    >>> sorted(np.concatenate(parts).tolist()) == list(range(10))
    True
    """
    for name, i, size in (("rank", rank, world_size), ("worker_id", worker_id, num_workers)):
        if size < 1 or not 0 <= i < size:
            raise ValueError(f"{name} must be in [0, {size}) with a positive count, got {name}={i} of {size}")
    order = epoch_order(n, epoch, seed, shuffle, block_size)
    if drop_last:
        order = order[: (n // world_size) * world_size]
    mine = np.array_split(order, world_size)[rank]
    return np.array_split(mine, num_workers)[worker_id]

"""A PyTorch ``IterableDataset`` streaming cells from an on-disk corpus.

Each data-loader worker of each distributed rank reads only its own cells
(:func:`atacformer.corpus.shard_indices`), from the memory-mapped shards, ``read_cells`` cells
per vectorised gather. Memory per worker: the epoch order (8 bytes per cell; 80 MB for
10^7 cells), one read batch and the optional shuffle buffer, whatever the corpus size.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from atacformer.corpus.corpus import Corpus
from atacformer.corpus.sharding import shard_indices

__all__ = ["CorpusDataset"]

logger = logging.getLogger(__name__)


class CorpusDataset(IterableDataset):
    """Stream cells of a :class:`Corpus` as ``{"index", "input_ids", "counts"}`` items.

    ``index`` is the cell's global corpus index (its row in ``corpus.obs``), ``input_ids``
    its sorted token ids (int64) and ``counts`` their counts (``corpus.counts_dtype``), as
    numpy arrays (or tensors with ``return_tensors="pt"``). Cells have different lengths, so
    give the ``DataLoader`` a collator that pads or packs them, and batch in the workers:
    every tensor a worker hands over costs a shared-memory transfer (about a millisecond), so
    one transfer per batch streams thousands of cells per second per worker where one per
    cell streams hundreds. Call :meth:`set_epoch` before each epoch, as with
    ``DistributedSampler``: the order depends on ``(seed, epoch)`` only, so all ranks agree.

    Parameters
    ----------
    corpus
        A :class:`Corpus` or the path of one.
    shuffle, seed, block_size, drop_last
        See :func:`atacformer.corpus.shard_indices`. ``drop_last`` gives every rank the same
        number of cells (needed by DDP).
    rank, world_size
        Distributed position; default from ``torch.distributed`` when it is initialised,
        else a single process.
    indices
        Restrict to these cells (e.g. a training split); sharding is over this subset.
    read_cells
        Cells read per gather from disk.
    shuffle_buffer
        When positive (and ``shuffle``), items pass through a buffer of this many cells and
        leave it in random order: mixes blocks read with ``block_size > 1``.
    return_tensors
        ``"np"`` (numpy arrays) or ``"pt"`` (torch tensors sharing the arrays' memory).

    Examples
    --------
    >>> from torch.utils.data import DataLoader
    >>> ds = CorpusDataset("corpus/", shuffle=True, seed=0)  # doctest: +SKIP
    >>> def collate(items):  # pad token ids to the longest cell of the batch
    ...     ids = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(i["input_ids"]) for i in items],
    ...                                           batch_first=True, padding_value=pad_id)
    ...     return {"input_ids": ids, "index": torch.tensor([i["index"] for i in items])}
    >>> loader = DataLoader(ds, batch_size=64, num_workers=4, collate_fn=collate)  # doctest: +SKIP
    >>> for epoch in range(3):  # doctest: +SKIP
    ...     ds.set_epoch(epoch)
    ...     for batch in loader:
    ...         ...
    """

    def __init__(self, corpus, *, shuffle: bool = False, seed: int = 0, block_size: int = 1,
                 drop_last: bool = False, rank: int | None = None, world_size: int | None = None,
                 indices=None, read_cells: int = 256, shuffle_buffer: int = 0, return_tensors: str = "np"):
        super().__init__()
        self.corpus = corpus if isinstance(corpus, Corpus) else Corpus.open(Path(corpus))
        self.shuffle, self.seed, self.block_size, self.drop_last = shuffle, seed, block_size, drop_last
        self.rank, self.world_size = rank, world_size
        self.indices = None if indices is None else self.corpus._check_indices(indices)
        if read_cells < 1 or shuffle_buffer < 0:
            raise ValueError(f"read_cells must be >= 1 and shuffle_buffer >= 0, got {read_cells}, {shuffle_buffer}")
        if return_tensors not in ("np", "pt"):
            raise ValueError(f"return_tensors must be 'np' or 'pt', got {return_tensors!r}")
        self.read_cells, self.shuffle_buffer = int(read_cells), int(shuffle_buffer)
        self.return_tensors = return_tensors
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch whose order the next iteration follows."""
        self.epoch = int(epoch)

    def _distributed(self) -> tuple[int, int]:
        if self.rank is not None and self.world_size is not None:
            return int(self.rank), int(self.world_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _n(self) -> int:
        return len(self.corpus) if self.indices is None else len(self.indices)

    def __len__(self) -> int:
        """Cells this rank yields per epoch (over all its workers)."""
        rank, world = self._distributed()
        n = self._n() // world * world if self.drop_last else self._n()
        return n // world + int(rank < n % world)  # the sizes numpy.array_split gives

    def cell_indices(self, worker_id: int = 0, num_workers: int = 1) -> np.ndarray:
        """Global cell indices one worker of this rank reads in the current epoch, in order."""
        rank, world = self._distributed()
        pos = shard_indices(self._n(), rank, world, worker_id, num_workers, self.epoch, self.seed,
                            self.shuffle, self.block_size, self.drop_last)
        return pos if self.indices is None else self.indices[pos]

    def __iter__(self):
        info = get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        idx = self.cell_indices(worker_id, num_workers)
        logger.debug("worker %d/%d: %d cells, epoch %d", worker_id, num_workers, len(idx), self.epoch)
        items = self._read(idx)
        if self.shuffle and self.shuffle_buffer > 0:
            rank, _ = self._distributed()
            rng = np.random.default_rng([self.seed, self.epoch, rank, worker_id])
            items = _buffered(items, self.shuffle_buffer, rng)
        return items

    def _read(self, idx: np.ndarray):
        as_tensor = torch.from_numpy if self.return_tensors == "pt" else (lambda a: a)
        for a in range(0, len(idx), self.read_cells):
            part = idx[a:a + self.read_cells]
            X = self.corpus.get_rows(part)
            # views of one fresh array per read (never of the memory map); a pickled view
            # carries only its own cells' data to the main process
            ids = np.split(X.indices.astype(np.int64), X.indptr[1:-1])
            counts = np.split(np.asarray(X.data), X.indptr[1:-1])
            for cell, i, n in zip(part.tolist(), ids, counts):
                yield {"index": cell, "input_ids": as_tensor(i), "counts": as_tensor(n)}


def _buffered(items, size: int, rng: np.random.Generator):
    """Yield ``items`` through a random-replacement buffer of ``size`` (each exactly once)."""
    buf = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = int(rng.integers(size))
        buf[j], item = item, buf[j]
        yield item
    rng.shuffle(buf)
    yield from buf

"""Which cells make each optimizer step, and the data loader that builds them.

The plan of an epoch is a pure function of ``(seed, epoch)`` and the cells' lengths, so every
rank computes the same one without communication and a resumed run recomputes it:

1. the epoch order (:func:`atacformer.corpus.epoch_order`: a permutation, or a permutation
   of blocks of consecutive cells);
2. ``bucket`` batching: the order is cut into windows of ``bucket_window`` batches, each
   window sorted by sequence length and cut into batches of about ``batch_size`` cells,
   and the batches of a window are shuffled; a batch then holds cells of similar length and
   little padding is computed. ``padded`` batching keeps the order (the baseline);
3. each global batch is split into ``n_parts = world_size * grad_accum`` parts of
   consecutive (similar-length) cells: rank ``r`` computes parts ``r * grad_accum`` to
   ``(r + 1) * grad_accum - 1``, one micro-batch each.

Every non-empty cell is in exactly one part of one step of the epoch (no overlap, full
coverage), whatever the number of ranks and data-loader workers, and a part's random draws
come from a generator seeded by ``(seed, epoch, step, part)``. A run on 2 ranks with one
micro-batch each therefore computes exactly the micro-batches of a single process with
``grad_accum=2``, and resuming at a step rebuilds the same batches.

Data-loader workers each build whole micro-batches (read from the memory-mapped corpus,
collate, pad) and hand over one set of tensors per micro-batch; the loader returns them in
order (micro-batch ``i`` of the rank comes from worker ``i % num_workers``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from atacformer.corpus import epoch_order

logger = logging.getLogger(__name__)


@dataclass
class EpochPlan:
    """Global batches of one epoch: batch ``k`` is ``cells[bounds[k]:bounds[k + 1]]``."""

    epoch: int
    cells: np.ndarray
    bounds: np.ndarray

    @property
    def n_steps(self) -> int:
        return len(self.bounds) - 1

    def batch(self, step: int) -> np.ndarray:
        return self.cells[self.bounds[step]:self.bounds[step + 1]]

    def part(self, step: int, part: int, n_parts: int) -> np.ndarray:
        """Cells of ``part`` (of ``n_parts``) of global batch ``step``."""
        return np.array_split(self.batch(step), n_parts)[part]


def plan_epoch(lengths: np.ndarray, batch_size: int, epoch: int, seed: int, batching: str = "bucket",
               bucket_window: int = 64, block_size: int = 1, min_cells: int = 1) -> EpochPlan:
    """The global batches of ``epoch`` (see the module docstring).

    Parameters
    ----------
    lengths
        Sequence length of every cell (0 = empty: left out).
    batch_size
        Cells per global batch (bucketed batches hold ``batch_size`` give or take a few:
        a window's cells are cut into equal batches).
    epoch, seed
        The plan is a deterministic function of them.
    batching, bucket_window, block_size
        ``"bucket"`` or ``"padded"``; batches per sorting window; shuffle block size.
    min_cells
        Fewest cells a batch may hold (the number of parts it is split into).

    Examples
    --------
    >>> plan = plan_epoch(np.array([5, 1, 9, 2, 8, 3]), 2, epoch=0, seed=0)
    >>> sorted(np.concatenate([plan.batch(k) for k in range(plan.n_steps)]).tolist())
    [0, 1, 2, 3, 4, 5]
    """
    lengths = np.asarray(lengths)
    order = epoch_order(len(lengths), epoch, seed, shuffle=True, block_size=block_size)
    order = order[lengths[order] > 0]
    if len(order) < max(min_cells, 1):
        raise ValueError(f"{len(order)} non-empty cells cannot fill one step of {min_cells} micro-batches "
                         "(world size x grad_accum); use more data or fewer parts")
    if batching == "padded":
        n_batches = max(len(order) // batch_size, 1)
        sizes = np.full(n_batches, batch_size)
        sizes[-1] += len(order) - sizes.sum()  # the remainder joins the last batch
        return EpochPlan(epoch, order, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
    rng = np.random.default_rng([int(seed), int(epoch), 1])
    window = batch_size * bucket_window
    cells, sizes = [], []
    for a in range(0, len(order), window):
        w = order[a:a + window]
        w = w[np.argsort(lengths[w], kind="stable")]
        if len(w) < min_cells and cells:  # a tiny last window joins the previous batch
            sizes[-1] += len(w)
            cells.append(w)
            continue
        n_b = max(min(int(round(len(w) / batch_size)), len(w) // max(min_cells, 1)), 1)
        parts = np.array_split(w, n_b)
        for k in rng.permutation(n_b):
            cells.append(parts[k])
            sizes.append(len(parts[k]))
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return EpochPlan(epoch, np.concatenate(cells).astype(np.int64), bounds)


def part_rng(seed: int, epoch: int, step: int, part: int) -> np.random.Generator:
    """The generator of one micro-batch's random draws."""
    return np.random.default_rng([int(seed), int(epoch), int(step), int(part), 7])


class MicroBatches(Dataset):
    """This rank's micro-batches of one epoch from ``start_step`` on, built in ``__getitem__``.

    Item ``i`` is micro-batch ``i % grad_accum`` of step ``start_step + i // grad_accum``:
    a dict with the model's tensors and ``meta`` (step, part, cell indices, real and padded
    token counts, loss weight, worker id).
    """

    def __init__(self, corpus, plan: EpochPlan, batcher, *, seed: int, rank: int, world_size: int,
                 grad_accum: int, start_step: int = 0, labels: dict | None = None):
        self.corpus, self.plan, self.batcher = corpus, plan, batcher
        self.seed, self.rank, self.grad_accum = seed, rank, grad_accum
        self.n_parts = world_size * grad_accum
        self.start_step = start_step
        self.labels = labels or {}

    def __len__(self) -> int:
        return max(self.plan.n_steps - self.start_step, 0) * self.grad_accum

    def __getitem__(self, i: int) -> dict:
        step = self.start_step + i // self.grad_accum
        part = self.rank * self.grad_accum + i % self.grad_accum
        cells = self.plan.part(step, part, self.n_parts)
        X = self.corpus.get_rows(cells)
        rng = part_rng(self.seed, self.plan.epoch, step, part)
        labels = {k: v[cells] for k, v in self.labels.items()}
        batch, weight = self.batcher(X, rng, labels)
        # every padding mask of the batch (a paired model has one per modality)
        masks = [v for k, v in batch.items() if k.endswith("mask") and v.dtype == torch.bool]
        info = torch.utils.data.get_worker_info()
        batch["meta"] = {
            "step": step, "part": part, "cells": cells, "weight": weight,
            "tokens": sum(int(m.sum()) for m in masks), "slots": sum(int(m.numel()) for m in masks),
            "worker": info.id if info is not None else -1,
        }
        return batch


def _one_thread(_):
    torch.set_num_threads(1)  # collation is numpy work; idle OpenMP threads only compete


def make_loader(dataset: MicroBatches, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A loader returning the dataset's micro-batches in order, built in ``num_workers``
    worker processes (or in the main process with 0). It draws nothing from the global
    torch generator (its own is passed), so creating it does not change the training RNG."""
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                      pin_memory=pin_memory, prefetch_factor=4 if num_workers else None,
                      worker_init_fn=_one_thread if num_workers else None,
                      generator=torch.Generator().manual_seed(0))

"""Models trained on examples that are not tokenized cells, through the same loop.

The related systems (TOSICA on expression, GET on region features, the DNA ranker on
sequence) train on in-memory examples rather than a tokenized corpus. A :class:`Task` gives
:func:`~atacformer.train.pretrain` what a corpus gives it otherwise: the examples (rows
fetched by index), a batcher that turns rows into the model's tensors and a loss weight,
and a builder of a fresh model (used for training and for the exported folder). Everything
else — the epoch plan, micro-batches, gradient accumulation, DDP / FSDP, checkpoints and exact
resume, the non-finite loss guard, metrics and the atomic export — is the one loop's.

Examples
--------
>>> import numpy as np
>>> ex = ArrayExamples({"x": np.zeros((4, 3), np.float32), "y": np.arange(4)})
>>> ex.get_rows(np.array([2, 0]))["y"]
array([2, 0])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

#: Models trained through a :class:`Task` (``TrainConfig.model``); each has its own CLI.
TASK_MODELS = ("tosica", "get", "dna-ranker")


class ArrayExamples:
    """Examples held as equally long arrays (dense or CSR), fetched a batch of rows at a time.

    Parameters
    ----------
    arrays
        name -> array whose first axis is the example; ``get_rows`` returns the same names.
    lengths
        Per-example size used by length bucketing (default: all 1, plain shuffling).
    """

    def __init__(self, arrays: dict[str, Any], lengths: np.ndarray | None = None):
        sizes = {k: v.shape[0] for k, v in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"examples must have the same number of rows, got {sizes}")
        import scipy.sparse as sp  # here: the command line reads this module's names

        self.arrays = {k: (v.tocsr() if sp.issparse(v) else np.asarray(v)) for k, v in arrays.items()}
        self.n = next(iter(sizes.values()))
        if self.n == 0:
            raise ValueError("no examples to train on")
        self._lengths = np.ones(self.n, np.int64) if lengths is None else np.asarray(lengths, np.int64)
        if self._lengths.shape != (self.n,):
            raise ValueError(f"lengths has shape {self._lengths.shape}, expected ({self.n},)")

    def __len__(self) -> int:
        return self.n

    def lengths(self) -> np.ndarray:
        return self._lengths

    def get_rows(self, idx: np.ndarray) -> dict[str, Any]:
        idx = np.asarray(idx, np.int64)
        return {k: v[idx] for k, v in self.arrays.items()}


@dataclass
class Task:
    """What :func:`~atacformer.train.pretrain` needs to train a model on non-cell examples.

    Attributes
    ----------
    build
        ``build(seed) -> model``: a fresh model (an ``nn.Module`` with ``save_pretrained``
        whose forward returns an object with ``.loss``); called with the run's seed to train
        and with ``None`` for the exported folder.
    examples
        An object with ``lengths()`` and ``get_rows(indices)`` (e.g. :class:`ArrayExamples`).
    batcher
        ``batcher(rows, rng, labels) -> (tensors, weight)``: the model's keyword inputs and
        what its loss averages over (examples, masked items ...).
    labels
        Optional per-example arrays handed to the batcher with the rows.
    """

    build: Callable[[int | None], Any]
    examples: Any
    batcher: Callable
    labels: dict[str, np.ndarray] | None = None

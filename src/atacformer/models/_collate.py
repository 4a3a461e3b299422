"""Cells -> padded token batches.

A cell is a 1-D array of token ids (its open regions). Cells come either as a sequence of
such arrays or as a cells x regions CSR matrix (row ``i``'s column indices are cell ``i``'s
tokens; explicit zeros are not tokens). Cells longer than a model's context are randomly
subsampled (without replacement, genomic order kept), as in the published Atacformer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch


def as_token_lists(cells) -> list[np.ndarray]:
    """Token-id arrays (int64, sorted) from a CSR matrix or a sequence of arrays.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> as_token_lists(sp.csr_matrix([[0, 2, 0, 1], [1, 0, 0, 0]]))
    [array([1, 3]), array([0])]
    """
    if sp.issparse(cells):
        x = sp.csr_matrix(cells)
        out = []
        for i in range(x.shape[0]):
            lo, hi = x.indptr[i], x.indptr[i + 1]
            idx = x.indices[lo:hi][x.data[lo:hi] != 0]
            out.append(np.sort(idx.astype(np.int64)))
        return out
    if isinstance(cells, np.ndarray) and cells.ndim == 1 and cells.dtype != object:
        raise TypeError("cells must be a sequence of token-id arrays or a CSR matrix, "
                        "not a single 1-D array (wrap one cell as [tokens])")
    if not isinstance(cells, Sequence) and not isinstance(cells, np.ndarray):
        cells = list(cells)
    return [np.asarray(c, dtype=np.int64).reshape(-1) for c in cells]


def subsample_tokens(tokens: np.ndarray, max_length: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_length`` tokens: a uniform random subset when longer, order kept."""
    if len(tokens) <= max_length:
        return tokens
    keep = np.sort(rng.choice(len(tokens), size=max_length, replace=False))
    return tokens[keep]


def check_token_range(token_lists: Sequence[np.ndarray], high: int, what: str = "token") -> None:
    """Raise ``ValueError`` naming the first cell holding a token outside ``[0, high)``."""
    for i, t in enumerate(token_lists):
        if len(t) and (t.min() < 0 or t.max() >= high):
            bad = t[(t < 0) | (t >= high)][0]
            raise ValueError(f"cell {i}: {what} id {int(bad)} is outside the vocabulary "
                             f"(expected 0 <= id < {high}); was it tokenized with another vocabulary?")


def pad_token_lists(token_lists: Sequence[np.ndarray], pad_token_id: int,
                    max_length: int | None = None, rng: np.random.Generator | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad cells into a batch.

    Parameters
    ----------
    token_lists
        One 1-D array of token ids per cell.
    pad_token_id
        Id written into the padding.
    max_length
        Context size; longer cells are randomly subsampled to it.
    rng
        Random generator for subsampling (default: ``np.random.default_rng(0)``).

    Returns
    -------
    input_ids
        ``(B, L)`` int64, ``L`` = the longest (subsampled) cell.
    attention_mask
        ``(B, L)`` bool, True on real tokens.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    if max_length is not None:
        token_lists = [subsample_tokens(t, max_length, rng) for t in token_lists]
    lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
    n = max(int(lengths.max()) if len(lengths) else 0, 1)
    ids = np.full((len(token_lists), n), pad_token_id, dtype=np.int64)
    for i, t in enumerate(token_lists):
        ids[i, : len(t)] = t
    mask = np.arange(n)[None, :] < lengths[:, None]
    return torch.from_numpy(ids), torch.from_numpy(mask)


class CollatorRandom:
    """The random generators of a collator (numpy for sampling, torch for corruption).

    With a ``seed``, streams are reproducible; inside a ``DataLoader`` worker they are
    re-derived from ``(seed, the worker's torch seed)``, so workers (and epochs, whose
    workers get new torch seeds) do not repeat each other's masks.
    """

    def __init__(self, seed: int | None = None):
        self.seed = seed
        self._pid: int | None = None
        self._np: np.random.Generator | None = None
        self._torch: torch.Generator | None = None

    def _refresh(self) -> None:
        if self._pid == os.getpid():
            return
        info = torch.utils.data.get_worker_info()
        entropy = [] if self.seed is None else [int(self.seed)]
        if info is not None:
            entropy.append(int(info.seed) % 2**63)
        ss = np.random.SeedSequence(entropy or None)  # None: fresh OS entropy
        self._np = np.random.default_rng(ss)
        self._torch = torch.Generator()
        self._torch.manual_seed(int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1)))
        self._pid = os.getpid()

    @property
    def numpy(self) -> np.random.Generator:
        self._refresh()
        return self._np

    @numpy.setter
    def numpy(self, rng: np.random.Generator) -> None:
        self._refresh()
        self._np = rng

    @property
    def torch(self) -> torch.Generator:
        self._refresh()
        return self._torch

"""The result of tokenizing cells: a cells x vocabulary count matrix with its barcodes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from atacformer.vocab import Vocabulary


@dataclass
class TokenizedCells:
    """Cells x vocabulary-regions CSR counts.

    Row ``i``'s column indices are cell ``i``'s token ids (sorted), its values the number of
    fragments (or insertions, or summed peak counts) falling in each token.

    Attributes
    ----------
    X
        ``scipy.sparse.csr_matrix`` (n_cells, vocab.n_regions), int32.
    barcodes
        Cell barcodes (row names).
    vocab
        The vocabulary whose regions are the columns.
    obs
        Per-cell metadata (index = barcodes), e.g. ``n_fragments``, ``cell_type``.
    """

    X: sp.csr_matrix
    barcodes: np.ndarray
    vocab: Vocabulary
    obs: pd.DataFrame = field(default=None)
    uns: dict = field(default_factory=dict)  # unstructured results (e.g. ``uns["qc"]``), copied to AnnData

    def __post_init__(self):
        if self.obs is None:
            self.obs = pd.DataFrame(index=pd.Index(np.asarray(self.barcodes, dtype=str), name=None))
        if self.X.shape != (len(self.barcodes), self.vocab.n_regions):
            raise ValueError(f"X has shape {self.X.shape}, expected ({len(self.barcodes)}, {self.vocab.n_regions})")

    @property
    def n_cells(self) -> int:
        return self.X.shape[0]

    def tokens(self, i: int) -> np.ndarray:
        """Sorted token ids of cell ``i``."""
        return self.X.indices[self.X.indptr[i]:self.X.indptr[i + 1]].astype(np.int64)

    def to_anndata(self):
        """AnnData with ``X`` = counts CSR, ``var`` = chrom/start/end of each token,
        ``obs_names`` = barcodes, and the vocabulary's hash/specials in ``uns``."""
        import anndata as ad

        obs = self.obs.copy()
        obs.index = pd.Index(np.asarray(self.barcodes, dtype=str))
        a = ad.AnnData(X=self.X, obs=obs, var=self.vocab.to_dataframe())
        a.uns["atacformer_vocab"] = {"hash": self.vocab.region_hash(), "genome": self.vocab.genome or "",
                                     "bin_size": int(self.vocab.bin_size or 0),
                                     "special_tokens": list(self.vocab.special_tokens)}
        a.uns.update(self.uns)
        return a

    def write_h5ad(self, path) -> None:
        """Write what :meth:`to_anndata` builds, atomically (temporary file, then rename), with
        h5py alone (:func:`atacformer.tokenizers._h5ad.write_cells_h5ad`)."""
        from atacformer.tokenizers._h5ad import write_cells_h5ad

        write_cells_h5ad(self, path)

    def summary(self) -> dict:
        nnz = np.diff(self.X.indptr)
        return {"cells": int(self.n_cells), "vocabulary_regions": int(self.vocab.n_regions),
                "tokens": int(self.X.nnz), "counts": int(self.X.sum()),
                "tokens_per_cell_median": float(np.median(nnz)) if len(nnz) else 0.0,
                "regions_used": int(np.count_nonzero(np.bincount(self.X.indices, minlength=1)))}


def check_output_file(path, *, overwrite: bool = False, inputs=(), suffix: str = ".h5ad") -> None:
    """Refuse an output path before any work is done: a folder, a missing parent folder,
    one of the inputs, or an existing file without ``overwrite``.

    Examples
    --------
    >>> check_output_file("out.h5ad", inputs=["out.h5ad"])  # doctest: +SKIP
    Traceback (most recent call last):
    atacformer.errors.OutputError: out.h5ad is also an input; write to another file
    """
    from atacformer.errors import OutputError

    p = Path(os.fspath(path))
    if p.is_dir():
        raise OutputError(f"{p} is a folder; name an output file{f' ({suffix})' if suffix else ''} inside it")
    if suffix and not p.name.endswith(suffix):
        raise OutputError(f"{p}: the output must be a {suffix} file")
    if not p.parent.exists():
        raise OutputError(f"{p.parent}: the output folder does not exist")
    for i in inputs:
        if isinstance(i, (str, os.PathLike)) and os.path.exists(i) and p.exists() and os.path.samefile(i, p):
            raise OutputError(f"{p} is also an input; write to another file")
    if p.exists() and not overwrite:
        raise OutputError(f"{p} exists; pass --overwrite to replace it")


def write_h5ad_atomic(adata, path) -> None:
    """Write an AnnData to ``path`` through a temporary file and a rename, so a failure
    leaves no partial ``.h5ad`` behind."""
    from atacformer.io._atomic import atomic_path

    with atomic_path(path, ".tmp.h5ad") as tmp:
        adata.write_h5ad(tmp)


def csr_from_pairs(rows, cols, n_rows: int, n_cols: int, data=None) -> sp.csr_matrix:
    """Sum duplicate ``(row, col)`` pairs into a CSR matrix with sorted indices (linear time)."""
    rows = np.asarray(rows)
    if data is None:
        data = np.ones(len(rows), dtype=np.int32)
    m = sp.csr_matrix((data, (rows, cols)), shape=(n_rows, n_cols))
    m.sum_duplicates()
    m.sort_indices()
    return m

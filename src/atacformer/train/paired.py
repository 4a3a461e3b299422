"""The RNA side of paired (multiome) training: read, check and align RNA counts to the
training corpus's ATAC cells.

Cells are paired by name: an ATAC cell's barcode (the ``obs_names`` of its AnnData) and the
RNA AnnData's ``obs_names``. ATAC cells without an RNA partner, and cells listed in an
exclusion file, stay in the corpus but are never trained on (their length is set to 0 in the
epoch plan). Every check here runs before the run writes anything.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import scipy.sparse as sp

from atacformer.errors import InputFormatError

logger = logging.getLogger(__name__)

#: Cells whose values are checked for counts (all of them up to this many).
CHECKED_CELLS = 2000


def read_rna(source):
    """The RNA AnnData (a path or an AnnData), its ``X`` checked to be raw counts.

    Raises
    ------
    InputFormatError
        ``X`` holds a negative or non-integer value (log-normalised or scaled data), naming
        the cell, gene and value.
    """
    import anndata as ad

    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such RNA file")
        adata = ad.read_h5ad(path)
    else:
        path, adata = None, source
    check_counts(adata.X[: min(adata.n_obs, CHECKED_CELLS)], adata.obs_names, adata.var_names,
                 path or "the RNA AnnData")
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][0]
        raise InputFormatError(path, "RNA obs_names repeat; cells are paired by name", value=dup)
    if not adata.var_names.is_unique:
        adata = adata[:, ~adata.var_names.duplicated()].copy()
        logger.warning("%s: repeated gene names; the first of each is kept", path or "RNA")
    return adata


def check_counts(X, obs_names, var_names, where) -> None:
    """Refuse a matrix that is not counts (negative or non-integer values)."""
    X = sp.csr_matrix(X)
    bad = np.flatnonzero((X.data < 0) | (X.data != np.round(X.data)))
    if len(bad):
        k = int(bad[0])
        row = int(np.searchsorted(X.indptr, k, side="right") - 1)
        raise InputFormatError(
            where, f"the RNA matrix must hold raw counts (non-negative integers; CRAFT normalises them itself) "
            f"but cell {obs_names[row]!r}, gene {var_names[X.indices[k]]!r} has a value that is not; pass the "
            "raw counts layer (e.g. adata.layers['counts']) as X", value=float(X.data[k]))


def excluded_cells(path) -> set[str]:
    """Cell names of an exclusion file (one per line)."""
    if path is None:
        return set()
    from atacformer.tokenizers.fragments import read_barcodes

    return set(read_barcodes(path))


def check_pairing(atac_names, rna, exclude=None, where: str = "the training data") -> int:
    """Number of trainable paired cells; raise when there is none."""
    names = pd.Index(atac_names).astype(str)
    shared = names.intersection(rna.obs_names.astype(str))
    if exclude:
        shared = shared.difference(pd.Index(sorted(exclude)))
    if len(shared) == 0:
        raise ValueError(
            f"no cell of {where} ({len(names):,} cells, e.g. {list(names[:2])}) has an RNA partner "
            f"({rna.n_obs:,} RNA cells, e.g. {list(rna.obs_names[:2])})"
            + (" outside the excluded cells" if exclude else "")
            + "; ATAC and RNA cells are paired by obs_names")
    return len(shared)


def align_rna(corpus_names, rna, exclude=None) -> tuple[sp.csr_matrix, np.ndarray]:
    """RNA counts in corpus order (float32 CSR; zero rows for unpaired cells) and the mask of
    cells to train on (paired, not excluded)."""
    names = pd.Index(corpus_names).astype(str)
    pos = pd.Index(rna.obs_names.astype(str)).get_indexer(names)
    mask = pos >= 0
    if exclude:
        mask &= ~names.isin(sorted(exclude))
    X = sp.csr_matrix(rna.X, dtype=np.float32)
    rows = np.where(pos >= 0, pos, 0)
    out = X[rows]
    if (~(pos >= 0)).any():
        out = sp.csr_matrix(out.multiply((pos >= 0)[:, None].astype(np.float32)))
    out.eliminate_zeros()
    logger.info("paired RNA: %d of %d corpus cells trainable (%d genes)", int(mask.sum()), len(names), rna.n_vars)
    return out, mask


def corpus_cell_names(corpus) -> np.ndarray:
    """The barcodes of a :class:`~atacformer.train.data.CorpusSet`, in corpus order."""
    return np.concatenate([c.obs["barcode"].astype(str).to_numpy() for c in corpus.corpora])

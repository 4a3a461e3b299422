"""Gene values -> value-bin ids, and cells -> gene-token tensors (numpy; no AnnData, no torch
model code).

The multimodal model (gene-level RNA + ATAC, thesis ch. 4) reads each cell as gene tokens
with a binned value. A modality's counts (RNA UMI counts, or ATAC gene activity) become
bins in four steps:

1. counts per 10,000 per cell (``target_sum``), so that depth does not set the bin;
2. ``log1p``;
3. each gene scaled by its inverse document frequency over the training cells,
   ``idf = log(1 + n_cells / (1 + n_cells_nonzero))``: a gene non-zero in nearly every cell
   (housekeeping genes, ubiquitously open promoters) is down-weighted relative to one
   non-zero in few cells, which tells cell states apart (the thesis' "down-weighting of
   ubiquitous features");
4. the non-zero values into ``n_bins`` percentile bins whose edges are the
   ``100 k / n_bins`` percentiles (k = 1 .. n_bins - 1) of all non-zero values of the training
   matrix; a zero stays bin 0, bins are 1 .. n_bins (``1 + number of edges <= value``).

The IDF and the edges are fitted once per modality on the training matrix
(:func:`fit_value_bins`) and stored in the model's config, so that inference bins new cells
exactly as training did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

ZERO_VALUE = 0  # value id of a zero (bins are 1 .. n_bins, then the mask id n_bins + 1)


@dataclass
class ValueBins:
    """One modality's fitted binning: per-gene ``idf`` (n_genes,) and the ``edges``
    (n_bins - 1,) between percentile bins of the normalised non-zero values."""

    idf: np.ndarray
    edges: np.ndarray

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1


def _csr(counts, what: str = "counts") -> sp.csr_matrix:
    x = sp.csr_matrix(counts, dtype=np.float64, copy=True)
    x.eliminate_zeros()
    if x.nnz and x.data.min() < 0:
        raise ValueError(f"{what}: values must be non-negative, found {x.data.min()}")
    return x


def gene_idf(counts) -> np.ndarray:
    """``log(1 + n_cells / (1 + n_cells_nonzero))`` of every gene (column) of a cells x genes
    matrix.

    Examples
    --------
    >>> gene_idf(np.array([[1, 0], [2, 0], [0, 1]])).round(3).tolist()
    [0.693, 0.916]
    """
    x = _csr(counts)
    df = np.bincount(x.indices, minlength=x.shape[1]).astype(np.float64)
    return np.log1p(x.shape[0] / (1.0 + df))


def normalize_values(counts, idf: np.ndarray, target_sum: float = 1e4) -> sp.csr_matrix:
    """Steps 1-3 of the module docstring: counts per ``target_sum`` per cell, ``log1p``,
    times each gene's ``idf``. Returns a float64 CSR of the same shape (a cell without counts
    stays all-zero)."""
    x = _csr(counts)
    idf = np.asarray(idf, dtype=np.float64)
    if idf.shape != (x.shape[1],):
        raise ValueError(f"idf has shape {idf.shape}; the matrix has {x.shape[1]} genes")
    totals = np.asarray(x.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    x.data *= np.repeat(scale, np.diff(x.indptr))
    np.log1p(x.data, out=x.data)
    x.data *= idf[x.indices]
    x.eliminate_zeros()  # a gene with idf 0 carries no value
    return x


def fit_value_bins(counts, n_bins: int = 5, target_sum: float = 1e4) -> ValueBins:
    """Fit one modality's IDF and percentile edges on its training matrix (cells x genes).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> fit = fit_value_bins(rng.poisson(1.0, (50, 20)))
    >>> fit.idf.shape, fit.edges.shape
    ((20,), (4,))
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    idf = gene_idf(counts)
    values = normalize_values(counts, idf, target_sum).data
    q = 100.0 * np.arange(1, n_bins) / n_bins
    edges = np.percentile(values, q) if len(values) else np.zeros(n_bins - 1)
    return ValueBins(idf=idf, edges=np.asarray(edges, dtype=np.float64))


def bin_values(counts, bins: ValueBins | None = None, n_bins: int = 5,
               target_sum: float = 1e4) -> tuple[sp.csr_matrix, ValueBins]:
    """Value-bin ids of a cells x genes count matrix (module docstring).

    Parameters
    ----------
    counts
        Cells x genes raw counts (RNA UMIs or ATAC gene activity), dense or sparse.
    bins
        A fitted :class:`ValueBins` (the config's, at inference); ``None`` fits one on
        ``counts`` (a training matrix).
    n_bins
        Bins of non-zero values when fitting.
    target_sum
        Counts per cell after depth normalisation.

    Returns
    -------
    (scipy.sparse.csr_matrix, ValueBins)
        int8 bin ids 1 .. n_bins at the non-zero entries (zeros are bin 0, not stored), and the
        binning used.

    Examples
    --------
    >>> ids, fit = bin_values(np.array([[0, 3, 1], [5, 0, 2], [1, 1, 1]]))
    >>> ids.toarray().tolist()
    [[0, 5, 1], [5, 0, 1], [4, 4, 2]]
    """
    if bins is None:
        bins = fit_value_bins(counts, n_bins, target_sum)
    x = normalize_values(counts, bins.idf, target_sum)
    ids = 1 + np.searchsorted(np.asarray(bins.edges), x.data, side="right")
    out = sp.csr_matrix((ids.astype(np.int8), x.indices.copy(), x.indptr.copy()), shape=x.shape)
    return out, bins


@dataclass
class GeneTokens:
    """Padded gene tokens of a batch of cells (one modality): ``ids`` (B, L) gene ids (pad =
    ``pad_id``), ``values`` (B, L) bin ids (0 at padding), ``mask`` (B, L) bool (True = real
    token). ``profile`` (B, n_genes) int64 holds every gene's bin (zeros included), when
    asked for."""

    ids: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    profile: torch.Tensor | None = None


def gene_tokens(counts, bins: ValueBins, max_genes: int, pad_id: int,
                rng: np.random.Generator | None = None, target_sum: float = 1e4,
                profile: bool = False) -> GeneTokens:
    """Cells x genes counts -> a cell's non-zero genes as tokens, the ``max_genes`` of highest
    normalised value when it has more (ties broken by ``rng`` draws, or by gene order without
    one); tokens in gene order (a fixed order across cells, which the thesis found best; the
    encoder has no positions, so order changes only the layout). With ``profile=True`` the
    dense bins of all genes come too (the cross-modal imputation target).

    Examples
    --------
    >>> fit = fit_value_bins(np.array([[1, 0, 2], [0, 3, 1]]))
    >>> t = gene_tokens(np.array([[1, 0, 2], [0, 3, 1]]), fit, max_genes=8, pad_id=3)
    >>> t.ids.tolist(), t.mask.tolist()
    ([[0, 2], [1, 2]], [[True, True], [True, True]])
    """
    x = normalize_values(counts, bins.idf, target_sum)
    x.sort_indices()
    n = x.shape[0]
    lengths = np.diff(x.indptr)
    cell = np.repeat(np.arange(n), lengths)
    ids = 1 + np.searchsorted(np.asarray(bins.edges), x.data, side="right")
    tie = rng.random(len(cell)) if rng is not None else np.zeros(len(cell))
    # rank every gene within its cell by value (descending), then keep the top max_genes
    order = np.lexsort((tie, -x.data, cell))
    rank = np.empty(len(cell), np.int64)
    rank[order] = np.arange(len(cell)) - np.repeat(x.indptr[:-1], lengths)
    keep = rank < max_genes
    kept_len = np.minimum(lengths, max_genes)
    width = max(int(kept_len.max()) if n else 0, 1)
    col = np.arange(int(keep.sum())) - np.repeat(np.cumsum(kept_len) - kept_len, kept_len)
    row = cell[keep]
    tok = np.full((n, width), pad_id, dtype=np.int64)
    val = np.zeros((n, width), dtype=np.int64)
    tok[row, col] = x.indices[keep]  # CSR order within a cell = gene order
    val[row, col] = ids[keep]
    dense = None
    if profile:
        dense = np.zeros(x.shape, dtype=np.int64)
        dense[cell, x.indices] = ids
        dense = torch.from_numpy(dense)
    return GeneTokens(torch.from_numpy(tok), torch.from_numpy(val), torch.from_numpy(tok != pad_id), dense)


__all__ = ["ValueBins", "ZERO_VALUE", "bin_values", "fit_value_bins", "gene_idf", "gene_tokens",
           "normalize_values"]

"""RAGI: residual average Gini index (Chen et al. 2019, Genome Biology 20:241).

A clustering without ground truth is scored by how cluster-specific the accessibility of
known marker genes is, compared with housekeeping genes (open everywhere): for each gene,
the mean accessibility in each cluster is computed, and the Gini index of those cluster
means measures how unevenly the gene is open across clusters. RAGI is the mean Gini of the
marker genes minus the mean Gini of the housekeeping genes; higher is better (clusters
that split cell types concentrate marker accessibility without splitting housekeeping
accessibility). Gene-level accessibility (cells x genes, e.g. gene activity or promoter
counts) is supplied by the caller.

Gini of non-negative values ``x_1 <= ... <= x_n``: ``sum_i (2i - n - 1) x_i / (n sum_i x_i)``,
equal to the mean absolute difference over all pairs divided by twice the mean; 0 when all
clusters are equal (also for a gene closed everywhere), ``(n - 1) / n`` when one cluster
holds everything.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)

__all__ = ["cluster_means", "gini", "ragi"]


def gini(values, axis: int = -1) -> np.ndarray | float:
    """Gini index of non-negative values along ``axis`` (module notes).

    Examples
    --------
    >>> gini([1.0, 1.0, 1.0, 1.0])
    0.0
    >>> gini([0.0, 0.0, 0.0, 4.0])
    0.75
    """
    x = np.sort(np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1), axis=-1)
    if x.size and x.min() < 0:
        raise ValueError(f"gini: values must be non-negative (got minimum {x.min()})")
    n = x.shape[-1]
    weights = 2 * np.arange(1, n + 1) - n - 1
    total = x.sum(axis=-1)
    out = np.divide(x @ weights, n * total, out=np.zeros_like(total), where=total > 0)
    return float(out) if out.ndim == 0 else out


def cluster_means(x, clusters) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each column of ``x`` (cells x features) within each cluster.

    Returns ``(means, cluster_names)`` with ``means`` of shape ``(n_clusters, n_features)``.
    """
    c = np.asarray(clusters)
    if c.shape != (x.shape[0],):
        raise ValueError(f"clusters has shape {c.shape}, expected ({x.shape[0]},)")
    names, codes = np.unique(c, return_inverse=True)
    onehot = sp.csr_matrix((np.ones(c.size), (codes, np.arange(c.size))),
                           shape=(names.size, c.size))
    sums = onehot @ x
    sums = sums.toarray() if sp.issparse(sums) else np.asarray(sums)
    return sums / np.bincount(codes)[:, None], names


def _columns(genes: Sequence[str], gene_names: np.ndarray, which: str) -> np.ndarray:
    pos = pd.Index(gene_names).get_indexer(list(genes))
    missing = [g for g, p in zip(genes, pos) if p < 0]
    if missing:
        logger.warning("ragi: %d %s genes not among the columns, skipped: %s",
                       len(missing), which, missing[:10])
    if (pos >= 0).sum() == 0:
        raise ValueError(f"ragi: none of the {len(genes)} {which} genes is a column")
    return pos[pos >= 0]


def ragi(
    gene_accessibility,
    clusters,
    marker_genes: Sequence[str],
    housekeeping_genes: Sequence[str],
    gene_names: Sequence[str] | None = None,
) -> float:
    """Residual average Gini index of a clustering.

    Parameters
    ----------
    gene_accessibility
        Cells x genes, non-negative, dense or sparse; or an AnnData (``X``, with its
        ``var_names`` as gene names).
    clusters
        Cluster of each cell.
    marker_genes, housekeeping_genes
        Gene names; those absent from the columns are skipped with a warning.
    gene_names
        Column names of a matrix (taken from ``var_names`` for an AnnData).

    Returns
    -------
    float
        Mean Gini of marker genes minus mean Gini of housekeeping genes.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[5, 1], [5, 1], [0, 1], [0, 1]])
    >>> ragi(x, [0, 0, 1, 1], ["M"], ["H"], gene_names=["M", "H"])
    0.5
    """
    if hasattr(gene_accessibility, "var_names"):
        gene_names = gene_accessibility.var_names.to_numpy()
        gene_accessibility = gene_accessibility.X
    if gene_names is None:
        raise ValueError("ragi: gene_names is needed for a matrix")
    gene_names = np.asarray(gene_names)
    if gene_names.shape != (gene_accessibility.shape[1],):
        raise ValueError(f"ragi: {gene_names.size} gene names for "
                         f"{gene_accessibility.shape[1]} columns")
    markers = _columns(marker_genes, gene_names, "marker")
    housekeeping = _columns(housekeeping_genes, gene_names, "housekeeping")
    means, _ = cluster_means(gene_accessibility, clusters)
    g = gini(means, axis=0)
    return float(g[markers].mean() - g[housekeeping].mean())

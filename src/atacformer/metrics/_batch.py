"""Batch mixing of an embedding: silhouette by batch, iLISI, kBET.

:func:`atacformer.metrics.integration_scores` computes these with scib-metrics; these
NumPy / scikit-learn versions stand in when scib-metrics is not installed. On the same
neighbours they give scib-metrics' LISI (to float32 rounding) and kBET p-values.

* ``silhouette_batch`` follows scib: within each cell-type label, the silhouette of the
  cells with the batches as clusters; each cell scores ``1 - |silhouette|`` (1: batches
  mixed, 0: separated); per-label means are averaged. Labels present in one batch only are
  skipped.
* ``lisi`` / ``ilisi`` follow Harmony's ``compute_lisi`` (Korsunsky et al. 2019): the
  ``3 * perplexity`` nearest neighbours of each cell (itself included in the search, then
  dropped), Gaussian weights ``exp(-beta * d)`` on the Euclidean distances with ``beta``
  bisected per cell until the weights' entropy is ``log(perplexity)`` (tolerance 1e-5,
  at most 50 steps), Simpson index ``sum_b p_b^2`` of the batch weights, LISI =
  1 / Simpson: the effective number of batches around a cell (1 .. n_batches). Cells whose
  weights all vanish (duplicated points far from everything else) get NaN.
* ``kbet`` follows Buttner et al. 2019: for each tested cell, Pearson's chi-square test of
  the batch counts among its ``k`` nearest neighbours (itself excluded) against the global
  batch frequencies, ``n_batches - 1`` degrees of freedom; the acceptance rate is the share
  of tested cells with p >= alpha (1: well mixed).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.stats import chi2
from sklearn.metrics import silhouette_samples
from sklearn.neighbors import NearestNeighbors

logger = logging.getLogger(__name__)

__all__ = ["ilisi", "kbet", "lisi", "silhouette_batch"]


def _inputs(x, batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    b = np.asarray(batch)
    if x.ndim != 2 or b.shape != (x.shape[0],):
        raise ValueError(f"embedding {x.shape} and batch {b.shape}: need (n, d) and (n,)")
    if not np.isfinite(x).all():
        raise ValueError("embedding holds NaN or infinite values")
    names, codes = np.unique(b, return_inverse=True)
    return x, codes, names


def silhouette_batch(x, batch, labels, *, metric: str = "euclidean") -> float:
    """scib's batch silhouette: mean over labels of mean ``1 - |silhouette by batch|``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 5))
    >>> round(silhouette_batch(x, rng.integers(0, 2, 200), np.zeros(200)), 1)
    1.0
    """
    x, codes, _ = _inputs(x, batch)
    lab = np.asarray(labels)
    per_label = []
    for value in np.unique(lab):
        mask = lab == value
        n_b = np.unique(codes[mask]).size
        if n_b < 2 or n_b >= mask.sum():
            logger.debug("silhouette_batch: label %r skipped (%d batches)", value, n_b)
            continue
        s = silhouette_samples(x[mask], codes[mask], metric=metric)
        per_label.append(np.mean(1.0 - np.abs(s)))
    if not per_label:
        raise ValueError("silhouette_batch: no label holds cells of two batches")
    return float(np.mean(per_label))


def _simpson(dist: np.ndarray, nbr_codes: np.ndarray, n_batches: int, perplexity: float,
             tol: float = 1e-5, max_steps: int = 50) -> np.ndarray:
    """Per-row Simpson index of neighbour batches under perplexity-calibrated weights."""
    n = dist.shape[0]
    beta = np.ones(n)
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    log_u = np.log(perplexity)

    def entropy(beta):
        p = np.exp(-dist * beta[:, None])
        s = p.sum(axis=1)
        ok = s > 0
        h = np.zeros(n)
        h[ok] = np.log(s[ok]) + beta[ok] * (dist[ok] * p[ok]).sum(1) / s[ok]
        p[ok] /= s[ok, None]
        p[~ok] = 0.0
        return h, p

    h, p = entropy(beta)
    for _ in range(max_steps):
        diff = h - log_u
        active = np.abs(diff) > tol
        if not active.any():
            break
        up = active & (diff > 0)
        down = active & (diff <= 0)
        lo[up] = beta[up]
        beta[up] = np.where(np.isinf(hi[up]), beta[up] * 2, (beta[up] + hi[up]) / 2)
        hi[down] = beta[down]
        beta[down] = np.where(np.isinf(lo[down]), beta[down] / 2, (beta[down] + lo[down]) / 2)
        h_new, p_new = entropy(beta)
        h[active], p[active] = h_new[active], p_new[active]
    per_batch = np.zeros((n, n_batches))
    np.add.at(per_batch, (np.repeat(np.arange(n), dist.shape[1]), nbr_codes.ravel()), p.ravel())
    simpson = (per_batch**2).sum(axis=1)
    simpson[h == 0] = np.nan
    return simpson


def lisi(x, labels, *, perplexity: float = 30) -> np.ndarray:
    """Per-cell LISI of ``labels`` (batches for iLISI, cell types for cLISI).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(300, 4))
    >>> v = lisi(x, np.arange(300) % 2)
    >>> bool(1.8 < np.median(v) <= 2.0)
    True
    """
    x, codes, names = _inputs(x, labels)
    # Harmony searches 3 * perplexity points, the cell itself among them.
    k = int(min(3 * perplexity, x.shape[0]))
    dist, idx = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    dist, idx = _drop_self(dist, idx)
    simpson = _simpson(dist, codes[idx], names.size, perplexity)
    n_bad = int(np.isnan(simpson).sum())
    if n_bad:
        logger.warning("lisi: %d cells have all-zero neighbour weights; LISI is NaN", n_bad)
    return 1.0 / simpson


def _drop_self(dist: np.ndarray, idx: np.ndarray, own: np.ndarray | None = None):
    """Remove each row's own point from a kNN result of ``k`` columns, keeping ``k - 1``.

    ``own[i]`` is the index of row ``i``'s point (``i`` by default). When duplicates push
    a point out of its own neighbour list, the farthest neighbour is dropped instead.
    """
    n, k = idx.shape
    own = np.arange(n) if own is None else np.asarray(own)
    is_self = idx == own[:, None]
    is_self[~is_self.any(axis=1), k - 1] = True
    keep = ~is_self
    return dist[keep].reshape(n, k - 1), idx[keep].reshape(n, k - 1)


def ilisi(x, batch, *, perplexity: float = 30, scale: bool = False) -> float:
    """Median integration LISI over cells.

    Parameters
    ----------
    x
        Embedding, cells x dims.
    batch
        Batch of each cell.
    perplexity
        Effective neighbourhood size (Harmony's default 30).
    scale
        Return ``(median - 1) / (n_batches - 1)`` in [0, 1] (scib's scaling) instead of the
        raw median in [1, n_batches].

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(300, 4))
    >>> bool(1.8 < ilisi(x, np.arange(300) % 2) <= 2.0)
    True
    """
    values = lisi(x, batch, perplexity=perplexity)
    med = float(np.nanmedian(values))
    n_b = np.unique(np.asarray(batch)).size
    if scale:
        return (med - 1.0) / (n_b - 1.0) if n_b > 1 else 0.0
    return med


def kbet(x, batch, *, n_neighbors: int | None = None, alpha: float = 0.05,
         n_test: int | None = None, seed: int = 0, return_pvalues: bool = False):
    """kBET acceptance rate (module notes).

    Parameters
    ----------
    x
        Embedding, cells x dims.
    batch
        Batch of each cell.
    n_neighbors
        Neighbourhood size ``k``; default a quarter of the mean batch size, clipped to
        [10, 100] and below the number of cells (kBET starts from the mean batch size and
        tunes it; this fixed rule keeps the metric cheap and deterministic).
    alpha
        Significance level.
    n_test
        Test a random subset of this many cells (kBET's default is 10 %); ``None`` tests
        every cell.
    seed
        Seed of the subset.
    return_pvalues
        Also return the p-value of every tested cell.

    Returns
    -------
    float or tuple
        Acceptance rate, or ``(rate, pvalues)``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(400, 4))
    >>> bool(kbet(x, np.arange(400) % 2, n_neighbors=20) > 0.8)
    True
    """
    x, codes, names = _inputs(x, batch)
    n = x.shape[0]
    if names.size < 2:
        raise ValueError("kbet: needs at least two batches")
    freq = np.bincount(codes) / n
    if n_neighbors is None:
        n_neighbors = int(np.clip(n / names.size / 4, 10, 100))
    k = int(min(n_neighbors, n - 1))
    cells = np.arange(n)
    if n_test is not None and n_test < n:
        cells = np.sort(np.random.default_rng(seed).choice(n, n_test, replace=False))
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x[cells])
    _, idx = _drop_self(dist, idx, own=cells)
    observed = np.zeros((cells.size, names.size))
    np.add.at(observed, (np.repeat(np.arange(cells.size), k), codes[idx].ravel()), 1.0)
    expected = k * freq
    stat = ((observed - expected) ** 2 / expected).sum(axis=1)
    pvalues = chi2.sf(stat, df=names.size - 1)
    rate = float(np.mean(pvalues >= alpha))
    return (rate, pvalues) if return_pvalues else rate

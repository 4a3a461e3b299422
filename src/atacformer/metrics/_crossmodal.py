"""Cross-modal metrics: matching paired cells across two modalities, and predicted values
against measured ones.

Matching (row ``i`` of one matrix is the same cell as row ``i`` of the other):

- :func:`foscttm`, the fraction of samples closer than the true match (Liu et al. 2019): for
  each cell of ``x``, the fraction of the other ``n - 1`` cells of ``y`` that lie closer to
  it than its own partner, and the same from ``y`` to ``x``; the mean over cells and both
  directions. 0 is a perfect match, 0.5 what a random pairing gives.
- :func:`retrieval_recall`: for each query cell, whether its partner is among its ``k``
  nearest targets (recall@k). Random pairing gives ``k / n``.

Ties. A target at the same distance as the true partner (within float round-off: a relative
1e-10) counts half towards FOSCTTM, and recall@k is the probability of a hit when ties are
broken at random; both are thus the expected score under a random order of tied cells. With
no ties (continuous embeddings) FOSCTTM is exactly the usual strict count divided by ``n - 1``
(as in SCOT, Demetci et al. 2022). A distance that is undefined (a cosine with an all-zero
row, a correlation with a constant row) counts as infinitely far: a query whose distances are
all undefined ties with every target and scores what a random pairing scores.

Distances are computed in row blocks of at most about ``2**24`` entries, so 50,000 x 50,000
cells never hold the ``n x n`` matrix at once. ``"cosine"`` and ``"euclidean"`` take dense or
sparse inputs; ``"correlation"`` (Pearson distance: cosine of the row-centred vectors)
densifies its inputs.

Values: :func:`pearson_per_gene` and :func:`pearson_per_cell` correlate a prediction with the
truth per column or per row (dense or sparse, read in row blocks); a constant gene or cell in
either matrix has no correlation and gets NaN (as :func:`scipy.stats.pearsonr`).
:func:`pearson_summary` reports the mean over the finite values and how many were NaN.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["foscttm", "retrieval_recall", "pearson_per_gene", "pearson_per_cell", "pearson_summary"]

METRICS = ("euclidean", "cosine", "correlation")
_BLOCK_ENTRIES = 2**24  # distances per block: 128 MB of float64
_RTOL = 1e-10  # distances this close (relative) are ties: round-off, not a difference


def _matrix(m, name: str):
    """``m`` as float64 CSR (sparse) or a 2-d float64 array, all values finite."""
    if sp.issparse(m):
        m = sp.csr_matrix(m, dtype=np.float64)
        values = m.data
    else:
        m = values = np.asarray(m, dtype=np.float64)
        if m.ndim != 2:
            raise ValueError(f"{name} must be a 2-d matrix (cells x features), got shape {m.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(values)).sum())} NaN or infinite values")
    return m


def _paired(x, y, metric: str):
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}; expected one of {METRICS}")
    x, y = _matrix(x, "x"), _matrix(y, "y")
    if x.shape[0] != y.shape[0] or x.shape[1] != y.shape[1]:
        raise ValueError(f"x is {x.shape[0]} x {x.shape[1]} and y {y.shape[0]} x {y.shape[1]}: "
                         "paired matrices need the same cells (rows, in the same order) and dimensions")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 paired cells, got {x.shape[0]}")
    return x, y


def _sq_norms(m) -> np.ndarray:
    return np.asarray(m.multiply(m).sum(1)).ravel() if sp.issparse(m) else np.einsum("ij,ij->i", m, m)


def _scale_rows(m, factor: np.ndarray):
    return sp.diags(factor) @ m if sp.issparse(m) else m * factor[:, None]


class _Space:
    """A query and a target matrix prepared for one metric: blocks of distances from query rows
    to every target, and per query row the tolerance under which two distances are a tie."""

    def __init__(self, query, target, metric: str):
        self.euclidean = metric == "euclidean"
        if metric == "correlation":  # Pearson distance: cosine of the row-centred vectors
            query, target = (np.asarray(m.todense()) if sp.issparse(m) else m for m in (query, target))
            undefined = [m.max(1) == m.min(1) for m in (query, target)]  # constant rows
            query, target = (m - m.mean(1, keepdims=True) for m in (query, target))
        sq = [_sq_norms(query), _sq_norms(target)]
        if self.euclidean:
            self.q, self.t = query, target
            self.q_sq, self.t_sq = sq
            return
        if metric == "cosine":
            undefined = [s == 0 for s in sq]
        # unit rows: the cosine distance is then 1 - a dot product
        self.q, self.t = (_scale_rows(m, np.divide(1.0, np.sqrt(s), out=np.zeros_like(s), where=~u))
                          for m, s, u in zip((query, target), sq, undefined))
        self.q_undef, self.t_undef = undefined

    def block(self, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        """Distances (rows x all targets; undefined ones infinite) and each row's tolerance."""
        g = self.q[rows] @ self.t.T
        g = np.asarray(g.todense()) if sp.issparse(g) else np.asarray(g)
        if self.euclidean:  # squared distance: orders cells like the distance
            q_sq = self.q_sq[rows]
            g *= -2
            g += q_sq[:, None]
            g += self.t_sq[None, :]
            np.maximum(g, 0.0, out=g)
            return g, _RTOL * (q_sq + self.t_sq.max())
        np.subtract(1.0, g, out=g)
        g[self.q_undef[rows]] = np.inf
        g[:, self.t_undef] = np.inf
        return g, np.full(g.shape[0], _RTOL)


def _closer_and_tied(query, target, metric: str, block_entries: int = _BLOCK_ENTRIES):
    """For each query row ``i``: how many targets ``j != i`` are closer than target ``i``, and
    how many are tied with it (see the module notes)."""
    space = _Space(query, target, metric)
    n = query.shape[0]
    step = max(1, block_entries // n)
    closer = np.empty(n, np.int64)
    tied = np.empty(n, np.int64)
    for start in range(0, n, step):
        rows = slice(start, min(n, start + step))
        d, tol = space.block(rows)
        own = d[np.arange(d.shape[0]), np.arange(rows.start, rows.stop)]
        # an infinite partner: finite targets are closer, infinite ones tied (inf - tol = inf)
        closer[rows] = (d < (own - tol)[:, None]).sum(1)
        tied[rows] = (d <= (own + tol)[:, None]).sum(1) - closer[rows] - 1  # minus the partner itself
    return closer, tied


def foscttm(x, y, metric: str = "euclidean", per_cell: bool = False, block_entries: int = _BLOCK_ENTRIES):
    """FOSCTTM: the fraction of samples closer than the true match (Liu et al. 2019).

    For each cell ``i`` of ``x``, the fraction of the other ``n - 1`` cells of ``y`` closer
    to ``x[i]`` than ``y[i]`` is; likewise from ``y`` to ``x``; averaged over cells and the two
    directions. Ties count half (module notes).

    Parameters
    ----------
    x, y
        Paired cells x dimensions (dense or sparse), row ``i`` of each the same cell, in one
        shared space.
    metric
        ``"euclidean"``, ``"cosine"`` or ``"correlation"`` (Pearson distance).
    per_cell
        Also return the two per-cell arrays.
    block_entries
        Distances held at once (the memory bound).

    Returns
    -------
    float or tuple
        The mean FOSCTTM (0 perfect, 0.5 random); with ``per_cell``, ``(mean, fx, fy)`` where
        ``fx[i]`` is cell ``i``'s fraction from ``x`` to ``y`` and ``fy[i]`` from ``y`` to ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(10.0)[:, None]
    >>> foscttm(x, x + 0.1), foscttm(x, np.zeros_like(x))  # y all alike: every cell tied
    (0.0, 0.5)
    """
    x, y = _paired(x, y, metric)
    n = x.shape[0]
    fracs = []
    for q, t in ((x, y), (y, x)):  # every metric here is symmetric: d(y_j, x_i) = d(x_i, y_j)
        closer, tied = _closer_and_tied(q, t, metric, block_entries)
        fracs.append((closer + 0.5 * tied) / (n - 1))
    mean = float((fracs[0].mean() + fracs[1].mean()) / 2)
    return (mean, fracs[0], fracs[1]) if per_cell else mean


def retrieval_recall(query, target, ks=(1, 5, 10), metric: str = "cosine",
                     block_entries: int = _BLOCK_ENTRIES) -> dict[str, float]:
    """Recall@k of retrieving each query cell's partner among all target cells.

    Row ``i`` of ``target`` is the true match of row ``i`` of ``query``; a hit at ``k`` when
    fewer than ``k`` targets are nearer. Ties are broken at random in expectation: with ``c``
    targets nearer and ``t`` tied, the hit counts ``min(1, max(0, (k - c) / (t + 1)))``.

    Parameters
    ----------
    query, target
        Paired cells x dimensions (dense or sparse) in one shared space.
    ks
        The ``k`` values.
    metric
        ``"cosine"``, ``"correlation"`` (Pearson) or ``"euclidean"``.
    block_entries
        Distances held at once (the memory bound).

    Returns
    -------
    dict
        ``{"recall@1": ..., "recall@5": ..., ...}``, each the mean over query cells (random
        pairing: ``k / n``).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.eye(4) + 0.1
    >>> retrieval_recall(x, x, ks=(1,))
    {'recall@1': 1.0}
    """
    query, target = _paired(query, target, metric)
    closer, tied = _closer_and_tied(query, target, metric, block_entries)
    out = {}
    for k in ks:
        if int(k) < 1:
            raise ValueError(f"ks must be positive integers, got {k!r}")
        out[f"recall@{int(k)}"] = float(np.clip((int(k) - closer) / (tied + 1), 0, 1).mean())
    return out


def _same_shape(true, pred):
    true, pred = _matrix(true, "true"), _matrix(pred, "pred")
    if true.shape != pred.shape:
        raise ValueError(f"true is {true.shape[0]} x {true.shape[1]} and pred {pred.shape[0]} x {pred.shape[1]}: "
                         "they need the same cells and genes in the same order")
    return true, pred


def _dense_rows(m, rows: slice) -> np.ndarray:
    block = m[rows]
    return np.asarray(block.todense()) if sp.issparse(block) else block


def _row_step(n_cols: int, block_entries: int) -> int:
    return max(1, block_entries // max(1, n_cols))


def pearson_per_cell(true, pred, block_entries: int = _BLOCK_ENTRIES) -> np.ndarray:
    """Pearson correlation of each cell (row) of ``pred`` with the same row of ``true``.

    Parameters
    ----------
    true, pred
        Cells x genes, dense or sparse, same shape and order.
    block_entries
        Entries densified at once.

    Returns
    -------
    numpy.ndarray
        One value per cell; NaN where either row is constant.

    Examples
    --------
    >>> import numpy as np
    >>> pearson_per_cell(np.array([[1.0, 2, 3], [1, 1, 1]]), np.array([[2.0, 4, 7], [1, 2, 3]])).round(3)
    array([0.993,   nan])
    """
    true, pred = _same_shape(true, pred)
    n, g = true.shape
    out = np.empty(n)
    step = _row_step(g, block_entries)
    for start in range(0, n, step):
        rows = slice(start, min(n, start + step))
        a, b = _dense_rows(true, rows), _dense_rows(pred, rows)
        const = (a.max(1) == a.min(1)) | (b.max(1) == b.min(1))
        a = a - a.mean(1, keepdims=True)
        b = b - b.mean(1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
        r[const] = np.nan
        out[rows] = np.clip(r, -1.0, 1.0)
    return out


def pearson_per_gene(true, pred, block_entries: int = _BLOCK_ENTRIES) -> np.ndarray:
    """Pearson correlation of each gene (column) of ``pred`` with the same column of ``true``,
    over the cells (two passes over row blocks: means, then centred sums).

    Parameters
    ----------
    true, pred
        Cells x genes, dense or sparse, same shape and order.
    block_entries
        Entries densified at once.

    Returns
    -------
    numpy.ndarray
        One value per gene; NaN where either column is constant.

    Examples
    --------
    >>> import numpy as np
    >>> pearson_per_gene(np.array([[1.0, 5], [2, 5], [3, 5]]), np.array([[1.0, 1], [2, 2], [4, 3]])).round(3)
    array([0.982,   nan])
    """
    true, pred = _same_shape(true, pred)
    n, g = true.shape
    step = _row_step(g, block_entries)
    blocks = [slice(s, min(n, s + step)) for s in range(0, n, step)]
    sums = np.zeros((2, g))
    lo = np.full((2, g), np.inf)
    hi = np.full((2, g), -np.inf)
    for rows in blocks:
        for i, m in enumerate((true, pred)):
            d = _dense_rows(m, rows)
            sums[i] += d.sum(0)
            lo[i] = np.minimum(lo[i], d.min(0))
            hi[i] = np.maximum(hi[i], d.max(0))
    means = sums / n
    sab = np.zeros(g)
    saa = np.zeros(g)
    sbb = np.zeros(g)
    for rows in blocks:
        a = _dense_rows(true, rows) - means[0]
        b = _dense_rows(pred, rows) - means[1]
        sab += (a * b).sum(0)
        saa += (a * a).sum(0)
        sbb += (b * b).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = sab / np.sqrt(saa * sbb)
    r[(hi == lo).any(0)] = np.nan
    return np.clip(r, -1.0, 1.0)


def pearson_summary(r) -> dict:
    """Summary of per-gene or per-cell correlations: the mean and median over the finite
    values, how many there were and how many were NaN (constant genes / cells).

    Examples
    --------
    >>> pearson_summary([0.5, 0.7, float("nan")])
    {'mean': 0.6, 'median': 0.6, 'n_finite': 2, 'n_nan': 1}
    """
    r = np.asarray(r, dtype=np.float64).ravel()
    ok = np.isfinite(r)
    return {"mean": float(r[ok].mean()) if ok.any() else float("nan"),
            "median": float(np.median(r[ok])) if ok.any() else float("nan"),
            "n_finite": int(ok.sum()), "n_nan": int((~ok).sum())}

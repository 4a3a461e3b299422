"""Batch integration of an embedding: batch removal and conservation of biology, one table.

The columns are those of the single-cell integration benchmark of Luecken et al. 2022, in
the implementation of its maintained successor, scib-metrics (``pip install
'atacformer[integration]'``). Every column is in [0, 1] and higher is better.

Batch removal

- ``ilisi``: median integration LISI (Korsunsky et al. 2019) over cells, perplexity 30 on
  the 90 nearest neighbours, rescaled ``(median - 1) / (n_batches - 1)``: 0 when every
  neighbourhood holds one batch, 1 when it holds all batches in equal weight.
- ``kbet``: kBET acceptance rate (Buttner et al. 2019) per cell-type label, averaged over
  labels (scib-metrics' ``kbet_per_label``: neighbours by diffusion distance within each
  label, from the 50-neighbour graph); labels with fewer than 10 cells or one batch are
  skipped. 1: batch counts around cells match the label's batch frequencies.
- ``batch_asw``: within each label, ``1 - |silhouette|`` of the cells with the batches as
  clusters, averaged per label, then over labels. 1: batches mixed.
- ``graph_connectivity``: per label, the share of its cells in the largest connected
  component of the label's subgraph of the 15-nearest-neighbour graph, averaged over
  labels. 1: every label is one connected piece (not split by batch).

Conservation of biology

- ``ari``, ``nmi``: Leiden clusters at the true number of labels (the package's one
  clustering protocol, :func:`atacformer.metrics.evaluate_embedding`'s ``leiden_*``)
  against the labels. ARI can fall below 0 for worse than chance; 1: the labels.
- ``label_asw``: silhouette with the labels as clusters, rescaled ``(s + 1) / 2``.
- ``clisi``: median cell-type LISI, rescaled ``(n_labels - median) / (n_labels - 1)``:
  1 when every neighbourhood holds one label.

Aggregates (Luecken et al. 2022): ``batch_correction`` and ``bio_conservation`` are the
means of the two groups (NaN columns left out), ``total = 0.4 batch + 0.6 bio``.

Neighbours are exact Euclidean (scikit-learn), each cell first in its own list as
scib-metrics expects. Without scib-metrics, the package's own metrics
(:mod:`atacformer.metrics._batch`) stand in and a warning says so: iLISI and batch ASW then
equal scib-metrics' (float32 rounding), cLISI, label ASW and graph connectivity are the same
definitions, and kBET runs per label on Euclidean neighbours within the label, not on
diffusion distances, so it reads a little differently.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np
from anndata import AnnData
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

logger = logging.getLogger(__name__)

__all__ = ["COLUMNS", "integration_scores"]

BATCH_COLUMNS = ["ilisi", "kbet", "batch_asw", "graph_connectivity"]
BIO_COLUMNS = ["ari", "nmi", "label_asw", "clisi"]
COLUMNS = [*BATCH_COLUMNS, *BIO_COLUMNS, "batch_correction", "bio_conservation", "total"]

# neighbourhood sizes of scib-metrics' Benchmarker: LISI, kBET, graph connectivity
N_LISI, N_KBET, N_GRAPH = 90, 50, 15


def _knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest neighbours, the cell itself in column 0 (distance 0)."""
    from sklearn.neighbors import NearestNeighbors

    n = x.shape[0]
    dist, idx = NearestNeighbors(n_neighbors=k - 1).fit(x).kneighbors()  # self excluded
    idx = np.column_stack([np.arange(n), idx])
    dist = np.column_stack([np.zeros(n, dist.dtype), dist])
    return idx, dist


@contextmanager
def _quiet(name: str, level: int = logging.WARNING):
    """Raise logger ``name``'s level for the duration (scib-metrics prints one INFO line per
    label it skips); the caller's setting comes back afterwards."""
    log = logging.getLogger(name)
    old = log.level
    log.setLevel(max(level, old))
    try:
        yield
    finally:
        log.setLevel(old)


def _scib_scores(x, batch, labels, idx, dist, mixed: bool) -> dict:
    import scib_metrics as sm
    from scib_metrics.nearest_neighbors import NeighborsResults

    nn = NeighborsResults(indices=idx, distances=dist)
    perplexity = nn.n_neighbors // 3
    with _quiet("scib_metrics"):
        return {
            "ilisi": sm.ilisi_knn(nn, batch, perplexity=perplexity, scale=True),
            "kbet": sm.kbet_per_label(nn.subset_neighbors(min(N_KBET, nn.n_neighbors)), batch, labels)
            if mixed else np.nan,
            "batch_asw": sm.silhouette_batch(x, labels, batch, rescale=True) if mixed else np.nan,
            "graph_connectivity": sm.graph_connectivity(nn.subset_neighbors(min(N_GRAPH, nn.n_neighbors)),
                                                        labels),
            "label_asw": sm.silhouette_label(x, labels, rescale=True),
            "clisi": sm.clisi_knn(nn, labels, perplexity=perplexity, scale=True),
        }


def _kbet_per_label(x, batch, labels) -> float:
    """kBET per label on Euclidean neighbours within the label, scib's neighbourhood size
    ``min(70, max(10, mean batch size in the label / 4))``; too small or one-batch labels
    are skipped."""
    from atacformer.metrics._batch import kbet

    rates = []
    for lab in np.unique(labels):
        m = labels == lab
        _, counts = np.unique(batch[m], return_counts=True)
        if m.sum() < 10 or counts.size < 2:
            continue
        k0 = int(min(70, max(10, np.floor(counts.mean() / 4))))
        rates.append(kbet(x[m], batch[m], n_neighbors=k0))
    return float(np.mean(rates)) if rates else float("nan")


def _graph_connectivity(idx: np.ndarray, labels: np.ndarray) -> float:
    """Mean over labels of the largest connected share of the label's kNN subgraph."""
    n, k = idx.shape
    graph = csr_matrix((np.ones(n * k), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    shares = []
    for lab in np.unique(labels):
        m = labels == lab
        _, comp = connected_components(graph[m][:, m], connection="strong")
        shares.append(np.bincount(comp).max() / m.sum())
    return float(np.mean(shares))


def _own_scores(x, batch, labels, idx, mixed: bool) -> dict:
    from sklearn.metrics import silhouette_score

    from atacformer.metrics._batch import ilisi, lisi, silhouette_batch

    perplexity = idx.shape[1] // 3
    n_labels = np.unique(labels).size
    clisi = float(np.nanmedian(lisi(x, labels, perplexity=perplexity)))
    return {
        "ilisi": ilisi(x, batch, perplexity=perplexity, scale=True),
        "kbet": _kbet_per_label(x, batch, labels) if mixed else np.nan,
        "batch_asw": silhouette_batch(x, batch, labels) if mixed else np.nan,
        "graph_connectivity": _graph_connectivity(idx[:, :N_GRAPH], labels),
        "label_asw": (float(silhouette_score(x, labels)) + 1) / 2,
        "clisi": (n_labels - clisi) / (n_labels - 1),
    }


def _mixed_labels(batch: np.ndarray, labels: np.ndarray) -> bool:
    """Whether some label holds cells of two batches (else kBET and batch ASW are undefined)."""
    import pandas as pd

    per_label = pd.Series(batch).groupby(labels).nunique()
    if (per_label >= 2).any():
        if (per_label < 2).any():
            logger.info("integration_scores: %d of %d labels hold one batch; kbet and batch_asw "
                        "average over the others", int((per_label < 2).sum()), per_label.size)
        return True
    logger.warning("integration_scores: no label holds cells of two batches (batch and label "
                   "confounded); kbet and batch_asw are NaN")
    return False


def _check(view: AnnData, batch_key: str, labels_key: str, n_dropped: int) -> None:
    n = view.n_obs
    if n_dropped:
        logger.info("integration_scores: %d cells without label, batch or finite embedding left out",
                    n_dropped)
    if n < 10:
        raise ValueError(f"integration_scores: {n} cells left to score (label, batch and a finite "
                         f"embedding needed), expected at least 10")
    n_batches = view.obs[batch_key].nunique()
    if n_batches < 2:
        raise ValueError(f"integration_scores: obs[{batch_key!r}] holds {n_batches} batch among the "
                         f"scored cells; batch mixing needs at least 2")
    n_labels = view.obs[labels_key].nunique()
    if n_labels < 2:
        raise ValueError(f"integration_scores: obs[{labels_key!r}] holds {n_labels} label among the "
                         f"scored cells; conservation of biology needs at least 2")
    if batch_key == labels_key:
        raise ValueError(f"integration_scores: batch_key and labels_key are both {batch_key!r}")


def integration_scores(adata: AnnData, rep: str, batch_key: str, labels_key: str, *, seed: int = 0,
                       backend: str = "auto") -> dict:
    """Batch removal and conservation of biology of ``obsm[rep]`` (see the module notes).

    Parameters
    ----------
    adata
        Cells with an embedding in ``obsm[rep]``, batches in ``obs[batch_key]`` and
        cell-type labels in ``obs[labels_key]``. Cells with a missing label or batch, or a
        non-finite embedding, are left out.
    rep
        ``obsm`` key of the embedding.
    batch_key
        ``obs`` column of the batches (at least two among the scored cells).
    labels_key
        ``obs`` column of the labels (at least two).
    seed
        Seed of Leiden.
    backend
        ``"auto"``: scib-metrics when it imports, else the package's own metrics with a
        warning; ``"scib"``: scib-metrics or ``ImportError``; ``"atacformer"``: the
        package's own metrics.

    Returns
    -------
    dict
        Floats, all in [0, 1] except ARI (in [-1, 1]); higher is better for each:

        ============================  ===================================================
        ``ilisi``                      batch LISI, rescaled (0: one batch per neighbourhood)
        ``kbet``                       kBET acceptance rate, mean over labels
        ``batch_asw``                  ``1 - |silhouette by batch|`` within labels
        ``graph_connectivity``         largest connected share of each label's kNN subgraph
        ``ari``, ``nmi``               Leiden at the true number of labels vs the labels
        ``label_asw``                  silhouette by label, ``(s + 1) / 2``
        ``clisi``                      label LISI, rescaled (1: one label per neighbourhood)
        ``batch_correction``           mean of the four batch columns
        ``bio_conservation``           mean of the four biology columns
        ``total``                      ``0.4 batch_correction + 0.6 bio_conservation``
        ============================  ===================================================

        ``kbet`` and ``batch_asw`` are NaN when no label holds two batches (batch and label
        confounded).

    Examples
    --------
    >>> s = integration_scores(adata, "X_lsi_harmony", "batch", "cell_type")  # doctest: +SKIP
    >>> s["ilisi"], s["ari"]  # doctest: +SKIP
    (0.93, 0.71)
    """
    from atacformer.metrics._clustering import clustering_scores
    from atacformer.metrics._evaluate import cluster_at_k, labelled_view

    if backend not in ("auto", "scib", "atacformer"):
        raise ValueError(f"integration_scores: backend={backend!r}, expected 'auto', 'scib' or 'atacformer'")
    view = labelled_view(adata, rep, labels_key, also=(batch_key,))
    _check(view, batch_key, labels_key, adata.n_obs - view.n_obs)
    x = np.asarray(view.obsm[rep], dtype=np.float32)
    batch = view.obs[batch_key].to_numpy()
    labels = view.obs[labels_key].to_numpy()
    mixed = _mixed_labels(batch, labels)
    idx, dist = _knn(x, min(N_LISI, view.n_obs))
    if backend != "atacformer":
        try:
            import scib_metrics  # noqa: F401
        except ImportError:
            if backend == "scib":
                raise
            logger.warning("integration_scores: scib-metrics is not installed (pip install "
                           "'atacformer[integration]'); falling back to atacformer.metrics' own "
                           "iLISI, kBET (per label, Euclidean neighbours) and silhouettes")
            backend = "atacformer"
    if backend == "atacformer":
        row = _own_scores(x.astype(np.float64), batch, labels, idx, mixed)
    else:
        row = _scib_scores(x, batch, labels, idx, dist, mixed)
    row = {key: float(value) for key, value in row.items()}
    clusters = cluster_at_k(view, rep, "leiden", np.unique(labels).size, seed)
    s = clustering_scores(labels, clusters)
    row["ari"], row["nmi"] = float(s["ari"]), float(s["nmi"])
    row["batch_correction"] = _mean([row[c] for c in BATCH_COLUMNS])
    row["bio_conservation"] = _mean([row[c] for c in BIO_COLUMNS])
    row["total"] = 0.4 * row["batch_correction"] + 0.6 * row["bio_conservation"]
    return {c: row[c] for c in COLUMNS}


def _mean(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(values[~np.isnan(values)].mean()) if (~np.isnan(values)).any() else float("nan")

"""Clustering of an embedding: Leiden, Louvain, k-means, Ward hierarchical.

Graph methods run on the kNN graph of :func:`atacformer.tools.neighbors`. Leiden is
:func:`scanpy.tl.leiden` with the igraph flavour (modularity, run to convergence). Louvain
is :func:`scanpy.tl.louvain` when the ``louvain`` package is importable; otherwise igraph's
``community_multilevel`` (the same Louvain algorithm; scanpy's own igraph flavour ignores
the resolution, so it is called directly) on the same graph, seeded through igraph's
random number generator. (``louvain`` 0.8 requires ``igraph<0.12``, so it is normally
absent next to igraph 1.x.)

With ``n_clusters`` given to a graph method, the resolution is found by bisection on
[0, 3]: the number of clusters grows with the resolution (not strictly, so bisection is a
search, not a proof); it stops at the first resolution giving exactly ``n_clusters`` and
otherwise keeps the closest one seen (ties: the smaller resolution) and logs a warning.
"""

from __future__ import annotations

import importlib.util
import logging
import random
from contextlib import contextmanager

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from atacformer.tools._neighbors import neighbors

logger = logging.getLogger(__name__)

__all__ = ["cluster"]

GRAPH_METHODS = ("leiden", "louvain")
METHODS = GRAPH_METHODS + ("kmeans", "hierarchical")


def _size_ordered(labels: np.ndarray) -> pd.Categorical:
    """Categorical of string labels "0", "1", ... with "0" the largest cluster."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    rank = np.empty_like(counts)
    rank[np.argsort(-counts, kind="stable")] = np.arange(counts.size)
    names = [str(i) for i in range(counts.size)]
    return pd.Categorical.from_codes(rank[inverse], categories=names)


@contextmanager
def _igraph_seed(seed: int):
    import igraph

    igraph.set_random_number_generator(random.Random(seed))
    try:
        yield
    finally:
        igraph.set_random_number_generator(random)


def _igraph_from(conn: sp.spmatrix):
    """Undirected weighted igraph graph from a symmetric connectivity matrix."""
    import igraph

    upper = sp.triu(sp.csr_matrix(conn), k=1).tocoo()
    g = igraph.Graph(n=conn.shape[0], edges=np.column_stack([upper.row, upper.col]).tolist(),
                     directed=False)
    g.es["weight"] = upper.data.astype(np.float64)
    return g


class _GraphClusterer:
    """Runs one graph method at a given resolution on a fixed graph."""

    def __init__(self, adata: AnnData, method: str, neighbors_key: str, seed: int):
        self.adata, self.method, self.key, self.seed = adata, method, neighbors_key, seed
        self.use_louvain_pkg = importlib.util.find_spec("louvain") is not None
        self._graph = None
        if method == "louvain" and not self.use_louvain_pkg:
            logger.info("cluster: 'louvain' package missing, using igraph community_multilevel")

    def __call__(self, resolution: float) -> np.ndarray:
        tmp = "_atacformer_cluster_tmp"
        if self.method == "leiden":
            sc.tl.leiden(self.adata, resolution=resolution, flavor="igraph", n_iterations=-1,
                         directed=False, random_state=self.seed, neighbors_key=self.key,
                         key_added=tmp)
        elif self.use_louvain_pkg:
            sc.tl.louvain(self.adata, resolution=resolution, flavor="vtraag",
                          random_state=self.seed, neighbors_key=self.key, key_added=tmp)
        else:
            if self._graph is None:
                self._graph = _igraph_from(self.adata.obsp[f"{self.key}_connectivities"])
            with _igraph_seed(self.seed):
                part = self._graph.community_multilevel(weights="weight", resolution=resolution)
            return np.asarray(part.membership)
        labels = self.adata.obs.pop(tmp).to_numpy()
        self.adata.uns.pop(tmp, None)
        return labels


def _search_resolution(run, n_clusters: int, max_iter: int):
    """Bisection of the resolution on [0, 3] towards ``n_clusters``; returns the best try."""
    lo, hi = 0.0, 3.0
    tried: list[tuple[float, int]] = []
    best = None  # (|k - target|, resolution, k, labels)
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        labels = run(mid)
        k = int(np.unique(labels).size)
        tried.append((mid, k))
        cand = (abs(k - n_clusters), mid, k, labels)
        if best is None or cand[:2] < best[:2]:
            best = cand
        if k == n_clusters:
            break
        lo, hi = (mid, hi) if k < n_clusters else (lo, mid)
    return best, tried


def cluster(
    adata: AnnData,
    use_rep: str,
    method: str = "leiden",
    *,
    n_clusters: int | None = None,
    resolution: float | None = None,
    n_neighbors: int = 15,
    metric: str = "euclidean",
    key_added: str | None = None,
    seed: int = 0,
    max_iter: int = 30,
    copy: bool = False,
) -> AnnData | None:
    """Cluster cells on an embedding.

    Parameters
    ----------
    adata
        Annotated data with the embedding in ``obsm[use_rep]``.
    use_rep
        Key of the embedding (``"X_lsi"``, ``"X_scembed"``, ``"X_atacformer"``, ...).
    method
        ``"leiden"``, ``"louvain"``, ``"kmeans"`` or ``"hierarchical"`` (Ward linkage).
    n_clusters
        Target number of clusters. Required for k-means and hierarchical; for the graph
        methods it starts the resolution search (module notes).
    resolution
        Resolution of a graph method run once (default 1.0); not allowed together with
        ``n_clusters``.
    n_neighbors, metric
        kNN graph parameters of the graph methods.
    key_added
        ``obs`` column of the labels (categorical "0", "1", ..., "0" the largest);
        default ``f"{method}_{use_rep}"``. ``uns[key_added]`` records the method, the
        clusters obtained, the target, the resolution and, after a search, every
        resolution tried with its number of clusters.
    seed
        Random state of the graph search, the community detection and k-means.
    max_iter
        Most bisection steps of the resolution search.
    copy
        Work on a copy and return it.

    Returns
    -------
    AnnData or None
        The copy when ``copy=True``.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> from atacformer import tools as tl
    >>> rng = np.random.default_rng(0)
    >>> a = ad.AnnData(np.zeros((300, 1), dtype=np.float32))
    >>> a.obsm["X_emb"] = np.repeat(np.eye(3) * 10, 100, axis=0) + rng.normal(size=(300, 3))
    >>> tl.cluster(a, "X_emb", "leiden", n_clusters=3, key_added="leiden")
    >>> a.uns["leiden"]["n_clusters"]
    3
    """
    if method not in METHODS:
        raise ValueError(f"cluster: method={method!r}, expected one of {METHODS}")
    if n_clusters is not None and n_clusters < 1:
        raise ValueError(f"cluster: n_clusters={n_clusters} must be >= 1")
    if n_clusters is not None and resolution is not None:
        raise ValueError("cluster: give n_clusters or resolution, not both")
    adata = adata.copy() if copy else adata
    key_added = key_added or f"{method}_{use_rep}"
    record: dict = {"method": method, "use_rep": use_rep, "seed": seed}
    if method in GRAPH_METHODS:
        nkey = neighbors(adata, use_rep, n_neighbors=n_neighbors, metric=metric, seed=seed)
        run = _GraphClusterer(adata, method, nkey, seed)
        record["neighbors_key"] = nkey
        if n_clusters is None:
            resolution = 1.0 if resolution is None else float(resolution)
            labels = run(resolution)
        else:
            (_, resolution, k, labels), tried = _search_resolution(run, n_clusters, max_iter)
            record["search_resolutions"] = np.array([r for r, _ in tried])
            record["search_n_clusters"] = np.array([n for _, n in tried])
            if k != n_clusters:
                logger.warning(
                    "cluster: %s on %s reached no resolution in [0, 3] giving %d clusters; "
                    "closest: %d clusters at resolution %.4f",
                    method, use_rep, n_clusters, k, resolution,
                )
        record["resolution"] = float(resolution)
    else:
        labels = _flat_clusters(adata, use_rep, method, n_clusters, seed)
    cats = _size_ordered(labels)
    adata.obs[key_added] = pd.Series(cats, index=adata.obs_names)
    record["n_clusters"] = int(len(cats.categories))
    if n_clusters is not None:
        record["target_n_clusters"] = int(n_clusters)
        record["exact"] = record["n_clusters"] == n_clusters
    adata.uns[key_added] = record
    logger.info("cluster: %s on %s -> %d clusters (obs[%r])", method, use_rep,
                record["n_clusters"], key_added)
    return adata if copy else None


def _flat_clusters(adata: AnnData, use_rep: str, method: str, n_clusters, seed: int):
    """k-means or Ward hierarchical clustering with scikit-learn."""
    from sklearn.cluster import AgglomerativeClustering, KMeans

    if n_clusters is None:
        raise ValueError(f"cluster: method={method!r} needs n_clusters")
    if use_rep not in adata.obsm:
        raise ValueError(f"use_rep={use_rep!r} is not in adata.obsm ({sorted(adata.obsm)})")
    x = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    if method == "kmeans":
        return KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(x)
    if x.shape[0] > 30_000:
        logger.warning("cluster: Ward clustering of %d cells needs O(n^2) memory", x.shape[0])
    return AgglomerativeClustering(n_clusters=n_clusters, linkage="ward").fit_predict(x)

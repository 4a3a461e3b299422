"""From a labelled reference to a query: kNN label transfer and UMAP projection.

Both work on an embedding the two datasets share (``obsm[use_rep]`` of the same model:
LSI loadings projected, scEmbed vectors averaged, Atacformer cells embedded), and neither
changes the reference's embedding.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from anndata import AnnData
from sklearn.neighbors import NearestNeighbors

logger = logging.getLogger(__name__)

__all__ = ["project_umap", "transfer_labels"]


def _rep(adata: AnnData, use_rep: str, which: str) -> np.ndarray:
    if use_rep not in adata.obsm:
        raise ValueError(f"{which}: use_rep={use_rep!r} not in obsm ({sorted(adata.obsm)})")
    return np.asarray(adata.obsm[use_rep], dtype=np.float32)


def _vote(neigh_labels: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Majority label per row of ``(n_query, k)`` label codes, and its share of the votes.

    Ties go to the tied label met first in the neighbour list (the closest one): each
    label's score is its count minus (rank of its first neighbour) / (k + 1), a fraction
    below 1 that cannot overturn a count difference.
    """
    n, k = neigh_labels.shape
    rows = np.repeat(np.arange(n), k)
    counts = np.zeros((n, n_labels))
    np.add.at(counts, (rows, neigh_labels.ravel()), 1.0)
    first = np.full((n, n_labels), k, dtype=np.float64)
    ranks = np.tile(np.arange(k, dtype=np.float64), n)
    np.minimum.at(first, (rows, neigh_labels.ravel()), ranks)
    winner = np.argmax(counts - first / (k + 1), axis=1)
    return winner, counts[np.arange(n), winner] / k


def transfer_labels(
    ref: AnnData,
    query: AnnData,
    use_rep: str,
    label_key: str,
    *,
    k: int = 15,
    metric: str = "euclidean",
    key_added: str | None = None,
) -> None:
    """Label query cells by majority vote of their ``k`` nearest reference cells.

    Parameters
    ----------
    ref
        Reference with ``obsm[use_rep]`` and labels in ``obs[label_key]`` (missing labels
        are left out of the reference).
    query
        Query with ``obsm[use_rep]`` in the same space.
    use_rep
        Embedding key in both.
    label_key
        Reference label column.
    k
        Neighbours voting (exact search with scikit-learn).
    metric
        Distance of the search.
    key_added
        Query columns written: ``obs[key_added]`` (categorical, the reference's
        categories) and ``obs[key_added + "_confidence"]`` (share of the ``k`` votes the
        winning label got). Default ``f"{label_key}_transferred"``.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from atacformer import tools as tl
    >>> obs = pd.DataFrame({"t": list("aabb")}, index=list("wxyz"))
    >>> ref = ad.AnnData(np.zeros((4, 1)), obs=obs)
    >>> ref.obsm["X_e"] = np.array([[0.0], [0.1], [5.0], [5.1]])
    >>> q = ad.AnnData(np.zeros((2, 1)))
    >>> q.obsm["X_e"] = np.array([[0.05], [4.9]])
    >>> tl.transfer_labels(ref, q, "X_e", "t", k=2)
    >>> q.obs["t_transferred"].tolist()
    ['a', 'b']
    """
    if label_key not in ref.obs:
        raise ValueError(f"transfer_labels: label_key={label_key!r} not in ref.obs")
    key_added = key_added or f"{label_key}_transferred"
    labels = pd.Categorical(ref.obs[label_key])
    known = labels.codes >= 0
    x_ref = _rep(ref, use_rep, "transfer_labels")[known]
    x_q = _rep(query, use_rep, "transfer_labels")
    if x_ref.shape[1] != x_q.shape[1]:
        raise ValueError(f"transfer_labels: ref has {x_ref.shape[1]} dims, query {x_q.shape[1]}")
    k = min(k, x_ref.shape[0])
    nn = NearestNeighbors(n_neighbors=k, metric=metric).fit(x_ref)
    idx = nn.kneighbors(x_q, return_distance=False)
    winner, confidence = _vote(labels.codes[known][idx], len(labels.categories))
    query.obs[key_added] = pd.Categorical.from_codes(winner, categories=labels.categories)
    query.obs[f"{key_added}_confidence"] = confidence
    logger.info("transfer_labels: %d query cells labelled from %d reference cells (k=%d)",
                query.n_obs, x_ref.shape[0], k)


def project_umap(
    ref: AnnData,
    query: AnnData,
    use_rep: str,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.5,
    metric: str = "euclidean",
    seed: int = 0,
    key_added: str = "X_umap",
):
    """Fit UMAP on the reference embedding and place the query in that map.

    umap-learn's :class:`umap.UMAP` is fitted on ``ref.obsm[use_rep]``; its ``transform``
    embeds the query against the fitted reference graph without moving reference cells
    (the EV-projection of the seed thesis).

    Parameters
    ----------
    ref, query
        Reference and query with ``obsm[use_rep]`` in the same space.
    use_rep
        Embedding key in both.
    n_neighbors, min_dist, metric
        UMAP parameters.
    seed
        UMAP's ``random_state`` (also makes it single-threaded, hence reproducible).
    key_added
        ``obsm`` key of the 2-D coordinates, in both; ``uns[key_added]["params"]`` too.

    Returns
    -------
    umap.UMAP
        The fitted reducer, to project further datasets.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> from atacformer import tools as tl
    >>> rng = np.random.default_rng(0)
    >>> ref, q = ad.AnnData(np.zeros((200, 1))), ad.AnnData(np.zeros((20, 1)))
    >>> ref.obsm["X_e"], q.obsm["X_e"] = rng.normal(size=(200, 5)), rng.normal(size=(20, 5))
    >>> _ = tl.project_umap(ref, q, "X_e")
    >>> q.obsm["X_umap"].shape
    (20, 2)
    """
    import umap as umap_learn

    x_ref = _rep(ref, use_rep, "project_umap")
    x_q = _rep(query, use_rep, "project_umap")
    if x_ref.shape[1] != x_q.shape[1]:
        raise ValueError(f"project_umap: ref has {x_ref.shape[1]} dims, query {x_q.shape[1]}")
    reducer = umap_learn.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                              random_state=seed, n_jobs=1)
    with warnings.catch_warnings():
        # umap-learn warns that a seed forces one thread, which is the point of the seed.
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        ref.obsm[key_added] = reducer.fit_transform(x_ref).astype(np.float32)
        query.obsm[key_added] = reducer.transform(x_q).astype(np.float32)
    params = {"use_rep": use_rep, "n_neighbors": n_neighbors, "min_dist": min_dist,
              "metric": metric, "seed": seed}
    for a, role in ((ref, "reference"), (query, "query")):
        a.uns[key_added] = {"params": {**params, "role": role}}
    logger.info("project_umap: %d reference and %d query cells", ref.n_obs, query.n_obs)
    return reducer

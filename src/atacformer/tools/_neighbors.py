"""kNN graph and UMAP on an embedding, through scanpy, one graph per representation.

Every graph-based tool here (clustering, UMAP) builds its kNN graph with
:func:`scanpy.pp.neighbors` under the key ``"neighbors_<use_rep>"``, so that graphs of
different embeddings (``X_lsi``, ``X_scembed``, ``X_atacformer``) sit side by side in one
AnnData and a second call on the same representation with the same parameters reuses the
graph instead of recomputing it.

Version note: scanpy 1.11's ``pp.neighbors`` hands PyNNDescent's output straight to
``getnnz``. pynndescent 0.7 returns a ``scipy.sparse.csr_array``, which has no ``getnnz``
(removed from sparse arrays in scipy 1.14+), so neighbours fail with "'csr_array' object
has no attribute 'getnnz'" whenever scanpy picks PyNNDescent: more than 4,096 cells with a
non-Euclidean metric, or 8,192 with the Euclidean one. ``pynndescent<0.7`` returns
``csr_matrix`` and works.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import scanpy as sc
from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["neighbors", "umap"]


def _check_rep(adata: AnnData, use_rep: str) -> None:
    if use_rep not in adata.obsm:
        raise ValueError(
            f"use_rep={use_rep!r} is not in adata.obsm (available: {sorted(adata.obsm)})"
        )
    x = np.asarray(adata.obsm[use_rep])
    if not np.isfinite(x).all():
        raise ValueError(f"obsm[{use_rep!r}] holds NaN or infinite values")


def neighbors(
    adata: AnnData,
    use_rep: str,
    *,
    n_neighbors: int = 15,
    metric: str = "euclidean",
    seed: int = 0,
    recompute: bool = False,
) -> str:
    """Build (or reuse) the kNN graph of ``obsm[use_rep]`` with :func:`scanpy.pp.neighbors`.

    Parameters
    ----------
    adata
        Annotated data with the embedding in ``obsm[use_rep]``.
    use_rep
        Key of the embedding.
    n_neighbors
        Neighbours per cell (the cell itself included, scanpy's convention).
    metric
        Distance, any metric scanpy accepts.
    seed
        Random state of the approximate search (used by PyNNDescent above 4,096 cells).
    recompute
        Rebuild the graph even when one with the same parameters exists.

    Returns
    -------
    str
        The neighbors key: ``uns[key]``, ``obsp[key + "_distances"]`` and
        ``obsp[key + "_connectivities"]`` hold the graph.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> from atacformer import tools as tl
    >>> a = ad.AnnData(np.zeros((100, 1), dtype=np.float32))
    >>> a.obsm["X_emb"] = np.random.default_rng(0).normal(size=(100, 5))
    >>> tl.neighbors(a, "X_emb")
    'neighbors_X_emb'
    """
    _check_rep(adata, use_rep)
    key = f"neighbors_{use_rep}"
    digest = _fingerprint(adata.obsm[use_rep])
    previous = adata.uns.get(key, {})
    params = previous.get("params", {})
    same = (
        params.get("n_neighbors") == n_neighbors
        and params.get("metric") == metric
        and params.get("random_state") == seed
        and previous.get("rep_fingerprint") == digest
        and f"{key}_connectivities" in adata.obsp
    )
    if same and not recompute:
        logger.debug("neighbors: reusing graph %r", key)
        return key
    sc.pp.neighbors(
        adata, n_neighbors=n_neighbors, use_rep=use_rep, metric=metric,
        random_state=seed, key_added=key,
    )
    # A graph is reused only while the embedding it was built on is unchanged.
    adata.uns[key]["rep_fingerprint"] = digest
    return key


def _fingerprint(x) -> str:
    """Digest of an embedding's values and shape (about 1 s per GB)."""
    arr = np.ascontiguousarray(np.asarray(x))
    h = hashlib.blake2b(digest_size=16)
    h.update(str((arr.shape, arr.dtype.str)).encode())
    h.update(arr.view(np.uint8).ravel() if arr.size else b"")
    return h.hexdigest()


def umap(
    adata: AnnData,
    use_rep: str,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.5,
    metric: str = "euclidean",
    seed: int = 0,
    key_added: str = "X_umap",
    copy: bool = False,
) -> AnnData | None:
    """UMAP of an embedding (scanpy's :func:`scanpy.tl.umap` on the graph of ``use_rep``).

    Parameters
    ----------
    adata
        Annotated data with the embedding in ``obsm[use_rep]``.
    use_rep
        Key of the embedding.
    n_neighbors, metric
        kNN graph parameters (see :func:`neighbors`).
    min_dist
        UMAP's ``min_dist``.
    seed
        Random state of the graph search and of the layout.
    key_added
        ``obsm[key_added]`` receives the 2-D coordinates; ``uns[key_added]`` the
        parameters (with ``use_rep``, which plotting uses to say what was drawn).
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
    >>> a = ad.AnnData(np.zeros((100, 1), dtype=np.float32))
    >>> a.obsm["X_emb"] = np.random.default_rng(0).normal(size=(100, 5))
    >>> tl.umap(a, "X_emb")
    >>> a.obsm["X_umap"].shape
    (100, 2)
    """
    adata = adata.copy() if copy else adata
    key = neighbors(adata, use_rep, n_neighbors=n_neighbors, metric=metric, seed=seed)
    sc.tl.umap(adata, min_dist=min_dist, random_state=seed, neighbors_key=key,
               key_added=key_added)
    # scanpy stored its own parameters (a, b, ...) there; add what was embedded.
    adata.uns[key_added].setdefault("params", {}).update(
        {"use_rep": use_rep, "n_neighbors": n_neighbors, "min_dist": min_dist,
         "metric": metric, "seed": seed}
    )
    return adata if copy else None

"""The one evaluation protocol of an embedding against known labels.

Every comparison in the package (``atacformer benchmark``, ``atacformer demo``,
``atacformer experiment``) scores an embedding with :func:`evaluate_embedding`, so their
tables have the same columns and mean the same thing:

- Leiden on the embedding's kNN graph, its resolution searched until the number of clusters
  equals the number of labels (``leiden_*``);
- k-means with k = the number of labels (``kmeans_*``);
- each scored by ARI, AMI, NMI and homogeneity against the labels;
- kNN label transfer (k = 15) from a stratified half of the cells (fixed by ``seed``) to the
  other half: accuracy and macro-F1 (``transfer_acc``, ``transfer_f1``), scored by
  :func:`atacformer.tools.annotation_scores` like every annotation in the package (macro-F1
  over the query's true types: a type only predicted lowers the precision of none).

Cells whose label is missing (NaN / None / ``"nan"``) or whose embedding is not finite are left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

COLUMNS = ["leiden_ari", "leiden_ami", "leiden_nmi", "leiden_homogeneity", "leiden_k",
           "kmeans_ari", "kmeans_ami", "kmeans_nmi", "kmeans_homogeneity", "kmeans_k",
           "transfer_acc", "transfer_f1"]


def stratified_split(labels, seed: int = 0, fraction: float = 0.5) -> np.ndarray:
    """Reference mask of a split of cells into reference and query, stratified by label:
    of each label's cells (in a seeded random order) the first ``ceil(fraction * n)`` are
    reference, so every label with two or more cells is on both sides at 0.5.

    Examples
    --------
    >>> stratified_split(["a", "a", "b", "b", "b"], seed=0).sum()
    3
    """
    labels = np.asarray(labels).astype(str)
    rng = np.random.default_rng(seed)
    ref = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        ref[idx[: int(np.ceil(fraction * len(idx)))]] = True
    return ref


def _missing(values) -> np.ndarray:
    """NaN / None / ``"nan"`` entries of an ``obs`` column."""
    col = pd.Series(values)
    return col.isna().to_numpy() | (col.astype(str).to_numpy() == "nan")


def labelled_view(adata: AnnData, rep: str, labels_key: str, also: tuple[str, ...] = ()) -> AnnData:
    """The cells of ``adata`` that can be scored: label (and every ``also`` column) present,
    embedding finite; ``obs`` holds those columns as strings, ``obsm[rep]`` the embedding.

    Raises ``KeyError`` naming a missing ``obs`` column or ``obsm`` key.
    """
    for key in (labels_key, *also):
        if key not in adata.obs.columns:
            raise KeyError(f"obs has no column {key!r} (columns: {list(adata.obs.columns)})")
    if rep not in adata.obsm:
        raise KeyError(f"obsm has no {rep!r} (keys: {list(adata.obsm)})")
    emb = np.asarray(adata.obsm[rep])
    keep = np.isfinite(emb).all(1)
    for key in (labels_key, *also):
        keep &= ~_missing(adata.obs[key].to_numpy())
    view = AnnData(obs={key: adata.obs[key].astype(str).to_numpy()[keep] for key in (labels_key, *also)})
    view.obs_names = adata.obs_names[keep]
    view.obsm[rep] = emb[keep]
    return view


def cluster_at_k(view: AnnData, rep: str, method: str, k: int, seed: int) -> np.ndarray:
    """The protocol's clusters: ``method`` (``"leiden"`` with its resolution searched, or
    ``"kmeans"``) on ``obsm[rep]`` at ``k`` clusters, through :func:`atacformer.tools.cluster`."""
    from atacformer import tools as tl

    key = f"_{method}"
    tl.cluster(view, rep, method, n_clusters=k, key_added=key, seed=seed)
    return view.obs[key].astype(str).to_numpy()


def evaluate_embedding(adata: AnnData, rep: str, labels_key: str = "cell_type", seed: int = 0) -> dict:
    """Score ``adata.obsm[rep]`` against ``adata.obs[labels_key]`` (see the module notes).

    Parameters
    ----------
    adata
        Cells with an embedding in ``obsm[rep]`` and labels in ``obs[labels_key]``.
    rep
        ``obsm`` key of the embedding.
    labels_key
        ``obs`` column of the labels.
    seed
        Seed of Leiden, k-means and the transfer split.

    Returns
    -------
    dict
        The :data:`COLUMNS` (floats; ``*_k`` are the numbers of clusters found).

    Examples
    --------
    >>> scores = evaluate_embedding(adata, "X_atacformer", "cell_type")  # doctest: +SKIP
    >>> scores["leiden_ari"]  # doctest: +SKIP
    0.41
    """
    from atacformer import tools as tl
    from atacformer.metrics._clustering import clustering_scores

    view = labelled_view(adata, rep, labels_key)
    labels = view.obs[labels_key].to_numpy()
    k = len(np.unique(labels))
    row: dict = {}
    for method in ("leiden", "kmeans"):
        clusters = cluster_at_k(view, rep, method, k, seed)
        s = clustering_scores(labels, clusters)
        for m in ("ari", "ami", "nmi", "homogeneity"):
            row[f"{method}_{m}"] = float(s[m])
        row[f"{method}_k"] = int(np.unique(clusters).size)
    ref_mask = stratified_split(labels, seed)
    ref, query = view[ref_mask].copy(), view[~ref_mask].copy()
    tl.transfer_labels(ref, query, rep, labels_key, k=min(15, ref.n_obs))
    pred = query.obs[f"{labels_key}_transferred"].astype(str).to_numpy()
    truth = query.obs[labels_key].astype(str).to_numpy()
    s = tl.annotation_scores(truth, pred)
    row["transfer_acc"], row["transfer_f1"] = float(s["accuracy"]), float(s["macro_f1"])
    return row

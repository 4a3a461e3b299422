"""Agreement between clusters and ground-truth labels.

ARI, AMI, NMI and homogeneity are scikit-learn's. F1 needs clusters matched to labels
first; here the matching is one-to-one (Hungarian, :func:`scipy.optimize.linear_sum_assignment`)
and maximises the sum of the matched pairs' F1, ``2 n_lc / (n_l + n_c)`` for label ``l``
and cluster ``c``. The score is the macro average over labels: a label left without a
cluster (more labels than clusters) scores 0, and cells of unmatched clusters count as
misses of their label. The matched F1 of a pair equals scikit-learn's per-class F1 after
relabelling every cluster by its label, so this is the best macro F1 any one-to-one
relabelling can reach, which makes it independent of how ties in the matching are broken.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm

logger = logging.getLogger(__name__)

__all__ = ["ami", "ari", "clustering_scores", "f1", "homogeneity", "match_clusters", "nmi"]


def _pair(labels, clusters) -> tuple[np.ndarray, np.ndarray]:
    y, c = np.asarray(labels), np.asarray(clusters)
    if y.dtype == object or c.dtype == object:  # e.g. pandas categoricals of strings
        y, c = y.astype(str), c.astype(str)
    if y.shape != c.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and clusters {c.shape} must be 1-D of one length")
    return y, c


def ari(labels, clusters) -> float:
    """Adjusted Rand index (:func:`sklearn.metrics.adjusted_rand_score`).

    Examples
    --------
    >>> ari(["a", "a", "b", "b"], [1, 1, 0, 0])
    1.0
    """
    return float(skm.adjusted_rand_score(*_pair(labels, clusters)))


def ami(labels, clusters) -> float:
    """Adjusted mutual information (arithmetic normalisation, scikit-learn's default).

    Examples
    --------
    >>> ami(["a", "a", "b", "b"], [1, 1, 0, 0])
    1.0
    """
    return float(skm.adjusted_mutual_info_score(*_pair(labels, clusters)))


def nmi(labels, clusters) -> float:
    """Normalised mutual information (arithmetic normalisation).

    Examples
    --------
    >>> nmi(["a", "a", "b", "b"], [1, 1, 0, 0])
    1.0
    """
    return float(skm.normalized_mutual_info_score(*_pair(labels, clusters)))


def homogeneity(labels, clusters) -> float:
    """Homogeneity: each cluster holds cells of one label only (1 is best).

    Examples
    --------
    >>> round(homogeneity(["a", "a", "b", "b"], [0, 1, 2, 3]), 6)
    1.0
    """
    return float(skm.homogeneity_score(*_pair(labels, clusters)))


def _assignment(labels, clusters):
    """Label / cluster codes and the one-to-one matching maximising the summed pair F1."""
    y, c = _pair(labels, clusters)
    lab, yi = np.unique(y, return_inverse=True)
    clu, ci = np.unique(c, return_inverse=True)
    table = np.zeros((lab.size, clu.size))
    np.add.at(table, (yi, ci), 1.0)
    pair_f1 = 2 * table / (table.sum(1, keepdims=True) + table.sum(0, keepdims=True))
    rows, cols = linear_sum_assignment(pair_f1, maximize=True)
    return lab, yi, clu, ci, rows, cols


def _scalar(v):
    return v.item() if isinstance(v, np.generic) else v


def match_clusters(labels, clusters) -> dict:
    """One-to-one matching of clusters to labels maximising the summed pair F1.

    Returns
    -------
    dict
        ``{cluster: label}`` for the matched clusters.

    Examples
    --------
    >>> match_clusters(["a", "a", "b"], [5, 5, 7])
    {5: 'a', 7: 'b'}
    """
    lab, _, clu, _, rows, cols = _assignment(labels, clusters)
    return {_scalar(clu[j]): _scalar(lab[i]) for i, j in zip(rows, cols)}


def f1(labels, clusters) -> float:
    """Macro F1 over labels after the best one-to-one matching of clusters (module notes).

    Examples
    --------
    >>> f1(["a", "a", "b", "b"], [1, 1, 0, 0])
    1.0
    >>> round(f1(["a", "a", "b", "b"], [0, 0, 0, 0]), 3)  # "b" gets no cluster: 0
    0.333
    """
    lab, yi, clu, ci, rows, cols = _assignment(labels, clusters)
    # Cells of unmatched clusters get code -1, a class no label has: they only count as misses.
    cluster_to_label = np.full(clu.size, -1)
    cluster_to_label[cols] = rows
    return float(skm.f1_score(yi, cluster_to_label[ci], labels=np.arange(lab.size),
                              average="macro", zero_division=0.0))


def clustering_scores(labels, clusters) -> dict[str, float]:
    """All ground-truth clustering scores at once.

    Returns
    -------
    dict
        ``ari``, ``ami``, ``nmi``, ``homogeneity``, ``f1`` and ``n_clusters``.

    Examples
    --------
    >>> s = clustering_scores(["a", "a", "b", "b"], [1, 1, 0, 0])
    >>> s["ari"], s["f1"], s["n_clusters"]
    (1.0, 1.0, 2)
    """
    return {
        "ari": ari(labels, clusters),
        "ami": ami(labels, clusters),
        "nmi": nmi(labels, clusters),
        "homogeneity": homogeneity(labels, clusters),
        "f1": f1(labels, clusters),
        "n_clusters": int(np.unique(np.asarray(clusters)).size),
    }

"""Metrics: clustering against ground truth, RAGI without it, and batch mixing.

All take arrays (labels, clusters, embeddings), not AnnData, so that they score any
method's output the same way.
"""

from atacformer.metrics._batch import ilisi, kbet, lisi, silhouette_batch
from atacformer.metrics._clustering import (
    ami,
    ari,
    clustering_scores,
    f1,
    homogeneity,
    match_clusters,
    nmi,
)
from atacformer.metrics._ragi import cluster_means, gini, ragi

__all__ = [
    "ami",
    "ari",
    "cluster_means",
    "clustering_scores",
    "f1",
    "gini",
    "homogeneity",
    "ilisi",
    "kbet",
    "lisi",
    "match_clusters",
    "nmi",
    "ragi",
    "silhouette_batch",
]

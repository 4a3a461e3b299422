"""Metrics: clustering against ground truth, RAGI without it, and batch integration.

These take arrays (labels, clusters, embeddings), so that they score any method's output the
same way; :func:`evaluate_embedding` is the one protocol (clusters at the true k, label
transfer) that every comparison in the package runs on an AnnData, and
:func:`integration_scores` the batch-integration table (scib-metrics, Luecken et al. 2022).
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
from atacformer.metrics._crossmodal import (
    foscttm,
    pearson_per_cell,
    pearson_per_gene,
    pearson_summary,
    retrieval_recall,
)
from atacformer.metrics._evaluate import evaluate_embedding, stratified_split
from atacformer.metrics._integration import integration_scores
from atacformer.metrics._ragi import cluster_means, gini, ragi

__all__ = [
    "ami",
    "ari",
    "cluster_means",
    "evaluate_embedding",
    "clustering_scores",
    "f1",
    "foscttm",
    "gini",
    "homogeneity",
    "ilisi",
    "integration_scores",
    "kbet",
    "lisi",
    "match_clusters",
    "nmi",
    "pearson_per_cell",
    "pearson_per_gene",
    "pearson_summary",
    "ragi",
    "retrieval_recall",
    "silhouette_batch",
    "stratified_split",
]

"""Tools (``tl``): embeddings, fine-tuning, graphs, clustering, label transfer, annotation and projection.

Every function takes an AnnData first and writes into named slots (``obsm``, ``obs``,
``uns``) in the scanpy manner. The model-based ``embed`` lives in ``tools/_embed.py``.
"""

from atacformer.tools._annotate import annotate, annotation_scores
from atacformer.tools._cluster import cluster
from atacformer.tools._craft import impute, train_craft
from atacformer.tools._dna_ranker import train_dna_ranker
from atacformer.tools._embed import embed, region_embeddings
from atacformer.tools._finetune import finetune
from atacformer.tools._get import GETData, get_data, get_finetune, get_predict, get_pretrain
from atacformer.tools._lsi import lsi
from atacformer.tools._neighbors import neighbors, umap
from atacformer.tools._regions import annotate_regions, contextual_region_vectors, cryptic_tss_calls as cryptic_tss, tss_score
from atacformer.tools._scembed import ScEmbedModel, scembed, scembed_project
from atacformer.tools._tosica import tosica_pathway_attention, tosica_predict, tosica_train
from atacformer.tools._transfer import project_umap, transfer_labels

__all__ = [
    "ScEmbedModel",
    "annotate",
    "annotate_regions",
    "annotation_scores",
    "cluster",
    "contextual_region_vectors",
    "cryptic_tss",
    "embed",
    "finetune",
    "GETData", "get_data", "get_finetune", "get_predict", "get_pretrain",
    "impute",
    "lsi",
    "neighbors",
    "project_umap",
    "region_embeddings",
    "scembed",
    "scembed_project",
    "tosica_pathway_attention",
    "tosica_predict",
    "tosica_train",
    "train_craft",
    "train_dna_ranker",
    "transfer_labels",
    "tss_score",
    "umap",
]

"""Plotting (``pl``): UMAP scatter plots, confusion matrices and region-level plots written to PNG
(headless, Agg canvas)."""

from atacformer.plotting._confusion import confusion_matrix
from atacformer.plotting._qc import qc
from atacformer.plotting._regions import cryptic_tss, tss_score
from atacformer.plotting._tosica import tosica_attention
from atacformer.plotting._umap import umap, umap_grid

__all__ = ["confusion_matrix", "cryptic_tss", "qc", "tosica_attention", "tss_score", "umap", "umap_grid"]

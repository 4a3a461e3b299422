"""Plotting (``pl``): UMAP scatter plots and confusion matrices written to PNG (headless, Agg canvas)."""

from atacformer.plotting._confusion import confusion_matrix
from atacformer.plotting._umap import umap, umap_grid

__all__ = ["confusion_matrix", "umap", "umap_grid"]

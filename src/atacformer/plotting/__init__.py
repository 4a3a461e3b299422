"""Plotting (``pl``): UMAP scatter plots written to PNG (headless, Agg canvas)."""

from atacformer.plotting._umap import umap, umap_grid

__all__ = ["umap", "umap_grid"]

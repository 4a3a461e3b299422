"""Preprocessing (``pp``): normalisation of cells x regions count matrices, gene activity."""

from atacformer.preprocessing._gene_activity import WINDOWS, gene_activity, gene_windows
from atacformer.preprocessing._tfidf import (
    AUTO_SCALE, auto_scale_factor, inverse_document_frequency, tfidf, tfidf_matrix,
)

__all__ = ["AUTO_SCALE", "WINDOWS", "auto_scale_factor", "gene_activity", "gene_windows",
           "inverse_document_frequency", "tfidf", "tfidf_matrix"]

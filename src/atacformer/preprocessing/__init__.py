"""Preprocessing (``pp``): normalisation of cells x regions count matrices."""

from atacformer.preprocessing._tfidf import (
    AUTO_SCALE, auto_scale_factor, inverse_document_frequency, tfidf, tfidf_matrix,
)

__all__ = ["AUTO_SCALE", "auto_scale_factor", "inverse_document_frequency", "tfidf", "tfidf_matrix"]

"""Preprocessing (``pp``): normalisation of cells x regions count matrices."""

from atacformer.preprocessing._tfidf import tfidf, tfidf_matrix

__all__ = ["tfidf", "tfidf_matrix"]

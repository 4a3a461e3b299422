"""Preprocessing (``pp``): normalisation of cells x regions count matrices, gene activity."""

from atacformer.preprocessing._gene_activity import WINDOWS, gene_activity, gene_windows
from atacformer.preprocessing._qc import (
    QC_COLUMNS, call_cells, doublet_scores, knee_threshold, qc_metrics, read_tss,
)
from atacformer.preprocessing._tfidf import (
    AUTO_SCALE, auto_scale_factor, inverse_document_frequency, tfidf, tfidf_matrix,
)

__all__ = ["AUTO_SCALE", "QC_COLUMNS", "WINDOWS", "auto_scale_factor", "call_cells", "doublet_scores",
           "gene_activity", "gene_windows", "inverse_document_frequency", "knee_threshold", "qc_metrics",
           "read_tss", "tfidf", "tfidf_matrix"]

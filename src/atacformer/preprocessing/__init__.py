"""Preprocessing (``pp``): normalisation of cells x regions count matrices, gene activity, cell QC.

The TF-IDF names are imported on first use: their module imports anndata, which the
tokenizer (it imports the QC counters from here) does not otherwise need.
"""

from importlib import import_module

from atacformer.preprocessing._gene_activity import WINDOWS, gene_activity, gene_windows
from atacformer.preprocessing._qc import (
    QC_COLUMNS, call_cells, doublet_scores, knee_threshold, qc_metrics, read_tss,
)

_LAZY = {"AUTO_SCALE", "auto_scale_factor", "inverse_document_frequency", "tfidf", "tfidf_matrix"}

__all__ = ["AUTO_SCALE", "QC_COLUMNS", "WINDOWS", "auto_scale_factor", "call_cells", "doublet_scores",
           "gene_activity", "gene_windows", "inverse_document_frequency", "knee_threshold", "qc_metrics",
           "read_tss", "tfidf", "tfidf_matrix"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(f"{__name__}._tfidf"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY)

"""Preprocessing (``pp``): normalisation of cells x regions count matrices, gene activity, cell QC.

Names are imported on first use, so that importing one submodule (the tokenizer imports the
QC counters) does not import the others (anndata with them).
"""

from importlib import import_module

_WHERE = {
    "WINDOWS": "_gene_activity", "gene_activity": "_gene_activity", "gene_windows": "_gene_activity",
    "QC_COLUMNS": "_qc", "call_cells": "_qc", "doublet_scores": "_qc", "knee_threshold": "_qc",
    "qc_metrics": "_qc", "read_tss": "_qc",
    "AUTO_SCALE": "_tfidf", "auto_scale_factor": "_tfidf", "inverse_document_frequency": "_tfidf",
    "tfidf": "_tfidf", "tfidf_matrix": "_tfidf",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE))

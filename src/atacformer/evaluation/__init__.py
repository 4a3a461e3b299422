"""Embedding-quality benchmark (``atacformer benchmark``): peers and atacformer recipes
(:data:`atacformer.train.RECIPES`) side by side, see :mod:`~atacformer.evaluation.harness`;
robustness of a model's embeddings to the context, see :mod:`~atacformer.evaluation.context`;
ATAC -> RNA retrieval and RNA imputation against their peers, see :mod:`~atacformer.evaluation.rna`;
bulk region sets embedded as documents and classified, see :mod:`~atacformer.evaluation.bulk`.

Examples
--------
>>> from atacformer.evaluation import BenchmarkConfig, run_benchmark
>>> run_benchmark("../shared/data", "bench", BenchmarkConfig(max_cells=100))  # doctest: +SKIP
"""

import importlib

# name -> module, imported on first use so that ``atacformer --help`` (which registers the
# benchmark command from atacformer.evaluation.cli) does not import torch
_EXPORTS = {
    "LABELLED_SETS": "harness", "BenchmarkConfig": "harness", "format_table": "harness",
    "load_labelled_sets": "harness", "run_benchmark": "harness", "score_embedding": "harness",
    "snapatac2_spectral": "harness", "tokenize_sets": "harness", "METHODS": "harness",
    "peakvi_latent": "harness", "train_recipe": "harness", "drop_nonzeros": "harness", "add_gains": "harness",
    "harmony": "harness",
    "RnaPair": "rna", "load_rna_pairs": "rna", "run_rna_benchmark": "rna",
    "pseudobulk_region_sets": "bulk", "bed_region_sets": "bulk", "classify_region_sets": "bulk",
    "run_bulk_benchmark": "bulk", "format_bulk_table": "bulk",
    "context_robustness": "context", "plot_context_robustness": "context", "DEFAULT_CONTEXTS": "context",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"atacformer.evaluation.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)

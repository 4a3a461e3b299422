"""Embedding-quality benchmark (``atacformer benchmark``) and the pretraining recipes it
compares: see :mod:`~atacformer.benchmark.harness` and :mod:`~atacformer.benchmark.recipes`.

Examples
--------
>>> from atacformer.benchmark import BenchmarkConfig, run_benchmark
>>> run_benchmark("../shared/data", "bench", BenchmarkConfig(max_cells=100))  # doctest: +SKIP
"""

import importlib

# name -> module, imported on first use so that ``atacformer --help`` (which registers the
# benchmark command from atacformer.benchmark.cli) does not import torch
_EXPORTS = {
    "LABELLED_SETS": "harness", "BenchmarkConfig": "harness", "format_table": "harness",
    "load_labelled_sets": "harness", "run_benchmark": "harness", "score_embedding": "harness",
    "snapatac2_spectral": "harness", "tokenize_sets": "harness",
    "RECIPES": "recipes", "Recipe": "recipes", "build_model": "recipes", "embed_recipe": "recipes",
    "pretrain_cells": "recipes",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"atacformer.benchmark.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)

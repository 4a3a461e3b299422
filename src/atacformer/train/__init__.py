"""Pretraining at any scale with one code path: a laptop CPU, one GPU, or ``torchrun`` over
many GPUs and nodes (DDP or FSDP2).

- :mod:`~atacformer.train.config`: :class:`TrainConfig` and the ``debug`` / ``small`` /
  ``base`` presets;
- :mod:`~atacformer.train.data`: inputs -> on-disk corpora and their vocabulary;
- :mod:`~atacformer.train.batching`: epoch plans (length bucketing, rank and worker
  sharding) and the data loader; :mod:`~atacformer.train.collate`: micro-batches;
- :mod:`~atacformer.train.parallelize`: DDP / FSDP2, activation checkpointing, compile;
- :mod:`~atacformer.train.trainer`: :func:`pretrain`, the loop;
- :mod:`~atacformer.train.task`: :class:`Task`, models trained on non-cell examples through it;
- :mod:`~atacformer.train.checkpoint`: resumable checkpoints and the exported model;
- :mod:`~atacformer.train.experiment`: plans of switches run and tabulated side by side;

Examples
--------
>>> from atacformer.train import TrainConfig, pretrain
>>> pretrain(TrainConfig(model="masked-bin", data=["cells.h5ad"], out="run"))  # doctest: +SKIP
"""

import importlib

# name -> module; imported on first use, so that ``atacformer --help`` (which registers the
# pretrain/experiment commands from atacformer.train.cli) does not import torch
_EXPORTS = {
    "EpochPlan": "batching",
    "plan_epoch": "batching", "MODEL_PRESETS": "config", "RECIPES": "config", "TRAIN_PRESETS": "config",
    "TrainConfig": "config", "NonFiniteLossError": "trainer",
    "Task": "task", "ArrayExamples": "task", "TASK_MODELS": "task",
    "load_plan": "experiment", "run_experiment": "experiment", "pretrain": "trainer",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"atacformer.train.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)

"""``tl.finetune``: fine-tune a pretrained model on labelled cells in memory."""

from __future__ import annotations

from pathlib import Path

from anndata import AnnData


def finetune(
    adata: AnnData,
    model,
    out,
    *,
    objective: str = "triplet",
    labels_key: str = "cell_type",
    batch_key: str | None = None,
    lora_rank: int = 0,
    freeze_layers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    **train_kwargs,
):
    """Fine-tune ``model`` on the cells of ``adata`` and return the fine-tuned model.

    The package's one training loop runs (:func:`atacformer.train.pretrain` with
    ``init_from`` and a fine-tuning objective), so the run in ``out`` has checkpoints, resumes
    exactly and exports ``out/model``, which :func:`atacformer.tools.embed`,
    :func:`atacformer.tools.annotate`, ``atacformer embed`` and ``atacformer annotate`` load.

    Parameters
    ----------
    adata
        Labelled cells: a peak matrix or tokenized cells; they are tokenized into the
        model's vocabulary.
    model
        The base model: a model folder (ours or geniml's), or a loaded Atacformer model
        (written to ``out/base`` first).
    out
        The run's folder (new or empty; ``overwrite`` replaces an earlier run).
    objective
        ``"triplet"`` (metric learning on pooled cells), ``"classify"`` (a label head) or
        ``"batch-adversarial"`` (profile reconstruction plus a batch classifier behind
        gradient reversal; needs ``batch_key``).
    labels_key, batch_key
        ``obs`` columns of the labels and of the batches.
    lora_rank, freeze_layers
        LoRA adapters of this rank (the backbone frozen), or train only the last
        ``freeze_layers`` encoder layers.
    overwrite, progress
        Replace an earlier run in ``out``; show a progress bar.
    **train_kwargs
        Any other :class:`atacformer.train.TrainConfig` field (``max_steps``, ``epochs``,
        ``time_budget``, ``lr``, ``batch_size``, ``triplet_mining``, ``adversarial_weight``...).

    Returns
    -------
    The fine-tuned model (:class:`atacformer.models.AtacformerForFinetuning`).

    Examples
    --------
    >>> from atacformer import tools as tl
    >>> tuned = tl.finetune(ref, "run/model", "ft", objective="classify")  # doctest: +SKIP
    >>> tl.annotate(query, tuned)                                           # doctest: +SKIP
    """
    from atacformer.models import load_model
    from atacformer.train import TrainConfig, pretrain

    out = Path(out)
    if not isinstance(model, (str, Path)):
        if not hasattr(model, "save_pretrained"):
            raise TypeError(f"model must be a model folder or an atacformer model, got {type(model).__name__}")
        base = out / "base"
        if base.exists() and not overwrite:
            raise FileExistsError(f"{base} exists; pass overwrite=True or another out")
        model.save_pretrained(base)
        model = base
    cfg = TrainConfig(out=str(out / "run") if (out / "base").exists() else str(out), init_from=str(model),
                      objective=objective, label_key=labels_key, batch_key=batch_key, lora_rank=lora_rank,
                      freeze_layers=freeze_layers, overwrite=overwrite, progress=progress, tensorboard=False,
                      **train_kwargs)
    summary = pretrain(cfg, data=adata)
    return load_model(summary["model_dir"])

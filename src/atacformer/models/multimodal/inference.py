"""Cells -> joint embeddings and imputed RNA with a multimodal model (matrices in, numpy out;
the AnnData-facing layer passes ``adata.X`` / layers)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def _rows(x, idx):
    return None if x is None else (x[idx] if sp.issparse(x) else np.asarray(x)[idx])


def _batches(model, rna, gene_activity, batch_size: int, device, progress: bool, what: str):
    """Yield (cell indices, model inputs on the model's device), model in eval mode."""
    n = (rna if rna is not None else gene_activity).shape[0]
    if rna is not None and gene_activity is not None and gene_activity.shape[0] != n:
        raise ValueError(f"rna has {n} cells but gene_activity {gene_activity.shape[0]}: paired "
                         "matrices must hold the same cells in the same order")
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=what, unit="batch")
    for s in starts:
        idx = np.arange(s, min(s + batch_size, n))
        inputs = model.prepare_inputs(_rows(rna, idx), _rows(gene_activity, idx))
        yield idx, {k: v.to(dev) for k, v in inputs.items()}


def embed_multimodal(model, rna=None, gene_activity=None, batch_size: int = 256, device=None,
                     which: str = "joint", progress: bool = False) -> np.ndarray:
    """Cell embeddings from RNA counts, ATAC gene activity or both (paired: same cells, same
    order).

    Parameters
    ----------
    model
        Any multimodal model (:class:`MultimodalModel`, :class:`MultimodalForMaskedValues`,
        :class:`MultimodalForCellClassification`) with fitted value bins for the modalities given.
    rna, gene_activity
        Cells x ``model.config.n_genes`` raw counts (dense or sparse), columns in
        ``config.gene_names`` order; either may be None.
    batch_size
        Cells per forward pass.
    device
        Where to run (the model is moved there); default: where the model is.
    which
        ``"joint"`` (mean of the modality embeddings present; a cell empty in one modality
        gets the other's), ``"rna"`` or ``"atac"``.
    progress
        Show a progress bar.

    Returns
    -------
    numpy.ndarray
        (n_cells, hidden_size) float32.

    Examples
    --------
    >>> emb = embed_multimodal(model, rna=rna.X, gene_activity=ga.X)  # doctest: +SKIP
    >>> rna.obsm["X_multimodal"] = emb                                 # doctest: +SKIP
    """
    if which not in ("joint", "rna", "atac"):
        raise ValueError(f"which must be 'joint', 'rna' or 'atac', got {which!r}")
    if which != "joint" and {"rna": rna, "atac": gene_activity}[which] is None:
        raise ValueError(f"which={which!r} needs that modality's matrix")
    if rna is None and gene_activity is None:
        raise ValueError("give rna, gene_activity or both")
    n = (rna if rna is not None else gene_activity).shape[0]
    out = np.empty((n, model.config.hidden_size), dtype=np.float32)
    was_training = model.training
    model.eval()
    backbone = getattr(model, "multimodal", model)
    try:
        with torch.inference_mode():
            for idx, inputs in _batches(model, rna, gene_activity, batch_size, device, progress, "embedding cells"):
                out[idx] = backbone.embed_modalities(**inputs)[which].float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def impute_rna(model, gene_activity, batch_size: int = 256, device=None,
               return_probabilities: bool = False, progress: bool = False) -> np.ndarray:
    """Cross-modal imputation: every gene's RNA value bin predicted from ATAC gene activity
    alone, with a :class:`MultimodalForMaskedValues` trained with its imputation head.

    Returns
    -------
    numpy.ndarray
        (n_cells, n_genes) int8 most likely bins (0 = not expressed, 1 .. n_bins), or with
        ``return_probabilities`` (n_cells, n_genes, n_bins + 1) float32 probabilities.

    Examples
    --------
    >>> bins = impute_rna(model, gene_activity)  # doctest: +SKIP
    """
    c = model.config
    n = gene_activity.shape[0]
    out = (np.empty((n, c.n_genes, c.n_value_classes), np.float32) if return_probabilities
           else np.empty((n, c.n_genes), np.int8))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for idx, inputs in _batches(model, None, gene_activity, batch_size, device, progress, "imputing RNA"):
                logits = model.cross_modal_logits(**inputs).float()  # (B, G, k)
                out[idx] = (logits.softmax(-1) if return_probabilities else logits.argmax(-1)).cpu().numpy()
    finally:
        model.train(was_training)
    return out


__all__ = ["embed_multimodal", "impute_rna"]

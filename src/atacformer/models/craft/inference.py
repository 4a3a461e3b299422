"""CRAFT at inference: RNA cells into the shared space, and RNA imputed from ATAC cells.
Matrices in, numpy out (the AnnData-facing functions are in :mod:`atacformer.tools`)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from atacformer.models.craft.modeling_craft import rna_inputs


def _batches(n: int, batch_size: int, progress: bool, desc: str):
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch")
    return starts


def embed_rna_cells(model, counts, batch_size: int = 64, device=None, progress: bool = False) -> np.ndarray:
    """Shared-space embeddings (n_cells, projection_dim) of RNA cells.

    Parameters
    ----------
    model
        A :class:`~atacformer.models.CraftModel`.
    counts
        (n_cells, n_genes) counts whose columns are ``model.config.gene_names``.
    batch_size, device, progress
        Cells per forward pass, where to run, a progress bar.

    Returns
    -------
    numpy.ndarray
        Unit-length rows; a cell with no counted gene gets a row of NaN.
    """
    X = sp.csr_matrix(counts, dtype=np.float64)
    c = model.config
    if X.shape[1] != len(c.gene_names):
        raise ValueError(f"the RNA matrix has {X.shape[1]} genes; the model reads {len(c.gene_names)}")
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    medians = model.gene_medians.detach().cpu().numpy()
    out = np.empty((X.shape[0], c.projection_dim), np.float32)
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in _batches(X.shape[0], batch_size, progress, "embedding RNA cells"):
                ids, mask = rna_inputs(X[s: s + batch_size], medians, c)
                out[s: s + len(ids)] = model.embed_rna(ids.to(dev), mask.to(dev)).float().cpu().numpy()
    finally:
        model.train(was)
    out[np.diff(X.indptr) == 0] = np.nan
    return out


def impute_rna(model, cells, batch_size: int = 64, device=None, progress: bool = False) -> np.ndarray:
    """Log-normalised expression (n_cells, n_genes), ``log1p(counts / total * 1e4)``,
    predicted from ATAC cells (token lists or a CSR in the model's vocabulary) by CRAFT's RNA
    decoder; columns are ``model.config.gene_names``."""
    from atacformer.models._collate import as_token_lists

    token_lists = as_token_lists(cells)
    n = len(token_lists)
    out = np.empty((n, len(model.config.gene_names)), np.float32)
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    rng = np.random.default_rng(0)
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in _batches(n, batch_size, progress, "imputing RNA"):
                inputs = model.prepare_inputs(token_lists[s: s + batch_size], None, rng)
                out[s: s + batch_size] = model.impute(**{k: v.to(dev) for k, v in inputs.items()}).float().cpu().numpy()
    finally:
        model.train(was)
    out[np.array([len(t) == 0 for t in token_lists], dtype=bool)] = np.nan
    return out

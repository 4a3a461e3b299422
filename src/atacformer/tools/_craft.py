"""CRAFT from AnnData: train on paired cells, put RNA cells in the shared space, impute RNA.

ATAC cells go through ``tl.embed`` as with any model (a CRAFT model's ATAC embedding is its
shared-space vector); ``tl.embed(..., modality="rna")`` uses :func:`rna_counts` and
:func:`atacformer.models.craft.inference.embed_rna_cells`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

logger = logging.getLogger(__name__)


def rna_counts(adata: AnnData, gene_names, layer: str | None = None) -> sp.csr_matrix:
    """The counts of ``adata`` over ``gene_names`` (genes it lacks are zero), checked to be
    counts. Genes are matched by ``var_names``, else by a ``gene_ids`` / ``gene_id`` column."""
    from atacformer.train.paired import check_counts

    X = sp.csr_matrix(adata.layers[layer] if layer is not None else adata.X)
    check_counts(X[: min(adata.n_obs, 2000)], adata.obs_names, adata.var_names, "the RNA AnnData")
    want = pd.Index([str(g) for g in gene_names])
    pos = pd.Index(adata.var_names.astype(str)).get_indexer(want)
    for col in ("gene_ids", "gene_id"):
        if (pos < 0).any() and col in adata.var.columns:
            alt = pd.Index(adata.var[col].astype(str)).get_indexer(want)
            pos = np.where(pos >= 0, pos, alt)
    found = int((pos >= 0).sum())
    if found == 0:
        raise ValueError(f"none of the model's {len(want):,} genes (e.g. {list(want[:3])}) is in the RNA data "
                         f"(genes e.g. {list(adata.var_names[:3])}); is it the same species and gene naming?")
    if found < 0.5 * len(want):
        logger.warning("only %d of the model's %d genes are in the RNA data; the others count as zero",
                       found, len(want))
    hit = np.flatnonzero(pos >= 0)  # (data gene -> model gene) selection matrix
    select = sp.csr_matrix((np.ones(len(hit), X.dtype), (pos[hit], hit)), shape=(X.shape[1], len(want)))
    out = sp.csr_matrix(X @ select)
    out.eliminate_zeros()
    return out


def train_craft(atac, rna, out, *, base=None, rna_base=None, exclude_cells=None, overwrite: bool = False,
                progress: bool = False, **train_kwargs) -> Path:
    """Train CRAFT on paired cells; returns the exported model folder (``out/model``).

    The package's one training loop runs (:func:`atacformer.train.pretrain` with
    ``objective="craft"``), so the run has checkpoints and resumes exactly.

    Parameters
    ----------
    atac
        ATAC cells (AnnData peak matrix or tokenized cells, or an ``.h5ad`` path).
    rna
        RNA counts of the same cells (AnnData or ``.h5ad`` path), paired by ``obs_names``.
    out
        The run's folder.
    base
        ATAC encoder to start from: one of our model folders or a geniml folder (the cells are
        tokenized into its vocabulary); default: a new encoder over the ATAC peaks.
    rna_base
        A local BERT / Geneformer checkpoint folder to start the RNA encoder from.
    exclude_cells
        Cells never trained on: a list of names or a file (one per line).
    overwrite, progress
        Replace an earlier run in ``out``; show a progress bar.
    **train_kwargs
        Other :class:`atacformer.train.TrainConfig` fields (``time_budget``, ``max_steps``,
        ``batch_size``, ``lr``, ``seed``...).

    Examples
    --------
    >>> from atacformer import tools as tl
    >>> path = tl.train_craft(atac, rna, "craft_run", time_budget=5)   # doctest: +SKIP
    >>> tl.embed(rna, path, modality="rna")                           # doctest: +SKIP
    """
    from atacformer.train import TrainConfig, pretrain

    exclude_file = None
    if exclude_cells is not None and isinstance(exclude_cells, (str, os.PathLike)):
        exclude_file = os.fspath(exclude_cells)
    elif exclude_cells is not None:
        drop = set(map(str, exclude_cells))
        if isinstance(atac, (str, os.PathLike)):
            import anndata as ad

            atac = ad.read_h5ad(atac)
        keep = ~atac.obs_names.astype(str).isin(sorted(drop))
        atac = atac[keep].copy()
    data_paths = [os.fspath(atac)] if isinstance(atac, (str, os.PathLike)) else []
    rna_path = os.fspath(rna) if isinstance(rna, (str, os.PathLike)) else None
    cfg = TrainConfig(out=str(out), data=data_paths, objective="craft", init_from=None if base is None else str(base),
                      rna=rna_path, rna_base=None if rna_base is None else str(rna_base), exclude_cells=exclude_file,
                      overwrite=overwrite, progress=progress, tensorboard=False, **train_kwargs)
    summary = pretrain(cfg, data=None if data_paths else atac, rna=None if rna_path else rna)
    return Path(summary["model_dir"])


def impute(adata: AnnData, model, *, batch_size: int = 64, device=None, progress: bool = False) -> AnnData:
    """RNA imputed from ATAC cells by a CRAFT model's decoder.

    Parameters
    ----------
    adata
        ATAC cells (a peak matrix or tokenized cells; tokenized into the model's
        vocabulary when their regions differ).
    model
        A CRAFT model or its folder.
    batch_size, device, progress
        As in :func:`atacformer.tools.embed`.

    Returns
    -------
    AnnData
        Cells x genes: ``X`` the predicted ``log1p(counts / total * 1e4)``, ``var_names`` the
        model's genes, ``obs`` that of ``adata``.

    Examples
    --------
    >>> pred = tl.impute(atac, "craft_run/model")   # doctest: +SKIP
    """
    from atacformer.models.craft.inference import impute_rna

    model = _craft_model(model)
    cells = _atac_cells(adata, model)
    X = impute_rna(model, cells, batch_size=batch_size, device=device, progress=progress)
    out = AnnData(X=X, obs=adata.obs.copy(), var=pd.DataFrame(index=pd.Index(model.config.gene_names, dtype=str)))
    out.uns["atacformer_impute"] = {"values": "log1p(counts / total * 1e4)", "n_genes": X.shape[1]}
    return out


def _craft_model(model):
    from atacformer.models import CraftModel, load_model

    if isinstance(model, (str, os.PathLike)):
        from atacformer.models._pretrained import resolve_model_dir

        d = Path(model)
        model = load_model(d / "model" if (d / "model" / "config.json").exists() else resolve_model_dir(model))
    if not isinstance(model, CraftModel):
        raise ValueError(f"a CRAFT model is needed (train one with tl.train_craft / atacformer craft), got "
                         f"{type(model).__name__}")
    return model


def _atac_cells(adata: AnnData, model) -> sp.csr_matrix:
    """``adata``'s cells as a CSR over the model's regions (tokenized when they differ)."""
    from atacformer.tokenizers import tokenize_input

    return sp.csr_matrix(tokenize_input(adata, model.vocab).X)

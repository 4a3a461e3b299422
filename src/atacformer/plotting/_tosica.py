"""Heat map of the gene sets TOSICA's calls rest on: mean ``<cls>`` attention per predicted type."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from anndata import AnnData
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from atacformer.plotting._umap import _save

logger = logging.getLogger(__name__)

__all__ = ["tosica_attention"]


def tosica_attention(adata: AnnData, groupby: str = "predicted_label", *, n_top: int = 5,
                     rank_by: str = "specificity", standard_scale: bool = True, save: str | Path | None = None,
                     dpi: int = 150) -> Figure:
    """Heat map of the top gene sets (rows) of each group (columns) by ``<cls>`` attention.

    Parameters
    ----------
    adata
        Cells annotated by :func:`atacformer.tools.tosica_predict` (``obsm["X_tosica_attention"]``).
    groupby
        ``obs`` column grouping the cells (default the predicted types).
    n_top
        Gene sets taken per group (the union is shown, in group order).
    rank_by
        ``"specificity"`` (a group's mean attention minus the mean of the other groups: what
        sets the group apart) or ``"attention"`` (the group's mean attention).
    standard_scale
        Scale each gene set's row to 0-1 across the groups (the colour then compares groups);
        ``False`` shows the mean attention itself.
    save
        PNG to write (atomically); ``None`` only returns the figure.
    dpi
        Resolution of the PNG.

    Returns
    -------
    matplotlib.figure.Figure
        One heat map whose image array is the (gene sets x groups) matrix shown.

    Examples
    --------
    >>> import anndata as ad, pandas as pd
    >>> from atacformer import plotting as pl
    >>> a = ad.AnnData(np.zeros((3, 1)), obs=pd.DataFrame({"predicted_label": ["x", "x", "y"]}, index=list("abc")))
    >>> a.obsm["X_tosica_attention"] = np.array([[0.2, 0.8], [0.4, 0.6], [1.0, 0.0]])
    >>> a.uns["tosica"] = {"pathways": ["P", "Q"]}
    >>> fig = pl.tosica_attention(a, n_top=1, standard_scale=False)
    >>> fig.axes[0].images[0].get_array().round(2).tolist()
    [[0.7, 0.0], [0.3, 1.0]]
    """
    from atacformer.tools._tosica import tosica_pathway_attention

    if rank_by not in ("specificity", "attention"):
        raise ValueError(f"rank_by must be 'specificity' or 'attention', got {rank_by!r}")
    if n_top < 1:
        raise ValueError(f"n_top must be at least 1, got {n_top}")
    mean = tosica_pathway_attention(adata, groupby)  # (groups, pathways)
    score = mean
    if rank_by == "specificity" and len(mean) > 1:
        rest = (mean.sum(0) - mean) / (len(mean) - 1)
        score = mean - rest
    chosen: list[str] = []
    for g in mean.index:
        for p in score.loc[g].sort_values(ascending=False).index[:n_top]:
            if p not in chosen:
                chosen.append(p)
    M = mean[chosen].T.to_numpy()  # (pathways, groups)
    if standard_scale:
        lo, hi = M.min(1, keepdims=True), M.max(1, keepdims=True)
        M = (M - lo) / np.where(hi > lo, hi - lo, 1.0)
    n_r, n_c = M.shape
    fig = Figure(figsize=(max(4.0, 0.4 * n_c + 5.0), max(3.0, 0.22 * n_r + 1.8)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(M, cmap="viridis", aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="attention (scaled per gene set)" if standard_scale
                 else "mean <cls> attention")
    fs = 8 if n_r <= 40 else 6
    ax.set_yticks(np.arange(n_r), labels=[p if len(p) <= 60 else p[:57] + "..." for p in chosen], fontsize=fs)
    ax.set_xticks(np.arange(n_c), labels=[str(g) for g in mean.index], rotation=45, ha="right",
                  rotation_mode="anchor", fontsize=fs + 1)
    ax.set_xlabel(groupby)
    ax.set_title(f"top {n_top} gene sets per group by {rank_by}", fontsize=10)
    _save(fig, save, dpi)
    return fig

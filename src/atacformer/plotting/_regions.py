"""Region-level plots: the TSS distribution score and inferred cryptic TSSs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anndata import AnnData
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from atacformer.plotting._umap import _save


def tss_score(adata: AnnData, key: str = "tss_score", *, save: str | Path | None = None, dpi: int = 150) -> Figure:
    """Left: each region's distance to the nearest TSS (log10 bp + 1) against its embedding
    distance to the promoter-like centroid, cryptic-TSS calls (``var["cryptic_tss"]``) in red.
    Right: the score against its shuffled-label control.

    Needs :func:`atacformer.tl.tss_score` first.
    """
    if key not in adata.uns or "centroid_distance" not in adata.var:
        raise KeyError(f"uns[{key!r}] is missing: run atacformer.tl.tss_score(adata) first")
    res = adata.uns[key]
    fig = Figure(figsize=(9, 3.8))
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    x = np.log10(np.abs(adata.var["tss_distance"].to_numpy(np.float64)) + 1)
    y = adata.var["centroid_distance"].to_numpy(np.float64)
    ax.scatter(x, y, s=2, alpha=0.3, c="0.4", rasterized=True, label="regions")
    if "cryptic_tss" in adata.var:
        m = adata.var["cryptic_tss"].to_numpy(bool)
        ax.scatter(x[m], y[m], s=6, c="tab:red", label=f"icTSS ({int(m.sum())})")
    ax.set_xlabel("log10(|distance to nearest TSS| + 1)")
    ax.set_ylabel("distance to promoter centroid")
    ax.legend(loc="lower right", fontsize=8, markerscale=3)
    sh = np.asarray(res.get("shuffled", []), dtype=float)
    if len(sh):
        bx.hist(sh, bins=20, color="0.7", label="shuffled TSS distances")
    bx.axvline(res["score"], color="tab:red", label=f"score {res['score']:.3f}")
    bx.set_xlabel("Spearman rho")
    bx.legend(fontsize=8)
    fig.suptitle("TSS distribution score")
    _save(fig, save, dpi)
    return fig


def cryptic_tss(adata: AnnData, key: str = "cryptic_tss", *, save: str | Path | None = None,
                dpi: int = 150) -> Figure:
    """Mean signal of the cryptic-TSS calls against the null of accessibility-matched random
    region sets (needs :func:`atacformer.tl.cryptic_tss` with a ``signal``)."""
    res = adata.uns.get(key)
    if res is None or "null" not in res:
        raise KeyError(f"uns[{key!r}] has no null: run atacformer.tl.cryptic_tss(adata, signal=...) first")
    fig = Figure(figsize=(5, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.hist(np.asarray(res["null"], dtype=float), bins=30, color="0.7", label=f"{len(res['null'])} random sets")
    ax.axvline(res["observed"], color="tab:red",
               label=f"icTSS ({len(res['calls'])}): {res['fold']:.2f}x, p = {res['p']:.3g}")
    ax.set_xlabel("mean signal")
    ax.set_ylabel("random region sets")
    ax.legend(fontsize=8)
    _save(fig, save, dpi)
    return fig

"""Cell QC plots: the barcode-rank (knee) plot, the fragment length distribution and the
TSS enrichment profile, from the library-level results of the tokenizer's QC pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from atacformer.plotting._umap import _save

PLOTS = ("knee", "fragment_lengths", "tss_profile")


def _library(data) -> dict:
    if isinstance(data, dict):
        return data
    uns = getattr(data, "uns", None)
    if uns is None or "qc" not in uns:
        raise KeyError("uns['qc'] is missing: tokenize with qc=True (CLI: atacformer tokenize ... --qc) "
                       "or pass the library results of atacformer.pp.qc_metrics")
    return uns["qc"]


def qc(data, *, save: str | Path | None = None, dpi: int = 120) -> dict[str, Figure]:
    """Three QC figures: the knee plot (barcodes ranked by fragments, log-log, with the
    cell-calling threshold), the fragment length histogram (nucleosome-free < 147 bp and
    mono-nucleosome 147-294 bp shaded) and the TSS profile (insertions +-2 kb around TSSs,
    over the mean of its 100-bp ends, as SnapATAC2's TSS enrichment).

    Parameters
    ----------
    data
        AnnData / :class:`~atacformer.tokenizers.TokenizedCells` with ``uns["qc"]``, or that
        dict itself (the second result of :func:`atacformer.pp.qc_metrics`).
    save
        Path prefix: writes ``{save}_knee.png``, ``{save}_fragment_lengths.png`` and
        ``{save}_tss_profile.png`` (the last only with TSSs).

    Returns
    -------
    dict
        Figure per plot name.

    Examples
    --------
    >>> figs = qc(adata, save="qc/pbmc")  # doctest: +SKIP
    """
    lib = _library(data)
    figs = {}
    # knee plot
    fig = Figure(figsize=(4.5, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    vals = np.asarray(lib["rank_fragments"], dtype=float)
    rank = np.asarray(lib["rank"], dtype=float)
    ax.step(rank[::-1], vals[::-1], where="post", color="0.2", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    cut = max(float(lib.get("knee", -1)), float(lib.get("min_fragments", 0)))
    if cut > 0:
        ax.axhline(cut, color="tab:red", lw=1, ls="--", label=f"threshold {int(cut):,}")
        ax.legend(fontsize=8)
    ax.set_xlabel("barcode rank")
    ax.set_ylabel("fragments")
    ax.set_title("barcode rank")
    figs["knee"] = fig
    # fragment lengths
    fig = Figure(figsize=(4.5, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    h = np.asarray(lib["fragment_lengths"], dtype=float)
    x = np.arange(len(h))
    ax.plot(x[:-1], h[:-1] / max(h.sum(), 1), color="0.2", lw=1)
    ax.axvspan(0, 147, color="tab:blue", alpha=0.1, label="nucleosome-free")
    ax.axvspan(147, 294, color="tab:orange", alpha=0.1, label="mono-nucleosome")
    ax.set_xlabel("fragment length (bp)")
    ax.set_ylabel("fraction of fragments")
    ax.legend(fontsize=8)
    ax.set_title("fragment lengths")
    figs["fragment_lengths"] = fig
    if "tss_profile" in lib:
        p = np.asarray(lib["tss_profile"], dtype=float)
        bg = (p[:100].sum() + p[-100:].sum()) / 200 + 0.1
        fig = Figure(figsize=(4.5, 3.6))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        flank = (len(p) - 1) // 2
        ax.plot(np.arange(-flank, flank + 1), p / bg, color="0.2", lw=0.8)
        ax.set_xlabel("distance to TSS (bp)")
        ax.set_ylabel("insertions / flank mean")
        ax.set_title(f"TSS enrichment (library {lib.get('library_tsse', float('nan')):.2f})")
        figs["tss_profile"] = fig
    if save is not None:
        for name, f in figs.items():
            _save(f, f"{save}_{name}.png", dpi)
    return figs

"""UMAP scatter plots written to PNG, without a display or pyplot's global state.

Figures are :class:`matplotlib.figure.Figure` objects rendered with the Agg canvas, so
plotting works on a headless server and never switches the caller's pyplot backend.
A categorical ``obs`` column (labels, clusters, batches) gets one colour per category and a
legend; a numeric column a colour bar. In :func:`umap_grid`, one category gets the same
colour in every panel so that maps of several embeddings compare at a glance.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = ["umap", "umap_grid"]

DEFAULT_REPS = ("X_atacformer", "X_scembed", "X_lsi")
_MISSING = "#d3d3d3"


def _palette(n: int) -> list:
    """``n`` distinct colours: tab10/tab20 first, then evenly spaced hues."""
    if n <= 10:
        return list(colormaps["tab10"].colors[:n])
    if n <= 20:
        return list(colormaps["tab20"].colors[:n])
    base = list(colormaps["tab20"].colors) + list(colormaps["tab20b"].colors)
    if n <= len(base):
        return base[:n]
    return [colormaps["hsv"](i / n) for i in range(n)]


def _ensure_umap(adata: AnnData, basis: str, use_rep: str | None) -> None:
    if basis in adata.obsm:
        return
    if use_rep is None:
        use_rep = next((r for r in DEFAULT_REPS if r in adata.obsm), None)
    if use_rep is None:
        raise ValueError(f"no obsm[{basis!r}] and no embedding to compute it from; pass "
                         f"use_rep (obsm has {sorted(adata.obsm)})")
    from atacformer.tools import umap as tl_umap

    logger.info("umap: computing obsm[%r] from obsm[%r]", basis, use_rep)
    tl_umap(adata, use_rep, key_added=basis)


def _draw(ax, fig, adata: AnnData, basis: str, key: str, categories, point_size, seed):
    xy = np.asarray(adata.obsm[basis])[:, :2]
    if key not in adata.obs:
        raise ValueError(f"color={key!r} is not an obs column ({list(adata.obs.columns)})")
    values = adata.obs[key]
    order = np.random.default_rng(seed).permutation(adata.n_obs)  # no category paints last
    size = point_size or max(2.0, min(30.0, 12000 / max(adata.n_obs, 1)))
    if pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype):
        sc = ax.scatter(xy[order, 0], xy[order, 1], c=values.to_numpy()[order], s=size,
                        cmap="viridis", linewidths=0, rasterized=True)
        fig.colorbar(sc, ax=ax, shrink=0.7)
    else:
        if categories is None:
            categories = sorted(values.dropna().unique(), key=str)
        cats = list(categories)
        colours = dict(zip(cats, _palette(len(cats))))
        vals = values.astype(object).to_numpy()
        point_colours = [colours.get(v, _MISSING) for v in vals[order]]
        ax.scatter(xy[order, 0], xy[order, 1], c=point_colours, s=size, linewidths=0,
                   rasterized=True)
        present = set(vals[pd.notna(vals)])
        handles = [ax.scatter([], [], color=colours[c], s=30, label=str(c))
                   for c in cats if c in present]
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
                  fontsize="small", ncols=1 if len(handles) <= 14 else 2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{basis.removeprefix('X_').upper()}1")
    ax.set_ylabel(f"{basis.removeprefix('X_').upper()}2")


def _save(fig: Figure, path, dpi: int) -> None:
    """Render ``fig`` to a temporary sibling, then rename it onto ``path``, so that an
    interrupted run never leaves a truncated image where a finished one is expected."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".").lower() or "png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("wrote %s", path)


def _as_list(color) -> list[str]:
    return [color] if isinstance(color, str) else list(color)


def umap(
    adata: AnnData,
    color: str | Sequence[str],
    path: str | Path | None = None,
    *,
    use_rep: str | None = None,
    basis: str = "X_umap",
    ncols: int = 3,
    point_size: float | None = None,
    title: str | None = None,
    dpi: int = 150,
    seed: int = 0,
) -> Figure:
    """Scatter the UMAP of ``adata`` coloured by one or more ``obs`` columns.

    Parameters
    ----------
    adata
        Annotated data; ``obsm[basis]`` is computed with :func:`atacformer.tools.umap`
        from ``use_rep`` when missing.
    color
        ``obs`` column(s), one panel each (label, cluster, batch, or a numeric column).
    path
        PNG to write (parent folders are created); ``None`` only returns the figure.
    use_rep
        Embedding for a missing UMAP; default the first of ``X_atacformer``,
        ``X_scembed``, ``X_lsi`` present.
    basis
        ``obsm`` key of the 2-D coordinates.
    ncols
        Panels per row.
    point_size
        Marker area; default shrinks with the number of cells.
    title
        Figure title.
    dpi
        Resolution of the PNG.
    seed
        Seed of the drawing order.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from atacformer import plotting as pl
    >>> a = ad.AnnData(np.zeros((50, 1)), obs=pd.DataFrame({"t": list("ab") * 25},
    ...                                                    index=np.arange(50).astype(str)))
    >>> a.obsm["X_umap"] = np.random.default_rng(0).normal(size=(50, 2))
    >>> fig = pl.umap(a, "t")
    >>> len(fig.axes)
    1
    """
    _ensure_umap(adata, basis, use_rep)
    keys = _as_list(color)
    ncols = max(1, min(ncols, len(keys)))
    nrows = -(-len(keys) // ncols)
    fig = Figure(figsize=(5.2 * ncols, 4.2 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        _draw(ax, fig, adata, basis, key, None, point_size, seed)
        ax.set_title(key)
    for ax in axes[len(keys):]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    _save(fig, path, dpi)
    return fig


def umap_grid(
    adatas: Mapping[str, AnnData],
    color: str | Sequence[str],
    path: str | Path | None = None,
    *,
    use_rep: str | Mapping[str, str] | None = None,
    basis: str = "X_umap",
    point_size: float | None = None,
    dpi: int = 150,
    seed: int = 0,
    max_cols: int = 4,
) -> Figure:
    """Side-by-side UMAPs of several datasets or embeddings: one panel per entry and colour.

    Parameters
    ----------
    adatas
        Name -> AnnData (e.g. ``{"LSI": a1, "scEmbed": a2, "Atacformer": a3}``), drawn
        left to right.
    color
        ``obs`` column(s), one row each; a category keeps its colour across columns.
    path
        PNG to write; ``None`` only returns the figure.
    use_rep
        Embedding for a missing UMAP: one key for all, or name -> key.
    basis
        ``obsm`` key of the 2-D coordinates.
    point_size, dpi, seed
        As in :func:`umap`.
    max_cols
        Entries per row; more entries wrap onto further rows (each colour key starts a new
        block of rows).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from atacformer import plotting as pl
    >>> a = ad.AnnData(np.zeros((50, 1)), obs=pd.DataFrame({"t": list("ab") * 25},
    ...                                                    index=np.arange(50).astype(str)))
    >>> a.obsm["X_umap"] = np.random.default_rng(0).normal(size=(50, 2))
    >>> fig = pl.umap_grid({"x": a, "y": a.copy()}, "t")
    >>> len(fig.axes)
    2
    """
    if not adatas:
        raise ValueError("umap_grid: no AnnData given")
    keys = _as_list(color)
    for name, a in adatas.items():
        rep = use_rep.get(name) if isinstance(use_rep, Mapping) else use_rep
        _ensure_umap(a, basis, rep)
    shared = {}
    for key in keys:
        cols = [a.obs[key] for a in adatas.values() if key in a.obs]
        if cols and not all(pd.api.types.is_numeric_dtype(c) and
                            not isinstance(c.dtype, pd.CategoricalDtype) for c in cols):
            shared[key] = sorted({v for c in cols for v in c.dropna().unique()}, key=str)
    if max_cols < 1:
        raise ValueError(f"max_cols must be >= 1, got {max_cols}")
    ncols = min(len(adatas), max_cols)
    blocks = -(-len(adatas) // ncols)  # rows per colour key
    nrows = len(keys) * blocks
    fig = Figure(figsize=(5.2 * ncols, 4.2 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    used = np.zeros(axes.shape, dtype=bool)
    for j, (name, a) in enumerate(adatas.items()):
        for i, key in enumerate(keys):
            ax = axes[i * blocks + j // ncols, j % ncols]
            used[i * blocks + j // ncols, j % ncols] = True
            _draw(ax, fig, a, basis, key, shared.get(key), point_size, seed)
            ax.set_title(f"{name}: {key}")
    for ax in axes[~used]:
        ax.set_axis_off()
    _save(fig, path, dpi)
    return fig

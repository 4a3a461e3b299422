"""Confusion matrix of predicted against true cell types, row-normalised, written to PNG.

Each row is one true type and sums to 1, so a row reads as "where the cells of this type
went" whatever the type's size; the diagonal is each type's recall. Predicted labels that are
not true types (``"unassigned"``, a reference type the query lacks) get columns of their own
to the right.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from atacformer.plotting._umap import _save

logger = logging.getLogger(__name__)

__all__ = ["confusion_matrix"]

UNASSIGNED = "unassigned"


def _order(values: pd.Series) -> list[str]:
    """Categories in their categorical order when there is one, else sorted."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.dropna().astype(str))
        return [str(c) for c in values.cat.categories if str(c) in present]
    return sorted(set(values.dropna().astype(str)))


def confusion_matrix(
    adata: AnnData,
    truth_key: str,
    pred_key: str = "predicted_label",
    *,
    save: str | Path | None = None,
    values: str = "fraction",
    title: str | None = None,
    dpi: int = 150,
) -> Figure:
    """Heat map of true (rows) against predicted (columns) labels, each row summing to 1.

    Parameters
    ----------
    adata
        Cells with true labels in ``obs[truth_key]`` and predictions in ``obs[pred_key]``
        (cells without a true label are left out).
    truth_key, pred_key
        ``obs`` columns.
    save
        PNG to write (atomically; parent folders are created); ``None`` only returns the
        figure.
    values
        Written in each non-empty cell: ``"fraction"`` (of the row) or ``"count"``.
    title
        Figure title; default the number of cells and the accuracy.
    dpi
        Resolution of the PNG.

    Returns
    -------
    matplotlib.figure.Figure
        One heat map (its image array is the row-normalised matrix) and a colour bar.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from atacformer import plotting as pl
    >>> obs = pd.DataFrame({"t": list("aabb"), "p": ["a", "b", "b", "unassigned"]},
    ...                    index=list("wxyz"))
    >>> fig = pl.confusion_matrix(ad.AnnData(np.zeros((4, 1)), obs=obs), "t", "p")
    >>> fig.axes[0].images[0].get_array().tolist()
    [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]
    """
    from sklearn.metrics import confusion_matrix as sk_confusion

    for key in (truth_key, pred_key):
        if key not in adata.obs:
            raise KeyError(f"confusion_matrix: {key!r} is not an obs column (columns: {list(adata.obs.columns)})")
    if values not in ("fraction", "count"):
        raise ValueError(f"values must be 'fraction' or 'count', got {values!r}")
    truth, pred = adata.obs[truth_key], adata.obs[pred_key]
    scored = truth.notna().to_numpy()
    if not scored.any():
        raise ValueError(f"confusion_matrix: obs[{truth_key!r}] has no label")
    rows = _order(truth[scored])
    y_true = truth[scored].astype(str).to_numpy()
    y_pred = pred[scored].astype(object).where(pred[scored].notna(), UNASSIGNED).astype(str).to_numpy()
    extra = [c for c in _order(pd.Series(y_pred)) if c not in rows and c != UNASSIGNED]
    cols = rows + extra + ([UNASSIGNED] if (y_pred == UNASSIGNED).any() else [])
    counts = sk_confusion(y_true, y_pred, labels=cols)[: len(rows)]  # (n_true, n_pred)
    fractions = counts / np.maximum(counts.sum(1, keepdims=True), 1)

    n_r, n_c = counts.shape
    fig = Figure(figsize=(max(4.5, 0.45 * n_c + 3.0), max(3.5, 0.38 * n_r + 2.2)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true type")
    fontsize = 10 if max(n_r, n_c) <= 10 else 8 if max(n_r, n_c) <= 21 else 6
    for i in range(n_r):
        for j in range(n_c):
            if counts[i, j] == 0:
                continue  # blank cells keep a sparse matrix readable
            text = f"{fractions[i, j]:.2f}" if values == "fraction" else str(int(counts[i, j]))
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                    color="white" if fractions[i, j] > 0.55 else "black")
    ax.set_xticks(np.arange(n_c), labels=cols, rotation=45, ha="right", rotation_mode="anchor",
                  fontsize=fontsize + 1)
    ax.set_yticks(np.arange(n_r), labels=[f"{r} (n={int(n)})" for r, n in zip(rows, counts.sum(1))],
                  fontsize=fontsize + 1)
    ax.set_xlabel(f"predicted ({pred_key})")
    ax.set_ylabel(f"true ({truth_key})")
    accuracy = float(np.mean(y_true == y_pred))
    ax.set_title(title if title is not None else
                 f"{len(y_true):,} cells, accuracy {accuracy:.2f} (rows sum to 1)", fontsize=10)
    _save(fig, save, dpi)
    return fig

"""How cell embeddings and clustering hold up when a cell gets fewer tokens.

A cell longer than the context is embedded from a uniform random subset of its tokens
(genomic order kept; see :func:`atacformer.models.embed_cells`). LeRoy 2025 (dissertation)
found Atacformer's clustering robust down to a context of about 512 tokens;
:func:`context_robustness` measures this for any model and labelled set with the package's
one embedding path (:func:`atacformer.tools.embed`) and one evaluation protocol
(:func:`atacformer.metrics.evaluate_embedding`).

The reference of each cell is its *full-context* embedding: every token of the cell, i.e.
``max_length`` = the longest cell. Our Atacformer models carry no position table, so a
model embeds any number of tokens, also more than its training context
(``config.max_length``); the table records that context (``model_context``) so that rows
beyond it read as what they are, an extrapolation. A model with learned positions (some
published geniml checkpoints) cannot go past its position table: its reference is capped
there and larger contexts are refused.

Subsampling is seeded (:func:`atacformer.tools.embed` draws with seed 0), so one model,
one set and one context give one embedding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

logger = logging.getLogger(__name__)

DEFAULT_CONTEXTS = (8192, 4096, 2048, 1024, 512, 256)

#: Columns of :func:`context_robustness` ahead of the evaluation scores.
CONTEXT_COLUMNS = ["context", "model_context", "reference_context", "n_cells", "median_tokens",
                   "frac_truncated", "cosine_median", "cosine_p05", "embed_seconds"]


def _check_contexts(contexts) -> list[int]:
    if isinstance(contexts, (int, np.integer)):
        contexts = [contexts]
    out = []
    for c in contexts:
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or c <= 0:
            raise ValueError(f"context {c!r}: expected a positive whole number of tokens (e.g. 512)")
        out.append(int(c))
    if not out:
        raise ValueError("contexts is empty: expected one or more positive token counts")
    return sorted(set(out), reverse=True)


def _token_counts(adata: AnnData, layer: str | None, chunk_size: int = 8192) -> np.ndarray:
    """Tokens per cell: the non-zeros of each row (what the embedding reads)."""
    X = adata.layers[layer] if layer is not None else adata.X
    counts = np.empty(adata.n_obs, np.int64)
    for s in range(0, adata.n_obs, chunk_size):
        chunk = sp.csr_matrix(X[s: s + chunk_size])
        chunk.eliminate_zeros()
        counts[s: s + chunk.shape[0]] = np.diff(chunk.indptr)
    return counts


def _position_limit(model) -> int | None:
    """The longest sequence a model can take (its position table), or None (no limit)."""
    c = model.config
    return int(c.max_length) if getattr(c, "use_position_embeddings", False) else None


def _rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(1) / norm


def context_robustness(
    adata: AnnData,
    model,
    contexts: Sequence[int] = DEFAULT_CONTEXTS,
    labels_key: str = "cell_type",
    seed: int = 0,
    *,
    layer: str | None = None,
    batch_size: int = 64,
    device=None,
    key_added: str | None = None,
) -> pd.DataFrame:
    """Embed and score the cells at several contexts.

    Each context ``C`` embeds every cell with :func:`atacformer.tools.embed` at
    ``max_length=C`` (cells longer than ``C`` are subsampled to ``C`` tokens) and with the
    model's own settings (pooling, depth removal, unit length), and scores the embedding
    with :func:`atacformer.metrics.evaluate_embedding`. Each cell's embedding is also
    compared with its full-context embedding (all of its tokens) by cosine similarity.

    Parameters
    ----------
    adata
        Tokenized cells (columns = the model's regions), labels in ``obs[labels_key]``.
    model
        Any atacformer model (see :func:`atacformer.models.load_model`).
    contexts
        Positive token counts; rows come out from the largest to the smallest.
    labels_key
        ``obs`` column of the labels.
    seed
        Seed of the evaluation (Leiden, k-means, the transfer split).
    layer, batch_size, device
        As in :func:`atacformer.tools.embed`.
    key_added
        When given, keep the embeddings in ``obsm[f"{key_added}_{C}"]`` (and the
        reference in ``obsm[f"{key_added}_full"]``); by default ``adata`` is left unchanged.

    Returns
    -------
    pandas.DataFrame
        One row per context: ``context``; ``model_context`` (the model's training
        context); ``reference_context`` (tokens of the longest cell, or the model's position
        table when smaller); ``n_cells``; ``median_tokens`` (median tokens a cell is embedded
        from); ``frac_truncated`` (fraction of cells longer than the context);
        ``cosine_median`` / ``cosine_p05`` (median / 5th percentile over cells of the cosine
        similarity to the full-context embedding, computed before any depth removal);
        ``embed_seconds``; then the columns of :func:`atacformer.metrics.evaluate_embedding`.

    Raises
    ------
    ValueError
        A context that is not a positive whole number, or one beyond the position table of
        a model with learned positions.

    Examples
    --------
    >>> from atacformer.evaluation import context_robustness
    >>> table = context_robustness(adata, load_model("run/model"), (4096, 512))  # doctest: +SKIP
    >>> table[["context", "frac_truncated", "cosine_median", "leiden_ari"]]      # doctest: +SKIP
    """
    from atacformer import tools as tl
    from atacformer.metrics import evaluate_embedding
    from atacformer.tools._embed import embedding_settings

    contexts = _check_contexts(contexts)
    if labels_key not in adata.obs.columns:
        raise KeyError(f"obs has no column {labels_key!r} (columns: {list(adata.obs.columns)})")
    limit = _position_limit(model)
    if limit is not None and contexts[0] > limit:
        raise ValueError(f"context {contexts[0]:,} is beyond this model's position table ({limit:,} "
                         f"positions); use contexts <= {limit:,}")
    counts = _token_counts(adata, layer)
    longest = max(int(counts.max(initial=0)), 1)
    reference = longest if limit is None else min(longest, limit)
    raw = embedding_settings(model)["remove_depth"]  # depth removal refits a PCA per context:
    # cosines are then taken on a second, raw embedding (unit length does not change them)
    kw = dict(layer=layer, batch_size=batch_size, device=device)
    keys = {"full": "_context_full"}
    added: list[str] = []
    rows = []
    try:
        tl.embed(adata, model, max_length=reference, remove_depth=False, key_added=keys["full"], **kw)
        added.append(keys["full"])
        full = np.asarray(adata.obsm[keys["full"]])
        for c in contexts:
            key = keys[c] = f"_context_{c}"
            t0 = time.perf_counter()
            tl.embed(adata, model, max_length=c, key_added=key, **kw)
            secs = time.perf_counter() - t0
            added.append(key)
            emb = np.asarray(adata.obsm[key])
            if raw:
                tl.embed(adata, model, max_length=c, remove_depth=False, key_added="_context_raw", **kw)
                added.append("_context_raw")
                emb = np.asarray(adata.obsm["_context_raw"])
            cos = _rowwise_cosine(emb, full)
            ok = np.isfinite(cos)
            row = {"context": c, "model_context": int(model.config.max_length), "reference_context": reference,
                   "n_cells": adata.n_obs, "median_tokens": float(np.median(np.minimum(counts, c))),
                   "frac_truncated": float((counts > c).mean()),
                   "cosine_median": float(np.median(cos[ok])) if ok.any() else np.nan,
                   "cosine_p05": float(np.percentile(cos[ok], 5)) if ok.any() else np.nan,
                   "embed_seconds": secs}
            row.update(evaluate_embedding(adata, key, labels_key, seed))
            rows.append(row)
            logger.info("context %d: %.0f%% of cells truncated, median cosine %.4f, Leiden ARI %.3f",
                        c, 100 * row["frac_truncated"], row["cosine_median"], row["leiden_ari"])
    finally:
        for key in dict.fromkeys(added):
            emb = adata.obsm.pop(key, None)
            adata.uns.pop(key, None)
            if key_added is not None and emb is not None and key != "_context_raw":
                adata.obsm[f"{key_added}{key.removeprefix('_context')}"] = emb
    return pd.DataFrame(rows)


_LABELS = {"leiden_ari": "Leiden ARI", "leiden_nmi": "Leiden NMI", "kmeans_ari": "k-means ARI",
           "kmeans_nmi": "k-means NMI", "transfer_acc": "kNN transfer accuracy",
           "cosine_median": "median cosine to the full-context embedding"}


def _series(table: pd.DataFrame) -> Iterable[tuple[str, pd.DataFrame]]:
    """One line per (dataset, model) when the table holds several."""
    by = [c for c in ("dataset", "model") if c in table.columns]
    if not by:
        yield "", table
        return
    for key, part in table.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        yield " / ".join(str(k) for k in key), part


def plot_context_robustness(table: pd.DataFrame, path: str | Path | None = None, *,
                            metrics: Sequence[str] = ("leiden_ari", "leiden_nmi"), dpi: int = 150):
    """ARI and NMI against context (log2 axis), one panel per metric, one line per
    dataset / model, written to ``path`` (PNG, replaced atomically).

    Parameters
    ----------
    table
        :func:`context_robustness` rows; ``dataset`` and ``model`` columns, when present,
        split the lines.
    path
        Output image (``None``: only return the figure).
    metrics
        Columns on the y axes.
    dpi
        Resolution.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> plot_context_robustness(table, "context.png")  # doctest: +SKIP
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from atacformer.plotting._umap import _save

    missing = [c for c in ("context", *metrics) if c not in table.columns]
    if missing:
        raise ValueError(f"table has no column(s) {missing} (columns: {list(table.columns)})")
    fig = Figure(figsize=(4.2 * len(metrics) + 2.2, 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    contexts = sorted(table["context"].unique())
    for ax, metric in zip(axes, metrics):
        for label, part in _series(table):
            part = part.sort_values("context")
            ax.plot(part["context"], part[metric], marker="o", label=label or None)
        ax.set_xscale("log", base=2)
        ax.set_xticks(contexts)
        ax.set_xticklabels([f"{c:,}" for c in contexts], rotation=45)
        ax.set_xlabel("context (tokens per cell)")
        ax.set_ylabel(_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    fig.tight_layout()
    _save(fig, path, dpi)
    return fig

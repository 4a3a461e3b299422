"""TOSICA from AnnData: train on labelled cells with a GMT file, annotate query cells, explain.

Input is log-normalised expression (RNA, or ATAC gene activity from
:func:`atacformer.preprocessing.gene_activity`). What arrives is checked, and with
``normalize="auto"`` (the default) a matrix that looks like counts is normalised here the way
scanpy does (:func:`scanpy.pp.normalize_total` to 10,000 per cell, then
:func:`scanpy.pp.log1p`), over all of the data's genes before the model's genes are picked.
It "looks like counts" when it is non-negative and either every value is an integer or the
largest exceeds ``log1p(1e6)`` (13.8), which no log-normalised profile reaches. Pass
``normalize=True`` to force the step (e.g. for small fractional gene-activity values) and
``normalize=False`` to use ``X`` as it is.

Training goes through the package's one loop (:func:`atacformer.train.pretrain` with a
:class:`~atacformer.train.task.Task`), so runs have checkpoints, exact resume and an
exported folder ``out/model`` that :func:`atacformer.models.load_model` reads.
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

UNKNOWN = "Unknown"
ATTENTION_KEY = "X_tosica_attention"
_COUNTS_MAX = float(np.log1p(1e6))
#: Training defaults (over the ``cpu`` preset): the paper converges within 20 epochs; on a
#: validation split of the NeurIPS BMMC reference cells (never the benchmark's held-out ones)
#: lr 3e-3 gave macro-F1 0.287 against 0.226 for 1e-3.
TOSICA_TRAIN = dict(batch_size=32, lr=3e-3, epochs=20.0, min_steps=0, warmup_steps=20)


def _read(adata) -> AnnData:
    if isinstance(adata, AnnData):
        return adata
    import anndata as ad

    p = Path(os.fspath(adata))
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such .h5ad file")
    return ad.read_h5ad(p)


def _where(adata) -> str:
    return os.fspath(adata) if isinstance(adata, (str, os.PathLike)) else "the AnnData"


def log_expression(adata: AnnData, *, layer: str | None = None, normalize="auto") -> sp.csr_matrix:
    """``adata``'s expression as float32 CSR, log-normalised (see the module notes).

    Examples
    --------
    >>> import anndata as ad
    >>> X = log_expression(ad.AnnData(np.array([[1.0, 3.0], [0.0, 2.0]])))
    >>> np.allclose(X.toarray(), np.log1p([[2500, 7500], [0, 10000]]))
    True
    """
    X = adata.layers[layer] if layer is not None else adata.X
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.nnz and not np.isfinite(X.data).all():
        raise ValueError("the expression matrix holds NaN or infinite values")
    if normalize == "auto":
        nonneg = not X.nnz or X.data.min() >= 0
        integer = X.nnz > 0 and bool(np.all(X.data == np.round(X.data)))
        normalize = nonneg and (integer or (X.nnz > 0 and float(X.data.max()) > _COUNTS_MAX))
        if normalize:
            logger.info("the expression looks like counts (%s): normalising to 10,000 per cell and log1p",
                        "integers" if integer else f"values up to {float(X.data.max()):.0f}")
    elif normalize not in (True, False):
        raise ValueError(f"normalize must be 'auto', True or False, got {normalize!r}")
    if normalize:
        import scanpy as sc

        tmp = AnnData(X)
        sc.pp.normalize_total(tmp, target_sum=1e4)
        sc.pp.log1p(tmp)
        X = sp.csr_matrix(tmp.X, dtype=np.float32)
    return X


def _gene_columns(adata: AnnData) -> dict[str, pd.Index]:
    """``var_names`` and every text ``var`` column, as candidate gene naming."""
    cols = {"var_names": pd.Index(adata.var_names.astype(str))}
    for c in adata.var.columns:
        if adata.var[c].dtype == object or isinstance(adata.var[c].dtype, pd.CategoricalDtype) \
                or pd.api.types.is_string_dtype(adata.var[c].dtype):
            cols[str(c)] = pd.Index(adata.var[c].astype(str))
    return cols


def _pick_gene_column(adata: AnnData, wanted: set[str], gene_key: str | None) -> tuple[str, pd.Index]:
    cols = _gene_columns(adata)
    if gene_key is not None:
        if gene_key not in cols:
            raise KeyError(f"var[{gene_key!r}] is not a text column of the data (columns: {sorted(cols)})")
        return gene_key, cols[gene_key]
    hits = {k: int(v.isin(list(wanted)).sum()) for k, v in cols.items()}
    best = max(hits, key=lambda k: (hits[k], k == "var_names"))
    logger.info("gene names from %s (%d genes match; per column %s)", best, hits[best], hits)
    return best, cols[best]


def _labels(adata: AnnData, key: str, where: str) -> pd.Series:
    if key not in adata.obs.columns:
        raise KeyError(f"obs[{key!r}] is not in {where} (obs columns: {sorted(map(str, adata.obs.columns))})")
    v = adata.obs[key].astype(object)
    known = v.notna() & ~v.astype(str).isin(["nan", ""])
    if known.sum() == 0:
        raise ValueError(f"obs[{key!r}] of {where} has no known value")
    if v[known].astype(str).nunique() < 2:
        raise ValueError(f"obs[{key!r}] of {where} has one class only; annotation needs at least 2")
    return v.where(known, None)


def tosica_train(adata, gmt, labels_key: str, out, *, gene_key: str | None = None, layer: str | None = None,
                 normalize="auto", min_genes_per_set: int = 5, max_genes_per_set: int | None = None,
                 unannotated: bool = True, embed_dim: int = 48, num_layers: int = 2, num_heads: int = 4,
                 dropout: float = 0.1, threshold: float = 0.5, overwrite: bool = False, progress: bool = False,
                 **train_kwargs) -> Path:
    """Train TOSICA (Chen 2023) on labelled cells; returns the model folder ``out/model``.

    Parameters
    ----------
    adata
        Reference cells (AnnData or ``.h5ad`` path): log-normalised expression or counts
        (see ``normalize``), labels in ``obs[labels_key]`` (cells without one are not used).
    gmt
        Gene sets (``.gmt`` or ``.gmt.gz``): one token per set that keeps at least
        ``min_genes_per_set`` (at most ``max_genes_per_set``) of the data's genes.
    labels_key
        ``obs`` column of cell types.
    out
        The run's folder (checkpoints, ``config.yaml``, ``summary.json``, ``model/``).
    gene_key
        ``var`` column holding gene symbols; default: ``var_names`` or whichever text column
        matches the most GMT genes.
    layer
        Use ``adata.layers[layer]`` instead of ``X``.
    normalize
        ``"auto"`` (normalise what looks like counts), ``True`` or ``False``.
    unannotated
        Add one token for the genes in no kept set (as TOSICA's unannotated tokens).
    embed_dim, num_layers, num_heads, dropout
        The network (``m`` = 48 in the paper).
    threshold
        The model's default confidence threshold for ``"Unknown"`` calls.
    overwrite, progress
        Replace an earlier run in ``out``; show a progress bar.
    **train_kwargs
        :class:`atacformer.train.TrainConfig` fields (``max_steps``, ``epochs``, ``lr``,
        ``batch_size``, ``seed``, ``time_budget``...); defaults :data:`TOSICA_TRAIN`.

    Examples
    --------
    >>> from atacformer import tools as tl
    >>> path = tl.tosica_train(ref, "reactome.gmt", "cell_type", "tosica_run")   # doctest: +SKIP
    >>> tl.tosica_predict(query, path)                                            # doctest: +SKIP
    """
    import torch

    from atacformer.io.gmt import gene_set_membership, read_gmt
    from atacformer.models.tosica import UNANNOTATED, TosicaConfig, TosicaModel
    from atacformer.train import TrainConfig, pretrain
    from atacformer.train.task import ArrayExamples, Task
    from atacformer.train.trainer import check_output_folder

    where = _where(adata)
    out = Path(os.fspath(out))
    if not overwrite:  # refused before any work; an overwrite removes the old run only once inputs passed
        check_output_folder(out, bool(train_kwargs.get("resume")), False)
    adata = _read(adata)
    labels = _labels(adata, labels_key, where)
    sets = read_gmt(gmt)
    column, genes = _pick_gene_column(adata, {g for v in sets.values() for g in v}, gene_key)
    keep_gene = ~genes.duplicated()
    if not keep_gene.all():
        logger.warning("%s: %d duplicated gene names in %s; the first of each is used", where,
                       int((~keep_gene).sum()), column)
    genes = genes[keep_gene]
    names, members = gene_set_membership(sets, genes, min_genes=min_genes_per_set, max_genes=max_genes_per_set,
                                         source=os.fspath(gmt))
    members = [m.tolist() for m in members]
    covered = np.zeros(len(genes), bool)
    for m in members:
        covered[m] = True
    if unannotated and not covered.all():
        names, members = names + [UNANNOTATED], members + [np.flatnonzero(~covered).tolist()]
    logger.info("TOSICA: %d cells, %d genes (%d in a kept set), %d tokens", int(labels.notna().sum()),
                len(genes), int(covered.sum()), len(names))

    cells = np.flatnonzero(labels.notna().to_numpy())
    y_str = labels.iloc[cells].astype(str)
    classes = sorted(y_str.unique())
    X = log_expression(adata, layer=layer, normalize=normalize)[:, np.flatnonzero(keep_gene)][cells]
    y = pd.Categorical(y_str, categories=classes).codes.astype(np.int64)
    config = TosicaConfig(gene_names=genes.tolist(), pathway_names=names, gene_sets=members, label_names=classes,
                          embed_dim=embed_dim, num_layers=num_layers, num_heads=num_heads, dropout=dropout,
                          threshold=threshold)

    def build(seed):
        if seed is not None:
            torch.manual_seed(seed)
        return TosicaModel(config)

    def batcher(rows, rng, labels):
        x = rows["x"]
        x = x.toarray() if sp.issparse(x) else x
        return {"x": torch.from_numpy(np.asarray(x, np.float32)), "labels": torch.from_numpy(rows["y"])}, len(x)

    task = Task(build=build, examples=ArrayExamples({"x": X, "y": y}), batcher=batcher)
    cfg = TrainConfig(**{**TOSICA_TRAIN, **dict(model="tosica", out=str(out), overwrite=overwrite,
                                                progress=progress), **train_kwargs})
    pretrain(cfg, task=task)
    return out / "model"


def _load(model):
    from atacformer.models import load_model
    from atacformer.models.tosica import TosicaModel

    if not hasattr(model, "config"):
        d = Path(os.fspath(model))
        if d.is_dir() and not (d / "config.json").exists() and (d / "model" / "config.json").exists():
            d = d / "model"  # a training run's folder
        model = load_model(d) if d.exists() else load_model(model)
    m = model
    if not isinstance(m, TosicaModel):
        raise ValueError(f"{model}: a {type(m).__name__} ({m.config.model_type!r}), not a TOSICA model")
    return m


def model_expression(adata: AnnData, gene_names, *, layer: str | None = None, normalize="auto",
                     min_fraction: float = 0.25, where: str = "the query") -> sp.csr_matrix:
    """``adata``'s log-normalised expression over the model's genes, in its order.

    Genes are matched by ``var_names`` or the ``var`` text column that matches the most; the
    model's genes the data lacks are zero (with a warning saying how many); fewer than
    ``min_fraction`` of them present is an error.
    """
    want = pd.Index([str(g) for g in gene_names])
    column, genes = _pick_gene_column(adata, set(want), None)
    first = ~genes.duplicated()
    pos = pd.Index(genes[first]).get_indexer(want)
    pos = np.where(pos >= 0, np.flatnonzero(first)[np.maximum(pos, 0)], -1)
    found = int((pos >= 0).sum())
    if found == 0 or found < min_fraction * len(want):
        raise ValueError(f"{where} has {found:,} of the model's {len(want):,} genes (e.g. {want[:3].tolist()}; "
                         f"its genes e.g. {genes[:3].tolist()}); at least {min_fraction:.0%} are needed: is it "
                         "the same species and gene naming?")
    if found < len(want):
        logger.warning("%s lacks %d of the model's %d genes; they are set to zero", where, len(want) - found,
                       len(want))
    X = log_expression(adata, layer=layer, normalize=normalize)
    hit = np.flatnonzero(pos >= 0)
    select = sp.csr_matrix((np.ones(len(hit), np.float32), (pos[hit], hit)), shape=(X.shape[1], len(want)))
    return sp.csr_matrix(X @ select)


def tosica_predict(adata: AnnData, model, *, threshold: float | None = None, layer: str | None = None,
                   normalize="auto", min_gene_fraction: float = 0.25, batch_size: int = 256,
                   key_added: str = "predicted_label", progress: bool = False, copy: bool = False):
    """Annotate cells with a TOSICA model and record the pathway attention behind each call.

    Writes ``obs[key_added]`` (the most probable type, or ``"Unknown"`` when its probability is
    below ``threshold``), ``obs["prediction_confidence"]`` (that probability),
    ``obsm["X_tosica_attention"]`` (cells x pathways ``<cls>`` attention of the last block,
    averaged over heads) and ``uns["tosica"]`` (``pathways``, ``labels``, ``threshold``).

    Parameters
    ----------
    adata
        Query cells (log-normalised expression or counts; see :func:`tosica_train`).
    model
        A TOSICA model folder (``out/model``) or a loaded :class:`~atacformer.models.tosica.TosicaModel`.
    threshold
        Confidence below which a cell is ``"Unknown"``; default the model's (0 keeps every call).
    layer, normalize
        As for :func:`tosica_train`.
    min_gene_fraction
        Refuse a query holding fewer of the model's genes (missing ones are zero-filled).
    batch_size, progress
        Cells per forward pass; progress bar.
    key_added
        ``obs`` column of the calls.
    copy
        Return an annotated copy instead of writing into ``adata``.

    Examples
    --------
    >>> from atacformer import tools as tl
    >>> tl.tosica_predict(query, "tosica_run/model", threshold=0.7)   # doctest: +SKIP
    >>> query.obs["predicted_label"].value_counts()                  # doctest: +SKIP
    """
    from atacformer.models.tosica import predict_cells

    m = _load(model)
    cfg = m.config
    thr = cfg.threshold if threshold is None else float(threshold)
    if not 0.0 <= thr <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {thr}")
    X = model_expression(adata, cfg.gene_names, layer=layer, normalize=normalize, min_fraction=min_gene_fraction)
    probs, att = predict_cells(m, X, batch_size=batch_size, progress=progress)
    best = probs.argmax(1)
    conf = probs[np.arange(len(best)), best]
    calls = np.asarray(cfg.label_names, dtype=object)[best]
    calls[conf < thr] = UNKNOWN
    adata = adata.copy() if copy else adata
    cats = list(cfg.label_names) + ([UNKNOWN] if UNKNOWN not in cfg.label_names else [])
    adata.obs[key_added] = pd.Categorical(calls, categories=cats)
    adata.obs["prediction_confidence"] = conf.astype(np.float32)
    adata.obsm[ATTENTION_KEY] = att
    adata.uns["tosica"] = {"pathways": list(cfg.pathway_names), "labels": list(cfg.label_names),
                           "threshold": thr}
    logger.info("TOSICA: %d cells, %d called %s at threshold %.2f", adata.n_obs, int((conf < thr).sum()),
                UNKNOWN, thr)
    return adata if copy else None


def tosica_pathway_attention(adata: AnnData, groupby: str = "predicted_label") -> pd.DataFrame:
    """Mean ``<cls>`` attention per pathway of the cells of each group (types x pathways).

    Examples
    --------
    >>> import anndata as ad
    >>> a = ad.AnnData(np.zeros((3, 1)), obs=pd.DataFrame({"g": ["x", "x", "y"]}, index=list("abc")))
    >>> a.obsm["X_tosica_attention"] = np.array([[0.2, 0.8], [0.4, 0.6], [1.0, 0.0]])
    >>> a.uns["tosica"] = {"pathways": ["P", "Q"]}
    >>> tosica_pathway_attention(a, "g").round(2).values.tolist()
    [[0.3, 0.7], [1.0, 0.0]]
    """
    if ATTENTION_KEY not in adata.obsm:
        raise KeyError(f"obsm[{ATTENTION_KEY!r}] is missing: run tl.tosica_predict first")
    if groupby not in adata.obs.columns:
        raise KeyError(f"obs[{groupby!r}] is missing (obs columns: {sorted(map(str, adata.obs.columns))})")
    names = list(adata.uns.get("tosica", {}).get("pathways", []))
    att = np.asarray(adata.obsm[ATTENTION_KEY])
    if len(names) != att.shape[1]:
        names = [f"pathway_{i}" for i in range(att.shape[1])]
    df = pd.DataFrame(att, columns=names, index=adata.obs_names)
    return df.groupby(adata.obs[groupby].astype(str).to_numpy()).mean()

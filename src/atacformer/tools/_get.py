"""GET data and training: pseudo-bulks, region windows per gene, feature tensors (Fu 2025).

A multiome set (ATAC and RNA of the same cells) becomes GET examples in four steps:

1. **pseudo-bulks**: cells are summed per group of ``obs[groupby]`` (a cluster or a condition;
   Fu 2025's "cell types"); accessibility is the pseudo-bulk's logCPM per region
   (``log1p(counts / total x 1e6)``), expression its counts per million over the RNA's genes;
2. **windows**: for each gene, the ``N`` regions (peaks) nearest its TSS within
   ``window_bp / 2`` on either side (:func:`nearest_regions`; distance 0 for a region holding
   the TSS, ties to the region earlier on the chromosome), ordered by position, with their
   signed distance to the TSS (negative = upstream, strand-aware);
3. **features**: a region's JASPAR motif scores (:func:`atacformer.vocab.dna.region_features`
   on an indexed FASTA, the ``motif_max`` columns standardised by
   :func:`~atacformer.vocab.dna.dna_table`), computed only for the regions some window uses,
   followed by the group's accessibility; without a FASTA only accessibility;
4. **examples**: one per (gene, group), its window's ``(N, F)`` feature matrix built per batch.

:func:`get_pretrain` (masked region reconstruction) and :func:`get_finetune` (Poisson
expression, LoRA) train through :func:`atacformer.train.pretrain` with a
:class:`~atacformer.train.task.Task`; :func:`get_predict` returns predicted counts per million.

Examples
--------
>>> import anndata as ad
>>> atac, rna = ad.read_h5ad("atac.h5ad"), ad.read_h5ad("rna.h5ad")         # doctest: +SKIP
>>> data = get_data(atac, rna, "hg19_genes.bed.gz", groupby="cluster")       # doctest: +SKIP
>>> train = ~data.genes["chrom"].isin(["chr8", "chr17"]).to_numpy()          # doctest: +SKIP
>>> get_pretrain(data, "get_pre", genes=train, max_steps=300)                # doctest: +SKIP
>>> get_finetune(data, "get_pre/model", "get_ft", genes=train, max_steps=600)  # doctest: +SKIP
>>> pred = get_predict("get_ft/model", data, genes=~train)                   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from atacformer.errors import InputFormatError

log = logging.getLogger(__name__)

__all__ = ["GETData", "get_data", "get_finetune", "get_predict", "get_pretrain", "nearest_regions",
           "pseudobulk"]


# -- windows ---------------------------------------------------------------------------------------
def nearest_regions(tss_chrom, tss, strand, regions: pd.DataFrame, n_regions: int = 200,
                    window_bp: int = 2_000_000) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_regions`` regions nearest each TSS within ``window_bp / 2`` of it, by position.

    Parameters
    ----------
    tss_chrom, tss, strand
        Per gene: chromosome, 0-based TSS base and ``+``/``-``.
    regions
        ``chrom``, ``start``, ``end`` (0-based half-open), any order.
    n_regions, window_bp
        Regions per gene and the window width (a region is in it when its distance to the
        TSS is at most ``window_bp // 2``).

    Returns
    -------
    index
        ``(genes, n_regions)`` int64 row numbers into ``regions`` in genomic order, ``-1``
        padding after the last region of a gene with fewer.
    distance
        ``(genes, n_regions)`` int64 signed distance TSS -> region (0 when the region holds
        the TSS; negative upstream on the gene's strand), 0 for padding.

    Examples
    --------
    >>> regs = pd.DataFrame({"chrom": ["chr1"] * 4, "start": [0, 500, 2000, 9000],
    ...                      "end": [100, 600, 2100, 9100]})
    >>> idx, dist = nearest_regions(["chr1"], [1000], ["+"], regs, n_regions=2, window_bp=4000)
    >>> idx.tolist(), dist.tolist()
    ([[0, 1]], [[-901, -401]])
    """
    if n_regions < 1 or window_bp < 1:
        raise ValueError(f"n_regions and window_bp must be positive, got {n_regions}, {window_bp}")
    tss_chrom = np.asarray(tss_chrom).astype(str)
    tss = np.asarray(tss, dtype=np.int64)
    sign = np.where(np.asarray(strand).astype(str) == "-", -1, 1)
    half = int(window_bp) // 2
    chrom = regions["chrom"].astype(str).to_numpy()
    starts = regions["start"].to_numpy(np.int64)
    ends = regions["end"].to_numpy(np.int64)
    index = np.full((len(tss), n_regions), -1, dtype=np.int64)
    distance = np.zeros((len(tss), n_regions), dtype=np.int64)
    by_chrom = pd.Series(np.arange(len(chrom))).groupby(chrom).indices
    gene_groups = pd.Series(np.arange(len(tss))).groupby(tss_chrom).indices
    for c, genes in gene_groups.items():
        rows = by_chrom.get(c)
        if rows is None:
            continue
        rows = rows[np.lexsort((ends[rows], starts[rows]))]  # genomic order
        s, e = starts[rows], ends[rows]
        max_len = int((e - s).max())
        lo = np.searchsorted(s, tss[genes] - half - max_len, side="left")
        hi = np.searchsorted(s, tss[genes] + half, side="right")
        for g, a, b in zip(genes, lo, hi):
            t = tss[g]
            off = np.where(s[a:b] > t, s[a:b] - t, np.where(e[a:b] - 1 < t, e[a:b] - 1 - t, 0))
            inside = np.flatnonzero(np.abs(off) <= half)
            if not len(inside):
                continue
            keep = np.sort(inside[np.argsort(np.abs(off[inside]), kind="stable")[:n_regions]])
            index[g, :len(keep)] = rows[a + keep]
            distance[g, :len(keep)] = off[keep] * sign[g]
    return index, distance


# -- pseudo-bulks ----------------------------------------------------------------------------------
def pseudobulk(X, groups) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Sum the rows (cells) of ``X`` per group.

    Returns
    -------
    sums
        ``(n_groups, n_columns)`` float64.
    names
        Group names, in sorted order (categories order for a categorical).
    n_cells
        Cells per group.

    Examples
    --------
    >>> s, names, n = pseudobulk(np.array([[1, 0], [2, 1], [0, 5]]), ["b", "a", "b"])
    >>> s.tolist(), names, n.tolist()
    ([[2.0, 1.0], [1.0, 5.0]], ['a', 'b'], [1, 2])
    """
    cat = pd.Categorical(groups)
    if cat.isna().any():
        raise ValueError(f"{int(cat.isna().sum())} cells have no group")
    used = np.unique(cat.codes)
    codes = np.searchsorted(used, cat.codes)
    M = sp.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(used), len(codes)))
    sums = np.asarray((M @ sp.csr_matrix(X, dtype=np.float64)).todense())
    return sums, [str(cat.categories[i]) for i in used], np.bincount(codes, minlength=len(used))


def _cpm(sums: np.ndarray) -> np.ndarray:
    tot = sums.sum(axis=1, keepdims=True)
    return sums / np.where(tot > 0, tot, 1.0) * 1e6


# -- the data --------------------------------------------------------------------------------------
@dataclass
class GETData:
    """GET examples of a multiome set: gene windows and per-group region features.

    Attributes
    ----------
    genes
        One row per kept gene: ``gene_name``, ``chrom``, ``tss``, ``strand``, ``n_regions``.
    regions
        The regions used by some window: ``chrom``, ``start``, ``end``.
    window_index, window_distance
        ``(genes, N)`` row numbers into ``regions`` (``-1`` padding) and signed TSS distances.
    motif
        ``(regions, M)`` float32 motif scores, or None (accessibility only).
    window_gene_body
        ``(genes, N)`` bool: the window region overlaps the gene's own body (annotation start
        to end), or None when not used as a feature.
    accessibility
        ``(groups, regions)`` float32 logCPM of each pseudo-bulk.
    expression
        ``(groups, genes)`` float64 counts per million, or None without RNA.
    groups, n_cells
        Pseudo-bulk names and sizes.
    feature_names
        Motif names then ``"accessibility"``.
    skipped
        Genes left out and why (counts).
    """

    genes: pd.DataFrame
    regions: pd.DataFrame
    window_index: np.ndarray
    window_distance: np.ndarray
    motif: np.ndarray | None
    accessibility: np.ndarray
    expression: np.ndarray | None
    groups: list[str]
    n_cells: np.ndarray
    feature_names: list[str]
    window_bp: int
    skipped: dict = field(default_factory=dict)
    window_gene_body: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def features(self, gene_idx: np.ndarray, group_idx: np.ndarray) -> dict[str, np.ndarray]:
        """The model inputs of examples ``(gene_idx[i], group_idx[i])``, trimmed to the longest
        window: ``features`` (B, L, F) float32, ``attention_mask`` (B, L) bool, ``distance``
        (B, L) int64."""
        idx = self.window_index[gene_idx]
        length = int((idx >= 0).sum(axis=1).max())
        idx = idx[:, :length]
        keep = idx >= 0
        safe = np.where(keep, idx, 0)
        acc = self.accessibility[np.asarray(group_idx)[:, None], safe][..., None]  # (B, L, 1)
        parts = [self.motif[safe]] if self.motif is not None else []
        if self.window_gene_body is not None:
            parts.append(self.window_gene_body[gene_idx, :length, None].astype(np.float32))
        parts.append(acc)
        x = np.concatenate(parts, axis=-1).astype(np.float32)
        x[~keep] = 0.0
        return {"features": x, "attention_mask": keep,
                "distance": np.where(keep, self.window_distance[gene_idx, :length], 0)}

    def feature_scaling(self, gene_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Column mean and standard deviation of the features of these genes' windows (all groups)."""
        used = np.unique(self.window_index[gene_idx])
        used = used[used >= 0]
        acc = self.accessibility[:, used].ravel()
        mean, std = [np.array([acc.mean()])], [np.array([acc.std()])]
        if self.window_gene_body is not None:
            body = self.window_gene_body[gene_idx][self.window_index[gene_idx] >= 0]
            mean.insert(0, np.array([body.mean()]))
            std.insert(0, np.array([body.std()]))
        if self.motif is not None:
            mean.insert(0, self.motif[used].mean(axis=0))
            std.insert(0, self.motif[used].std(axis=0))
        return np.concatenate(mean).astype(np.float32), np.concatenate(std).astype(np.float32)


def _check_pair(atac, rna, groupby: str) -> None:
    if groupby not in atac.obs:
        raise ValueError(f"groupby column {groupby!r} is not in the ATAC obs (columns: {list(atac.obs.columns)[:10]})")
    if rna is not None:
        if rna.n_obs != atac.n_obs or not (rna.obs_names.astype(str) == atac.obs_names.astype(str)).all():
            raise ValueError("the RNA and ATAC AnnData must hold the same cells in the same order "
                             f"({rna.n_obs:,} and {atac.n_obs:,} cells; first {list(rna.obs_names[:2])} vs "
                             f"{list(atac.obs_names[:2])})")


def _gene_table(genes, rna, gene_names, skipped: dict) -> pd.DataFrame:
    """Genes to model, with their TSS: the requested names (default: the RNA's genes)."""
    from atacformer.io import read_genes
    from atacformer.vocab.annotate import _gene_tss

    table = read_genes(genes) if isinstance(genes, (str, os.PathLike)) else genes
    table = table.drop_duplicates("gene_name", keep="first").set_index("gene_name", drop=False)
    src = genes if isinstance(genes, (str, os.PathLike)) else "the gene annotation"
    if gene_names is not None:
        names = pd.Index(gene_names).astype(str)
        if rna is not None:
            absent = names[~names.isin(rna.var_names)]
            if len(absent):
                raise ValueError(f"{len(absent)} requested genes are not in the RNA data, e.g. {list(absent[:5])}")
        absent = names[~names.isin(table.index)]
        if len(absent):
            raise InputFormatError(src, f"{len(absent)} requested genes have no TSS in it", value=absent[0])
    elif rna is not None:
        names = pd.Index(rna.var_names).astype(str)
        known = names.isin(table.index)
        skipped["not in the gene annotation"] = int((~known).sum())
        names = names[known]
    else:
        names = pd.Index(table.index)
    sel = table.loc[names]
    t = _gene_tss(sel)
    return pd.DataFrame({"gene_name": names.to_numpy(), "chrom": t["chrom"].astype(str).to_numpy(),
                         "tss": t["start"].to_numpy(np.int64), "strand": t["strand"].to_numpy(),
                         "gene_start": sel["start"].to_numpy(np.int64), "gene_end": sel["end"].to_numpy(np.int64)})


def _motif_table(regions: pd.DataFrame, fasta, motifs, progress) -> tuple[np.ndarray, list[str]]:
    from atacformer.vocab.dna import dna_table, region_features

    feats = region_features(regions, fasta, kmers=(), motifs=motifs, progress=progress)
    raw = feats[:, (feats.var["kind"] == "motif_max").to_numpy()]
    empty = np.isnan(np.asarray(raw.X)).all(axis=1)
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        r = regions.iloc[i]
        raise InputFormatError(fasta, f"{int(empty.sum())} regions in gene windows have no motif features (no "
                               f"full ACGT window in the FASTA), e.g. {r['chrom']}:{r['start']}-{r['end']}; "
                               "drop them from the peaks or use accessibility only (fasta=None)")
    return dna_table(raw, kinds=("motif_max",)).astype(np.float32), raw.var["name"].astype(str).tolist()


def get_data(atac, rna, genes, *, groupby: str, fasta=None, motifs="JASPAR2024", gene_names=None,
             n_regions: int = 200, window_bp: int = 2_000_000, min_cells: int = 1, gene_body: bool = False,
             progress: bool | None = None) -> GETData:
    """Assemble GET examples from paired ATAC and RNA (see the module notes).

    Parameters
    ----------
    atac
        Cells x peaks AnnData (peak coordinates in ``var`` or its names; counts or binary).
    rna
        Cells x genes AnnData of counts for the same cells in the same order, or None
        (pretraining data only).
    genes
        A GTF / genes BED (:func:`atacformer.io.read_genes`) or its DataFrame.
    groupby
        ``atac.obs`` column whose groups are the pseudo-bulks (clusters, conditions).
    fasta
        Indexed genome FASTA for the motif features; None for accessibility only.
    motifs
        JASPAR release or :class:`~atacformer.vocab.dna.MotifSet` (with ``fasta``).
    gene_names
        Genes to model (each must be in the RNA and the annotation); default: the RNA's
        genes that the annotation has (others skipped, counted in ``skipped``).
    n_regions, window_bp
        Regions per window and window width (Fu 2025: 200, 2 Mb).
    min_cells
        Groups with fewer cells are dropped.
    gene_body
        Add a ``"gene_body"`` feature (before accessibility): 1 for the window regions that
        overlap the gene's own body (annotation start to end), else 0. Not in Fu 2025; it
        tells the model how far the gene extends, which nuclear RNA counts depend on.
    progress
        Progress bar of the motif scan.

    Returns
    -------
    GETData

    Raises
    ------
    ValueError
        A missing ``groupby`` column, RNA of other cells, requested genes absent from the RNA,
        or no gene with a region in its window (genes without one are skipped and counted).
    InputFormatError
        Requested genes without a TSS, or window regions without motif features.

    Examples
    --------
    >>> data = get_data(atac, rna, "hg19_genes.bed.gz", groupby="dex_hours")  # doctest: +SKIP
    >>> data.accessibility.shape  # doctest: +SKIP
    (3, 41210)
    """
    from atacformer.io.matrix import peak_matrix_from_anndata

    _check_pair(atac, rna, groupby)
    skipped: dict = {}
    gt = _gene_table(genes, rna, gene_names, skipped)
    pm = peak_matrix_from_anndata(atac)
    idx, dist = nearest_regions(gt["chrom"], gt["tss"], gt["strand"], pm.peaks, n_regions, window_bp)
    has = (idx >= 0).any(axis=1)
    skipped["no region in the window"] = int((~has).sum())
    if not has.any():
        raise ValueError(f"none of the {len(gt):,} genes has a region within {window_bp // 2:,} bp of its TSS; "
                         "are the genes and peaks of the same genome?")
    if skipped["no region in the window"]:
        log.warning("%d of %d genes have no region within %d bp of the TSS and are skipped",
                    skipped["no region in the window"], len(gt), window_bp // 2)
    gt, idx, dist = gt[has].reset_index(drop=True), idx[has], dist[has]
    body = None
    if gene_body:
        safe = np.where(idx >= 0, idx, 0)
        body = ((idx >= 0) & (pm.peaks["end"].to_numpy(np.int64)[safe] > gt["gene_start"].to_numpy()[:, None])
                & (pm.peaks["start"].to_numpy(np.int64)[safe] < gt["gene_end"].to_numpy()[:, None]))
    used, inv = np.unique(idx[idx >= 0], return_inverse=True)
    win = np.full_like(idx, -1)
    win[idx >= 0] = inv
    regions = pm.peaks.iloc[used][["chrom", "start", "end"]].reset_index(drop=True)
    sums, names, n_cells = pseudobulk(pm.X, atac.obs[groupby].to_numpy())
    keep = n_cells >= min_cells
    if not keep.any():
        raise ValueError(f"no group of {groupby!r} has {min_cells} cells")
    acc = np.log1p(_cpm(sums[keep])[:, used]).astype(np.float32)
    expr = None
    if rna is not None:
        rs, _, _ = pseudobulk(rna.X, atac.obs[groupby].to_numpy())
        cols = pd.Index(rna.var_names).astype(str).get_indexer(gt["gene_name"])
        expr = _cpm(rs[keep])[:, cols]
    motif, motif_names = (None, []) if fasta is None else _motif_table(regions, fasta, motifs, progress)
    gt["n_regions"] = (win >= 0).sum(axis=1)
    log.info("GET data: %d genes, %d regions (%.1f per window), %d groups, %d features", len(gt), len(regions),
             gt["n_regions"].mean(), int(keep.sum()), len(motif_names) + 1 + bool(gene_body))
    return GETData(genes=gt, regions=regions, window_index=win, window_distance=dist, motif=motif,
                   accessibility=acc, expression=expr, groups=[n for n, k in zip(names, keep) if k],
                   n_cells=n_cells[keep], feature_names=[*motif_names, *(["gene_body"] if gene_body else []),
                                                         "accessibility"],
                   window_bp=int(window_bp), skipped=skipped, window_gene_body=body)


# -- training and prediction -----------------------------------------------------------------------
def _gene_rows(data: GETData, genes) -> np.ndarray:
    """Gene row numbers from a boolean mask, row numbers, or gene names (default: all)."""
    n = len(data.genes)
    if genes is None:
        return np.arange(n)
    g = np.asarray(genes)
    if g.dtype == bool:
        if g.shape != (n,):
            raise ValueError(f"a gene mask must have {n} entries, got {g.shape}")
        rows = np.flatnonzero(g)
    elif g.dtype.kind in "iu":
        rows = g.astype(np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise ValueError(f"gene rows must lie in 0..{n - 1}")
    else:
        pos = pd.Index(data.genes["gene_name"]).get_indexer(g.astype(str))
        if (pos < 0).any():
            raise ValueError(f"{int((pos < 0).sum())} genes are not in the GET data (no TSS, no region in "
                             f"the window, or not requested), e.g. {list(g[pos < 0][:5])}")
        rows = pos
    if not len(rows):
        raise ValueError("no gene selected")
    return rows


def _examples(data: GETData, rows: np.ndarray, target: bool):
    from atacformer.train.task import ArrayExamples

    n_groups = len(data.groups)
    gene = np.repeat(rows, n_groups)
    group = np.tile(np.arange(n_groups), len(rows))
    arrays = {"gene": gene, "group": group}
    if target:
        arrays["target"] = data.expression[group, gene].astype(np.float32)
    return ArrayExamples(arrays, lengths=data.genes["n_regions"].to_numpy()[gene])


def _as_tensors(t: dict) -> dict:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in t.items()}


def _train_config(out, train: dict):
    from atacformer.train import TrainConfig

    bad = sorted(set(train) & {"model", "out", "data"})
    if bad:
        raise ValueError(f"{bad} are set by the GET functions, not passed through")
    return TrainConfig(model="get", out=os.fspath(out), **train)


def get_pretrain(data: GETData, out, *, genes=None, hidden_size: int = 64, num_layers: int = 2,
                 num_heads: int = 4, intermediate_size: int = 128, dropout: float = 0.1,
                 mask_ratio: float = 0.5, distance_buckets: int = 40, **train) -> dict:
    """Pretrain GET by masked region reconstruction through :func:`atacformer.train.pretrain`.

    Every (gene, group) window of ``genes`` is an example; per window ``mask_ratio`` of its
    regions (rounded, at least one) are replaced by the learned mask vector and their
    standardised features reconstructed (MSE). The model folder is ``out/model``.

    Parameters
    ----------
    data
        From :func:`get_data` (RNA not needed).
    out
        Training folder (checkpoints, ``summary.json``, ``model/``).
    genes
        Genes whose windows train (mask, rows or names); default all.
    hidden_size, num_layers, num_heads, intermediate_size, dropout, mask_ratio, distance_buckets
        :class:`~atacformer.models.get.GETConfig` fields.
    **train
        :class:`~atacformer.train.TrainConfig` fields (``max_steps``, ``batch_size``, ``lr``...).

    Returns
    -------
    dict
        The training summary.

    Examples
    --------
    >>> get_pretrain(data, "get_pre", max_steps=200, batch_size=32, lr=1e-3)  # doctest: +SKIP
    """
    import torch

    from atacformer.models.get import GETConfig, GETForMaskedRegions
    from atacformer.train import pretrain

    rows = _gene_rows(data, genes)
    cfg = GETConfig(n_features=data.n_features, feature_names=list(data.feature_names), hidden_size=hidden_size,
                    num_layers=num_layers, num_heads=num_heads, intermediate_size=intermediate_size,
                    dropout=dropout, max_regions=data.window_index.shape[1], window_bp=data.window_bp,
                    mask_ratio=mask_ratio, distance_buckets=distance_buckets)
    mean, std = data.feature_scaling(rows)
    tc = _train_config(out, train)

    def build(seed):
        if seed is not None:
            torch.manual_seed(seed)
        model = GETForMaskedRegions(cfg)
        model.get.set_feature_scaling(mean, std)
        return model

    def batcher(r, rng, labels):
        t = data.features(r["gene"], r["group"])
        keep = t["attention_mask"]
        n_mask = np.maximum(1, np.rint(mask_ratio * keep.sum(axis=1))).astype(np.int64)
        draw = np.where(keep, rng.random(keep.shape), 2.0)  # padding sorts last
        rank = np.argsort(np.argsort(draw, axis=1), axis=1)
        t["masked"] = (rank < n_mask[:, None]) & keep
        return _as_tensors(t), int(t["masked"].sum())

    from atacformer.train.task import Task

    return pretrain(tc, task=Task(build=build, examples=_examples(data, rows, target=False), batcher=batcher))


def _check_features(model_names, data: GETData, source) -> None:
    if list(model_names) != list(data.feature_names):
        raise ValueError(f"{source}: the model reads {len(model_names)} features ({list(model_names)[:3]}...) but "
                         f"the data has {data.n_features} ({data.feature_names[:3]}...); build the data with the "
                         "same FASTA and motifs (or none)")


def get_finetune(data: GETData, pretrained, out, *, genes=None, lora_rank: int = 8, lora_alpha: float | None = None,
                 lora_dropout: float = 0.0, head_hidden_size: int = 64, objective: str = "poisson",
                 **train) -> dict:
    """Fine-tune a pretrained GET to predict expression through :func:`atacformer.train.pretrain`.

    Attention pooling and an MLP over the pretrained encoder predict each (gene, group)'s log
    counts per million under a Poisson likelihood; the encoder adapts through LoRA (its own
    weights frozen; ``lora_rank=0`` trains every weight). The model folder is ``out/model``.

    Parameters
    ----------
    data
        From :func:`get_data` with RNA, built like the pretraining data.
    pretrained
        A GET folder from :func:`get_pretrain`.
    out
        Training folder.
    genes
        Training genes (mask, rows or names); held-out genes are left out here.
    lora_rank, lora_alpha, lora_dropout
        LoRA adapters on the encoder's attention and feed-forward layers (alpha default 2 x rank).
    head_hidden_size
        Hidden width of the expression MLP.
    objective
        ``"poisson"`` (Poisson likelihood of counts per million; Fu 2025) or ``"log1p_mse"``
        (squared error of log1p counts per million; see :class:`~atacformer.models.get.GETConfig`).
    **train
        :class:`~atacformer.train.TrainConfig` fields.

    Examples
    --------
    >>> get_finetune(data, "get_pre/model", "get_ft", genes=train, max_steps=400)  # doctest: +SKIP
    """
    import torch

    from atacformer.models._pretrained import read_config_json, resolve_model_dir
    from atacformer.models.get import GETForExpression
    from atacformer.train import pretrain
    from atacformer.train.task import Task

    if data.expression is None:
        raise ValueError("fine-tuning needs expression: build the GET data with the RNA")
    d = resolve_model_dir(pretrained)
    _check_features(read_config_json(d).get("feature_names", []), data, d)
    rows = _gene_rows(data, genes)
    examples = _examples(data, rows, target=True)
    y = examples.arrays["target"].astype(np.float64)
    start = float(np.log1p(y).mean()) if objective == "log1p_mse" else float(np.log(max(y.mean(), 1e-3)))
    tc = _train_config(out, train)

    def build(seed):
        if seed is not None:
            torch.manual_seed(seed)
        model = GETForExpression.from_pretrained_backbone(d, head_hidden_size=head_hidden_size, objective=objective)
        with torch.no_grad():  # start at the mean (log rate, or log1p): the loss's scale is the targets'
            model.head[-1].bias.fill_(start)
        if lora_rank:
            model.add_lora(lora_rank, lora_alpha, lora_dropout)
        return model

    def batcher(r, rng, labels):
        t = data.features(r["gene"], r["group"])
        t["target"] = r["target"]
        return _as_tensors(t), len(r["target"])

    return pretrain(tc, task=Task(build=build, examples=examples, batcher=batcher))


def get_predict(model, data: GETData, *, genes=None, batch_size: int = 256) -> pd.DataFrame:
    """Predicted counts per million of each group (rows) and gene (columns).

    Parameters
    ----------
    model
        A fine-tuned GET folder or :class:`~atacformer.models.get.GETForExpression`.
    data
        From :func:`get_data`, built with the model's features.
    genes
        Genes to predict (mask, rows or names); default all.
    batch_size
        Windows per forward pass.

    Examples
    --------
    >>> pred = get_predict("get_ft/model", data, genes=["FKBP5", "PER1"])  # doctest: +SKIP
    >>> pred.loc["3", "FKBP5"]  # doctest: +SKIP
    """
    import torch

    from atacformer.models.get import GETForExpression

    if not isinstance(model, GETForExpression):
        model = GETForExpression.from_pretrained(model)
    _check_features(model.config.feature_names, data, "the model")
    rows = _gene_rows(data, genes)
    ex = _examples(data, rows, target=False)
    out = np.empty(len(ex), dtype=np.float64)
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for a in range(0, len(ex), batch_size):
            r = ex.get_rows(np.arange(a, min(a + batch_size, len(ex))))
            t = {k: v.to(device) for k, v in _as_tensors(data.features(r["gene"], r["group"])).items()}
            out[a:a + len(r["gene"])] = model(**t).expression.double().cpu().numpy()
    pred = out.reshape(len(rows), len(data.groups)).T
    return pd.DataFrame(pred, index=pd.Index(data.groups, name="group"),
                        columns=pd.Index(data.genes["gene_name"].to_numpy()[rows], name="gene"))

"""Gene activity: a cells x genes matrix from fragments or a peak matrix.

Each gene collects the fragments (or peak counts) in windows around its TSS, nearer ones
weighted more, in the spirit of the distance-weighted gene scores of Granja 2021 (ArchR)
and the TSS-window counts of Pliner 2018 (Cicero)::

    activity[cell, gene] = sum over the gene's windows w of weight(w) * count(cell, w)

Window geometry (``windows=((0, 10_000, 1/2), (10_000, 20_000, 1/3), (20_000, 50_000, 1/6))``,
``gene_body=True``; all intervals 0-based half-open). For a ``+`` gene ``[start, end)`` the
TSS is base ``start``; let ``B = start`` and ``ext = max(0, (end - start) - 10_000)``::

    window                 interval                                   weight
    upstream   0-10 kb     [B - 10_000, B)                            1/2
    upstream   10-20 kb    [B - 20_000, B - 10_000)                   1/3
    upstream   20-50 kb    [B - 50_000, B - 20_000)                   1/6
    downstream 0-10 kb     [B, max(B + 10_000, end))                  1/2  (the gene body included)
    downstream 10-20 kb    [B + 10_000 + ext, B + 20_000 + ext)       1/3
    downstream 20-50 kb    [B + 20_000 + ext, B + 50_000 + ext)       1/6

so the first downstream window runs from the TSS to 10 kb past it or to the gene's end,
whichever is further, and the next two windows (10 kb, then 30 kb) follow its far end. A
``-`` gene is the mirror image: its TSS is base ``end - 1``, ``B = end``, upstream windows
lie at and above ``end`` (``[B, B + 10_000)``...) and downstream ones below it (the first is
``[min(B - 10_000, start), B)``). Windows are clipped to ``[0, chromosome length]`` (the
length is known when a genome is given) and empty ones dropped.

A fragment ``[s, e)`` counts once in every window it overlaps (``max(s, ws) < min(e, we)``),
so a fragment straddling the TSS counts in both first windows; ``mode="insertion"`` counts
its two Tn5 insertion sites ``s`` and ``e - 1`` instead, each in the window holding it. A
peak counts, with its value, in every window it overlaps.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import scipy.sparse as sp

from atacformer.errors import GenomeMismatchError, InputFormatError
from atacformer.genome import get_genome, normalize_chroms
from atacformer.io.genes import chrom_lengths

log = logging.getLogger(__name__)

#: ``(near, far, weight)`` of each window, in bp from the TSS, on both sides.
WINDOWS = ((0, 10_000, 1 / 2), (10_000, 20_000, 1 / 3), (20_000, 50_000, 1 / 6))


def _check_windows(windows) -> list[tuple[int, int, float]]:
    out = []
    for k, w in enumerate(windows):
        near, far, weight = int(w[0]), int(w[1]), float(w[2])
        if not (0 <= near < far) or (out and near < out[-1][1]) or not np.isfinite(weight):
            raise ValueError(f"windows must be (near, far, weight) with 0 <= near < far, in order and not "
                             f"overlapping, and a finite weight; window {k} is {tuple(w)!r}")
        out.append((near, far, weight))
    if not out:
        raise ValueError("windows is empty")
    return out


def gene_windows(genes: pd.DataFrame, *, chrom_sizes: dict | None = None, windows=WINDOWS,
                 gene_body: bool = True) -> pd.DataFrame:
    """The weighted windows of each gene (geometry in the module docstring).

    Parameters
    ----------
    genes
        ``chrom``, ``start``, ``end`` (0-based half-open), ``strand`` (``+``/``-``), one row
        per gene, as :func:`atacformer.io.read_genes` returns.
    chrom_sizes
        ``chromosome -> length``; windows are clipped to it (to ``[0, inf)`` without it).
    windows
        ``(near, far, weight)`` per window, bp from the TSS, applied on both sides.
    gene_body
        Stretch the first downstream window to the gene's end when the gene is longer.

    Returns
    -------
    pandas.DataFrame
        One row per non-empty window: ``gene`` (row position in ``genes``), ``chrom``,
        ``start``, ``end``, ``weight``, ``side`` (``"upstream"``/``"downstream"``), ``rank``
        (0 = nearest).

    Examples
    --------
    >>> g = pd.DataFrame({"chrom": ["chr1"], "start": [100_000], "end": [125_000], "strand": ["+"]})
    >>> gene_windows(g)[["start", "end", "weight"]].values.tolist()[3:5]
    [[100000, 125000, 0.5], [125000, 135000, 0.3333333333333333]]
    """
    win = _check_windows(windows)
    if gene_body and win[0][0] != 0:
        raise ValueError("gene_body=True needs the first window to start at the TSS (near = 0)")
    start = genes["start"].to_numpy(np.int64)
    end = genes["end"].to_numpy(np.int64)
    plus = genes["strand"].to_numpy() == "+"
    chroms = np.asarray(genes["chrom"], dtype=object)
    B = np.where(plus, start, end)  # the TSS boundary: downstream begins at B, upstream ends there
    ext = np.maximum(end - start - win[0][1], 0) if gene_body else np.zeros(len(start), np.int64)
    n, k = len(B), len(win)
    near = np.array([w[0] for w in win], np.int64)
    far = np.array([w[1] for w in win], np.int64)
    # distances from B, away from the gene upstream and into it downstream; (genes, windows)
    up_lo, up_hi = np.broadcast_to(near, (n, k)), np.broadcast_to(far, (n, k))
    down_lo = near + np.where(np.arange(k) > 0, 1, 0) * ext[:, None]  # the first keeps its near end
    down_hi = far + ext[:, None]
    p = plus[:, None]
    b = B[:, None]
    s = np.concatenate([np.where(p, b - up_hi, b + up_lo), np.where(p, b + down_lo, b - down_hi)], axis=1)
    e = np.concatenate([np.where(p, b - up_lo, b + up_hi), np.where(p, b + down_hi, b - down_lo)], axis=1)
    s = np.maximum(s, 0).ravel()  # gene-major: a gene's upstream windows, then its downstream ones
    e = e.ravel()
    gene = np.repeat(np.arange(n), 2 * k)
    chrom = chroms[gene]
    if chrom_sizes is not None:
        e = np.minimum(e, chrom_lengths(chrom, chrom_sizes))
    keep = e > s
    weights = np.array([w[2] for w in win] * 2)
    return pd.DataFrame({"gene": gene[keep], "chrom": chrom[keep], "start": s[keep], "end": e[keep],
                         "weight": np.tile(weights, n)[keep],
                         "side": pd.Categorical.from_codes(np.tile(np.repeat([0, 1], k), n)[keep],
                                                           ["upstream", "downstream"]),
                         "rank": np.tile(np.arange(2 * k) % k, n)[keep]})


def _genes_table(genes, genome) -> pd.DataFrame:
    """A path (GTF / genes BED) read, or a DataFrame checked, against ``genome``."""
    from atacformer.io.genes import GENE_COLUMNS, read_genes

    if isinstance(genes, (str, os.PathLike)):
        return read_genes(genes, genome=genome)
    if not isinstance(genes, pd.DataFrame):
        raise TypeError(f"genes must be a GTF / BED path or a DataFrame, got {type(genes).__name__}")
    missing = [c for c in ("chrom", "start", "end", "strand") if c not in genes.columns]
    if missing:
        raise ValueError(f"genes lacks the column(s) {missing}; expected {GENE_COLUMNS}")
    df = genes.reset_index(drop=True).copy()
    if "gene_name" not in df.columns:
        df["gene_name"] = df.get("gene_id", pd.Series(np.arange(len(df)).astype(str)))
    if "gene_id" not in df.columns:
        df["gene_id"] = df["gene_name"]
    df["chrom"] = normalize_chroms(df["chrom"].astype(str).to_numpy()).astype(object)
    s, e = df["start"].to_numpy(np.int64), df["end"].to_numpy(np.int64)
    for bad, what in ((s < 0, "negative start"), (s > e, "start > end"),
                      (~df["strand"].isin(["+", "-"]).to_numpy(), "strand is not '+' or '-'")):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            r = df.iloc[i]
            raise InputFormatError(None, f"genes row {i} ({r['gene_name']!r}): {what}",
                                   value=f"{r['chrom']}:{r['start']}-{r['end']} {r['strand']}")
    if genome is not None:
        from atacformer.genome import is_contig

        sizes = genome.chrom_sizes
        keep = np.array([c in sizes or not is_contig(c) for c in df["chrom"]], dtype=bool)
        df = df[keep].reset_index(drop=True)
        genome.check_intervals(df["chrom"].to_numpy(), df["end"].to_numpy(), source="genes")
    return df[GENE_COLUMNS]


def _window_vocab(win: pd.DataFrame, n_genes: int, genome):
    """The distinct windows as a :class:`~atacformer.vocab.Vocabulary` and the sparse
    (windows x genes) weight matrix (two genes may share a window)."""
    from atacformer.vocab import Vocabulary

    chrom_codes, chrom_names = pd.factorize(win["chrom"].to_numpy())
    s, e = win["start"].to_numpy(np.int64), win["end"].to_numpy(np.int64)
    order = np.lexsort((e, s, chrom_codes))  # windows sorted by chromosome, start, end
    cs, ss, es = chrom_codes[order], s[order], e[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (cs[1:] != cs[:-1]) | (ss[1:] != ss[:-1]) | (es[1:] != es[:-1])
    codes = np.empty(len(order), np.int64)
    codes[order] = np.cumsum(new) - 1
    vocab = Vocabulary(np.asarray(chrom_names, dtype=object)[cs[new]], ss[new], es[new], special_tokens=(),
                       genome=genome.name if genome is not None else None)
    W = sp.csr_matrix((win["weight"].to_numpy(np.float64), (codes, win["gene"].to_numpy())),
                      shape=(vocab.n_regions, n_genes))
    W.sum_duplicates()
    return vocab, W


def _from_fragments(path, vocab, genome, n_genes, gene_chroms, **kw):
    from atacformer.tokenizers import tokenize_fragments

    try:
        cells = tokenize_fragments(path, vocab, genome=genome, **kw)
    except InputFormatError as err:
        if "overlaps any of the" not in str(err):
            raise
        seen = ", ".join(gene_chroms[:5]) + (", ..." if len(gene_chroms) > 5 else "")
        raise InputFormatError(path, f"no fragment lies in the windows of any of the {n_genes:,} genes (genes on "
                               f"{seen}); check that the genes are of this file's genome") from err
    return cells.X, cells.obs.copy()


def _from_peaks(data, vocab, genome):
    from atacformer.io.matrix import peak_matrix_from_anndata, read_peak_matrix
    from atacformer.tokenizers.regions import _check_with_contigs, region_to_token_matrix

    pm = read_peak_matrix(data) if isinstance(data, (str, os.PathLike)) else peak_matrix_from_anndata(data)
    src = pm.path
    chroms = pm.peaks["chrom"].to_numpy()
    if genome is not None:
        _check_with_contigs(genome, chroms, pm.peaks["end"].to_numpy(), src)
    gene_chroms = vocab.chrom_names
    if not set(gene_chroms) & set(chroms):
        raise GenomeMismatchError(
            src, f"the genes lie on {', '.join(gene_chroms[:5])}... and the peaks on "
            f"{', '.join(pd.unique(chroms)[:5])}...: no chromosome in common; are they of the same genome?")
    P = region_to_token_matrix(vocab, chroms, pm.peaks["start"].to_numpy(), pm.peaks["end"].to_numpy())
    if P.nnz == 0:
        raise InputFormatError(src, f"no peak lies in the windows of any gene ({vocab.n_regions:,} windows); "
                               "check that the genes are of the peaks' genome")
    return sp.csr_matrix(pm.X), P, pm.obs.copy()


def gene_activity(data, genes, *, genome=None, mode: str = "fragment", barcodes=None, min_fragments: int = 0,
                  threads: int = 1, progress: bool | None = None, windows=WINDOWS, gene_body: bool = True):
    """Cells x genes activity: weighted counts in windows around each gene's TSS.

    Windows, weights and the counting rule are described in
    :mod:`atacformer.preprocessing._gene_activity` (by default 0-10, 10-20 and 20-50 kb on
    each side of the TSS, the gene body in the first downstream window, weighted 1/2, 1/3
    and 1/6). A fragments file is streamed once through the tokenizer
    (:func:`~atacformer.tokenizers.tokenize_fragments`, the windows being its vocabulary):
    its memory is the cells x windows output plus a fixed working set, whatever the number
    of fragments.

    Parameters
    ----------
    data
        A fragments file (``.tsv.gz``...), or a peak matrix: an AnnData or an ``.h5ad`` /
        10x ``.h5`` / Matrix Market path with peaks in ``var`` chrom/start/end or named
        ``chr:start-end``.
    genes
        A GTF or genes BED path (see :func:`atacformer.io.read_genes`), or a DataFrame with
        ``chrom``, ``start``, ``end``, ``strand`` (and ``gene_name``, ``gene_id``).
    genome
        Genome name, ``.chrom.sizes`` path or :class:`~atacformer.genome.Genome`: genes and
        data are checked against it and windows clipped to its chromosome ends.
    mode
        ``"fragment"`` or ``"insertion"`` (Tn5 insertion sites; fragments input only).
    barcodes, min_fragments, threads, progress
        As for :func:`~atacformer.tokenizers.tokenize_fragments` (fragments input only).
    windows
        ``(near, far, weight)`` per window in bp from the TSS, on both sides.
    gene_body
        Stretch the first downstream window over the gene body.

    Returns
    -------
    anndata.AnnData
        ``X``: float32 CSR (cells x genes); ``var_names``: gene names made unique;
        ``var``: ``gene_id``, ``chrom``, ``start``, ``end``, ``strand``, ``tss`` (0-based
        TSS base); ``obs["n_fragments"]`` for fragments input; ``uns["gene_activity"]``: the
        windows, weights and counting mode.

    Raises
    ------
    GenomeMismatchError
        Genes or data off ``genome``, or genes and peaks without a chromosome in common.
    InputFormatError
        No fragment or peak lies in any gene's windows, or an unreadable input.

    Examples
    --------
    >>> import atacformer as af
    >>> ga = af.pp.gene_activity("fragments.tsv.gz", "gencode.v44.annotation.gtf.gz",
    ...                          genome="hg38", min_fragments=1000)  # doctest: +SKIP
    >>> ga.to_df()["CD3E"].head()  # doctest: +SKIP
    """
    import anndata as ad

    from atacformer.tokenizers import input_kind
    from atacformer.tokenizers.fragments import MODES

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    g = get_genome(genome) if genome is not None else None
    kind = "matrix" if hasattr(data, "var") else input_kind(data)
    if kind not in ("fragments", "matrix"):
        raise InputFormatError(data, f"gene activity needs a fragments file or a peak matrix, not a {kind}")
    if kind == "matrix" and (mode != "fragment" or barcodes is not None or min_fragments):
        raise ValueError("mode='insertion', barcodes and min_fragments apply to fragments input only")
    gt = _genes_table(genes, g)
    if not len(gt):
        raise InputFormatError(genes if isinstance(genes, (str, os.PathLike)) else None, "no genes")
    win = gene_windows(gt, chrom_sizes=g.chrom_sizes if g is not None else None, windows=windows,
                       gene_body=gene_body)
    vocab, W = _window_vocab(win, len(gt), g)
    log.info("%d genes -> %d distinct windows", len(gt), vocab.n_regions)
    if kind == "fragments":
        Xw, obs = _from_fragments(data, vocab, g, len(gt), vocab.chrom_names, barcodes=barcodes,
                                  min_fragments=min_fragments, mode=mode, threads=threads, progress=progress)
        X = Xw.astype(np.float64) @ W
    else:
        Xp, P, obs = _from_peaks(data, vocab, g)
        X = Xp.astype(np.float64) @ (P.astype(np.float64) @ W)
    X = sp.csr_matrix(X, dtype=np.float32)
    X.eliminate_zeros()
    X.sort_indices()
    _warn_empty_chroms(X, gt, kind)
    var = gt[["gene_id", "chrom", "start", "end", "strand"]].copy()
    var["tss"] = np.where(gt["strand"].to_numpy() == "+", gt["start"].to_numpy(), gt["end"].to_numpy() - 1)
    var.index = _unique_names(gt["gene_name"].astype(str).to_numpy())
    obs.index = obs.index.astype(str)
    out = ad.AnnData(X=X, obs=obs, var=var)
    out.uns["gene_activity"] = {
        "windows_bp": np.array([w[:2] for w in _check_windows(windows)], dtype=np.int64),
        "weights": np.array([w[2] for w in _check_windows(windows)], dtype=np.float64),
        "gene_body": bool(gene_body), "mode": mode if kind == "fragments" else "peak",
        "input": kind, "genome": g.name if g is not None else "",
        "tss": "gene start on '+', end - 1 on '-' (0-based)",
    }
    return out


def _unique_names(names) -> pd.Index:
    """Repeated names get ``-1``, ``-2``... in order (as ``AnnData.var_names_make_unique``)."""
    idx = pd.Index(names, dtype=object)
    if idx.is_unique:
        return idx
    rank = pd.Series(idx).groupby(idx).cumcount().to_numpy()
    out = pd.Index(np.where(rank > 0, idx.to_numpy() + "-" + rank.astype(str), idx.to_numpy()), dtype=object)
    if not out.is_unique:  # a suffixed name met an existing one ("A-1" in the file): anndata's slow path
        import anndata as ad

        out = ad.utils.make_index_unique(idx)
    return out


def _warn_empty_chroms(X: sp.csr_matrix, genes: pd.DataFrame, kind: str) -> None:
    """Say which chromosomes' genes got nothing: usually chromosomes the data lacks."""
    total = np.asarray(X.sum(axis=0)).ravel()
    per = pd.Series(total).groupby(genes["chrom"].to_numpy()).sum()
    empty = per.index[per.to_numpy() == 0].tolist()
    if empty:
        n = int(genes["chrom"].isin(empty).sum())
        what = "fragment" if kind == "fragments" else "peak count"
        log.warning("%d genes on %d chromosomes (%s%s) have no %s in their windows: the data lacks these "
                    "chromosomes or is of another genome", n, len(empty), ", ".join(empty[:5]),
                    ", ..." if len(empty) > 5 else "", what)

"""Region-level annotation of an AnnData's variables (its vocabulary regions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData


def _var_regions(adata: AnnData) -> pd.DataFrame:
    var = adata.var
    if {"chrom", "start", "end"} <= set(var.columns):
        return var[["chrom", "start", "end"]].reset_index(drop=True)
    from atacformer.io.matrix import peaks_from_names

    return peaks_from_names(adata.var_names.to_numpy())[["chrom", "start", "end"]]


def annotate_regions(adata: AnnData, gtf, *, genome=None, copy: bool = False) -> AnnData | None:
    """Annotate the regions (variables) of ``adata`` from a GTF, HOMER-style.

    Writes ``var["region_class"]`` (promoter-TSS, TTS, 5' UTR, 3' UTR, exon, intron,
    intergenic, in HOMER's priority), ``var["noncoding"]``, ``var["tss_distance"]`` (bases to
    the nearest transcript start: 0 when the region holds it, negative upstream on the gene's
    strand) and ``var["nearest_gene"]``. Regions come from ``var`` ``chrom`` / ``start`` /
    ``end`` (what ``atacformer tokenize`` writes) or from ``chr:start-end`` variable names.
    See :func:`atacformer.vocab.annotate.annotate_gtf`; a
    :class:`~atacformer.vocab.Vocabulary` is annotated by that function directly.

    Examples
    --------
    >>> import atacformer as af
    >>> af.tl.annotate_regions(adata, gtf="gencode.v33.basic.annotation.gtf.gz")  # doctest: +SKIP
    >>> adata.var["region_class"].value_counts()  # doctest: +SKIP
    """
    from atacformer.vocab.annotate import annotate_gtf

    adata = adata.copy() if copy else adata
    ann = annotate_gtf(_var_regions(adata), gtf, genome=genome)
    for col in ann.columns:
        adata.var[col] = ann[col].to_numpy() if col != "region_class" else pd.Categorical(ann[col])
    return adata if copy else None


# -- TSS distribution score and inferred cryptic TSSs (LeRoy 2025 dissertation, ch. 5) --------
def _centroid_distance(emb: np.ndarray, promoter: np.ndarray, metric: str) -> np.ndarray:
    """Distance of every region to the promoter-like centroid (the mean of the promoter
    regions). A promoter region is measured to the mean of the other promoter regions
    (leave-one-out): counting itself would pull every promoter towards the centroid, and
    so towards TSSs, even for random vectors."""
    emb = np.asarray(emb, dtype=np.float64)
    n = int(promoter.sum())
    if n < 2:
        raise ValueError("the promoter centroid needs at least two promoter-TSS regions")
    if metric == "cosine":
        x = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    elif metric == "euclidean":
        x = emb
    else:
        raise ValueError(f"unknown metric {metric!r}: 'cosine' or 'euclidean'")
    total = x[promoter].sum(0)
    c = np.broadcast_to(total / n, x.shape).copy()
    c[promoter] = (total - x[promoter]) / (n - 1)
    if metric == "euclidean":
        return np.linalg.norm(x - c, axis=1)
    c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    return 1.0 - np.einsum("ij,ij->i", x, c)


def tss_distribution_score(embeddings, tss_distance, promoter, *, metric: str = "cosine",
                           n_shuffles: int = 100, seed: int = 0) -> dict:
    """TSS distribution score: the Spearman correlation between each region's embedding
    distance to the promoter-like centroid and its distance to the nearest TSS.

    The centroid is the mean (unit) embedding of the ``promoter`` regions (leave-one-out for
    the promoter regions themselves). A model that has
    learned promoter biology puts regions near TSSs near the centroid (score > 0); the
    control correlates the same distances with shuffled TSS distances (centred at 0).

    Parameters
    ----------
    embeddings
        (n_regions, d) region vectors.
    tss_distance
        Signed distance to the nearest TSS (its absolute value is used); NaN rows are left out.
    promoter
        Boolean mask of the regions whose mean defines the centroid (promoter-TSS regions).

    Returns
    -------
    dict
        ``score``, ``shuffled_mean``, ``shuffled_sd``, ``shuffled`` (the control scores),
        ``n_regions``, ``centroid_distance`` (per region, NaN where left out).
    """
    from scipy.stats import rankdata

    tss = np.abs(np.asarray(tss_distance, dtype=np.float64))
    promoter = np.asarray(promoter, bool)
    emb = np.asarray(embeddings)
    ok = np.isfinite(tss) & np.isfinite(emb).all(1)  # regions without a vector (never seen) left out
    dist = _centroid_distance(emb[ok], promoter[ok], metric)
    rd, rt = rankdata(dist), rankdata(tss[ok])

    def rho(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float(a @ b / np.sqrt((a @ a) * (b @ b)))

    rng = np.random.default_rng(seed)
    shuffled = np.array([rho(rd, rng.permutation(rt)) for _ in range(n_shuffles)])
    full = np.full(len(tss), np.nan)
    full[ok] = dist
    return {"score": rho(rd, rt), "shuffled_mean": float(shuffled.mean()) if n_shuffles else np.nan,
            "shuffled_sd": float(shuffled.std()) if n_shuffles else np.nan, "shuffled": shuffled,
            "n_regions": int(ok.sum()), "centroid_distance": full}


def matched_null(values, chosen, strata, *, n_draws: int = 500, seed: int = 0) -> np.ndarray:
    """Means of ``values`` over ``n_draws`` random region sets matched to ``chosen``: each draw
    takes, in every stratum, as many regions (without replacement) as ``chosen`` has there."""
    values = np.asarray(values, dtype=np.float64)
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    want = pd.Series(strata[chosen]).value_counts()
    pools = {s: np.flatnonzero(strata == s) for s in want.index}
    out = np.empty(n_draws)
    for i in range(n_draws):
        picks = np.concatenate([rng.choice(pools[s], size=n, replace=False) for s, n in want.items()])
        out[i] = values[picks].mean()
    return out


def cryptic_tss(embeddings, tss_distance, promoter, *, min_tss_distance: int = 10_000,
                max_centroid_distance: float | None = None, signal=None, accessibility=None,
                n_draws: int = 500, n_strata: int = 10, metric: str = "cosine", seed: int = 0) -> dict:
    """Inferred cryptic TSSs (icTSSs): regions far from any annotated TSS yet embedded as close
    to the promoter-like centroid as promoters are.

    Parameters
    ----------
    embeddings, tss_distance, promoter
        As for :func:`tss_distribution_score`.
    min_tss_distance
        A call lies at least this far (bp) from every TSS.
    max_centroid_distance
        A call is at most this far from the centroid; default the median distance of the
        promoter regions.
    signal
        Per-region evidence of promoter activity to test the calls with (e.g. the fraction
        of a region under H3K4me3 peaks, or its CpG observed / expected ratio).
    accessibility
        Per-region accessibility (e.g. the fraction of cells where it is open): the null
        draws are matched to the calls in ``n_strata`` quantile strata of it.
    n_draws
        Random region sets in the null (the dissertation: 500).

    Returns
    -------
    dict
        ``calls`` (region indices), ``threshold``; with ``signal``: ``observed`` (mean
        signal of the calls), ``null`` (the draws' means), ``fold`` (observed / null mean)
        and ``p`` = (1 + draws at least as high) / (1 + n_draws), the empirical p-value.
    """
    tss = np.abs(np.asarray(tss_distance, dtype=np.float64))
    promoter = np.asarray(promoter, bool)
    emb = np.asarray(embeddings)
    has = np.isfinite(emb).all(1)
    dist = np.full(len(emb), np.nan)
    dist[has] = _centroid_distance(emb[has], promoter[has], metric)
    thr = float(np.median(dist[promoter & has])) if max_centroid_distance is None else float(max_centroid_distance)
    far = np.isfinite(tss) & (tss >= min_tss_distance) & has
    calls = np.flatnonzero(far & (dist <= thr))
    out = {"calls": calls, "threshold": thr, "centroid_distance": dist, "n_far": int(far.sum())}
    if signal is None or not len(calls):
        return out
    signal = np.asarray(signal, dtype=np.float64)
    pool = np.isfinite(signal)
    if accessibility is None:
        strata = np.zeros(len(signal), np.int64)
    else:
        acc = np.asarray(accessibility, dtype=np.float64)
        edges = np.unique(np.quantile(acc[pool], np.linspace(0, 1, n_strata + 1)[1:-1]))
        strata = np.searchsorted(edges, acc, side="right")
    strata = np.where(pool, strata, -1)  # regions without a signal are never drawn
    chosen = calls[pool[calls]]
    null = matched_null(signal, chosen, strata, n_draws=n_draws, seed=seed)
    obs = float(signal[chosen].mean())
    out.update({"observed": obs, "null": null, "fold": obs / null.mean() if null.mean() else np.inf,
                "p": (1 + int((null >= obs).sum())) / (1 + n_draws)})
    return out


def _region_inputs(adata: AnnData, use_rep: str):
    for col in ("tss_distance", "region_class"):
        if col not in adata.var:
            raise KeyError(f"var[{col!r}] is missing: run atacformer.tl.annotate_regions(adata, gtf=...) first")
    if use_rep not in adata.varm:
        raise KeyError(f"varm[{use_rep!r}] is missing: run atacformer.tl.region_embeddings(model, adata) first")
    return (adata.varm[use_rep], adata.var["tss_distance"].to_numpy(np.float64),
            (adata.var["region_class"].astype(str) == "promoter-TSS").to_numpy())


def tss_score(adata: AnnData, use_rep: str = "atacformer_regions", *, metric: str = "cosine",
              n_shuffles: int = 100, seed: int = 0, key_added: str = "tss_score") -> dict:
    """TSS distribution score of the region vectors in ``varm[use_rep]`` (see
    :func:`tss_distribution_score`), with the regions' ``var["tss_distance"]`` and
    ``var["region_class"]`` from :func:`annotate_regions`. Writes ``var["centroid_distance"]``
    and ``uns[key_added]`` (score and shuffled control); returns the result.

    Examples
    --------
    >>> af.tl.region_embeddings(model, adata); af.tl.annotate_regions(adata, gtf=gtf)  # doctest: +SKIP
    >>> af.tl.tss_score(adata)["score"]  # doctest: +SKIP
    """
    emb, tss, prom = _region_inputs(adata, use_rep)
    res = tss_distribution_score(emb, tss, prom, metric=metric, n_shuffles=n_shuffles, seed=seed)
    adata.var["centroid_distance"] = res["centroid_distance"]
    adata.uns[key_added] = {k: v for k, v in res.items() if k != "centroid_distance"}
    return res


def cryptic_tss_calls(adata: AnnData, use_rep: str = "atacformer_regions", *, signal=None,
                      accessibility=None, key_added: str = "cryptic_tss", **kwargs) -> dict:
    """Inferred cryptic TSSs of an AnnData's regions (:func:`cryptic_tss`). ``signal`` and
    ``accessibility`` may name ``var`` columns; ``accessibility`` defaults to the fraction of
    cells in which each region is open. Writes ``var[key_added]`` (bool) and ``uns[key_added]``."""
    emb, tss, prom = _region_inputs(adata, use_rep)
    if isinstance(signal, str):
        signal = adata.var[signal].to_numpy(np.float64)
    if isinstance(accessibility, str):
        accessibility = adata.var[accessibility].to_numpy(np.float64)
    elif accessibility is None and adata.n_obs:
        X = adata.X
        accessibility = np.asarray((X > 0).sum(0)).ravel() / adata.n_obs
    res = cryptic_tss(emb, tss, prom, signal=signal, accessibility=accessibility, **kwargs)
    mask = np.zeros(adata.n_vars, bool)
    mask[res["calls"]] = True
    adata.var[key_added] = mask
    adata.uns[key_added] = {k: v for k, v in res.items() if k not in ("centroid_distance",)}
    return res


def contextual_region_vectors(model, adata: AnnData, *, max_cells: int | None = 1000, seed: int = 0,
                              key_added: str = "atacformer_regions_contextual") -> np.ndarray:
    """Each region's contextual vector averaged over the cells it is open in (the model's last
    hidden state at that token), the region vectors the LeRoy 2025 dissertation scores; NaN
    for a region open in none of the cells used. Written to ``varm[key_added]``.

    Parameters
    ----------
    max_cells
        Use a random sample of at most this many cells (``None``: all).

    Examples
    --------
    >>> contextual_region_vectors(model, adata); tss_score(adata, "atacformer_regions_contextual")  # doctest: +SKIP
    """
    from atacformer.tools._embed import region_embeddings

    rows = np.arange(adata.n_obs)
    if max_cells is not None and adata.n_obs > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(adata.n_obs, max_cells, replace=False))
    res = region_embeddings(model, cells=adata.X[rows], contextual=True)
    d = res["static"].shape[1]
    sums = np.zeros((adata.n_vars, d))
    counts = np.zeros(adata.n_vars)
    for toks, h in zip(res["tokens"], res["hidden"]):
        toks = np.asarray(toks)
        keep = toks < adata.n_vars  # region tokens (special tokens, if any, left out)
        np.add.at(sums, toks[keep], h[keep])
        np.add.at(counts, toks[keep], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        vec = sums / counts[:, None]
    vec[counts == 0] = np.nan
    adata.varm[key_added] = vec
    return vec

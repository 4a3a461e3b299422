"""Spans of DNA regions ranked by accessibility, and the ATAC-aware DNA ranker trained on them
(LeRoy 2025, ch. 3, the Region Ranking task).

A *span* is ``n_regions`` adjacent windows of ``region_length`` bases (3 x 500 bp by
default). The accessibility of a window is the thesis' split of peak signal: a peak with
accessibility ``a`` (the fraction of a data set's cells with a read in it) gives a window
``a x overlap / peak length``; with several data sets the window gets the mean over them
(a data set with no peak there gives 0: its peak caller saw no signal). Windows below
``min_value`` count as 0 (the thesis zeroes counts below 0.1 against noise); a span is kept
when at least ``min_nonzero`` of its windows are accessible (2, as the thesis) and its windows'
values are all different (so it has one full order). Span starts lie on a grid of step
``n_regions x region_length / shift`` (the thesis' reference shift, factor 10).

Spans are built one chromosome at a time from the peaks alone; bases are read from the
indexed FASTA (:mod:`atacformer.vocab.dna`) for the kept spans only, in blocks, so a whole
genome never sits in memory as sequence.

Examples
--------
>>> from atacformer.tools._dna_ranker import peak_accessibility, build_spans, train_dna_ranker
>>> peaks = [peak_accessibility(p) for p in ["a.h5ad", "b.h5ad"]]          # doctest: +SKIP
>>> spans = build_spans(peaks, "hg19.fa.gz", chroms=["chr22"])             # doctest: +SKIP
>>> model = train_dna_ranker(spans, "ranker_run", max_steps=500)            # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from atacformer.errors import InputFormatError

logger = logging.getLogger(__name__)

__all__ = ["RankingSpans", "build_spans", "gc_fraction", "iter_spans", "peak_accessibility", "predict_scores",
           "ranking_metrics", "span_values", "train_dna_ranker"]


# --------------------------------------------------------------------------------------------
# accessibility of peaks
def peak_accessibility(adata, name: str | None = None) -> pd.DataFrame:
    """Fraction of cells with a read in each peak of a cells x peaks matrix.

    Parameters
    ----------
    adata
        AnnData (``var`` with ``chrom``, ``start``, ``end``, 0-based) or a peak matrix path
        (any format :func:`atacformer.io.read_peak_matrix` reads).
    name
        Names the data in errors (default: the path).

    Returns
    -------
    pandas.DataFrame
        ``chrom`` (UCSC-style), ``start``, ``end``, ``accessibility``.

    Examples
    --------
    >>> import anndata as ad
    >>> a = ad.AnnData(np.array([[1, 0], [2, 0], [0, 1], [0, 0]], np.float32),
    ...                var=pd.DataFrame({"chrom": ["chr1", "1"], "start": [0, 100], "end": [50, 150]}))
    >>> peak_accessibility(a)["accessibility"].tolist()
    [0.5, 0.25]
    """
    from atacformer.vocab.dna import read_regions

    if isinstance(adata, (str, os.PathLike)):
        from atacformer.io.matrix import read_peak_matrix

        name = name or os.fspath(adata)
        pm = read_peak_matrix(adata)
        X, var = pm.X, pm.peaks
    else:
        X, var = adata.X, adata.var
    name = name or "the peak matrix"
    missing = {"chrom", "start", "end"} - set(var.columns)
    if missing:
        raise InputFormatError(name, f"var lacks peak coordinate column(s) {sorted(missing)}")
    if X.shape[0] == 0:
        raise InputFormatError(name, "has no cells")
    X = sp.csr_matrix(X)
    frac = np.asarray((X > 0).sum(axis=0)).ravel() / X.shape[0]
    df = read_regions(var[["chrom", "start", "end"]].reset_index(drop=True))
    df["accessibility"] = frac.astype(np.float64)
    return df


def _pool(peaks) -> pd.DataFrame:
    """One table of peaks whose values are divided by the number of data sets (summing the
    windows' shares then gives their mean over data sets)."""
    tables = [peaks] if isinstance(peaks, pd.DataFrame) else list(peaks)
    if not tables:
        raise ValueError("no peak tables given")
    for i, t in enumerate(tables):
        missing = {"chrom", "start", "end", "accessibility"} - set(t.columns)
        if missing:
            raise ValueError(f"peak table {i} lacks column(s) {sorted(missing)}")
    df = pd.concat([t[["chrom", "start", "end", "accessibility"]] for t in tables], ignore_index=True)
    df["accessibility"] = df["accessibility"].to_numpy(np.float64) / len(tables)
    df = df[(df["end"] > df["start"]) & (df["accessibility"] > 0)]
    return df.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# span building
def _cumulative(starts: np.ndarray, ends: np.ndarray, values: np.ndarray):
    """The piecewise-linear ``D(x) = sum_p value_p / len_p x |[start_p, min(end_p, x))|`` as
    breakpoints, slopes and values at the breakpoints."""
    dens = values / (ends - starts)
    xs = np.concatenate([starts, ends]).astype(np.int64)
    dslope = np.concatenate([dens, -dens])
    order = np.argsort(xs, kind="stable")
    xs, dslope = xs[order], dslope[order]
    slope = np.cumsum(dslope)
    at = np.concatenate([[0.0], np.cumsum(slope[:-1] * np.diff(xs))]) if len(xs) else np.zeros(0)
    return xs, slope, at


def _evaluate(curve, x: np.ndarray) -> np.ndarray:
    xs, slope, at = curve
    i = np.searchsorted(xs, x, side="right") - 1
    ok = i >= 0
    out = np.zeros(x.shape, np.float64)
    j = i[ok]
    out[ok] = at[j] + slope[j] * (x[ok] - xs[j])
    return out


def span_values(peaks: pd.DataFrame, span_starts: np.ndarray, region_length: int, n_regions: int) -> np.ndarray:
    """(n_spans, n_regions) accessibility of the windows of spans starting at ``span_starts``,
    from one chromosome's ``peaks`` (``start``, ``end``, ``accessibility``): each peak gives a
    window its value times the fraction of the peak inside the window.

    Examples
    --------
    >>> p = pd.DataFrame({"start": [150], "end": [250], "accessibility": [0.4]})
    >>> span_values(p, np.array([0]), 100, 3).round(3).tolist()
    [[0.0, 0.2, 0.2]]
    """
    curve = _cumulative(peaks["start"].to_numpy(np.int64), peaks["end"].to_numpy(np.int64),
                        peaks["accessibility"].to_numpy(np.float64))
    edges = span_starts[:, None] + region_length * np.arange(n_regions + 1)[None, :]
    d = _evaluate(curve, edges.ravel()).reshape(edges.shape)
    return np.clip(np.diff(d, axis=1), 0, None)


def _candidate_starts(starts, ends, lo: int, hi: int, span: int, step: int) -> np.ndarray:
    """Grid starts (multiples of ``step``) of spans inside ``[lo, hi)`` overlapping a peak."""
    k0 = -(-lo // step)
    k1 = (hi - span) // step
    if k1 < k0 or len(starts) == 0:
        return np.zeros(0, np.int64)
    a = np.maximum(-(-(starts - span + 1) // step), k0)
    b = np.minimum((ends - 1) // step, k1)
    keep = b >= a
    a, b = a[keep], b[keep]
    if len(a) == 0:
        return np.zeros(0, np.int64)
    n = b - a + 1
    ks = np.repeat(a - np.cumsum(np.r_[0, n[:-1]]), n) + np.arange(n.sum())
    return np.unique(ks) * step


def _distinct(values: np.ndarray, rtol: float = 1e-6) -> np.ndarray:
    scale = values.max(axis=1, keepdims=True)
    gaps = np.abs(values[:, :, None] - values[:, None, :])
    off = ~np.eye(values.shape[1], dtype=bool)
    return ((gaps > rtol * scale[:, :, None]) | ~off[None]).all(axis=(1, 2))


@dataclass
class RankingSpans:
    """Spans ready to rank: ``table`` (``chrom``, ``start``, ``end``), ``accessibility``
    (n, R) float32 and ``codes`` (n, R, L) uint8 base codes (``A C G T`` = 0..3, other 4), or
    ``codes=None`` and the ``fasta`` they are read from, a batch at a time
    (:meth:`sequences`), for more spans than memory holds.

    Examples
    --------
    >>> train, test = build_spans(peaks, "hg19.fa.gz").split(20_500_000, chrom="chr22")   # doctest: +SKIP
    """

    table: pd.DataFrame
    accessibility: np.ndarray
    codes: np.ndarray | None
    fasta: str | None = None
    region_length: int = 500

    def __post_init__(self):
        if self.codes is not None:
            self.region_length = int(self.codes.shape[2])
        elif self.fasta is None:
            raise ValueError("RankingSpans needs codes or the FASTA to read them from")
        self._fa = None

    def __len__(self) -> int:
        return len(self.table)

    def subset(self, mask) -> "RankingSpans":
        """The spans where ``mask`` (bool or indices) holds."""
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask, np.int64)
        return RankingSpans(self.table.iloc[idx].reset_index(drop=True), self.accessibility[idx],
                            None if self.codes is None else self.codes[idx], self.fasta, self.region_length)

    def sequences(self, idx) -> np.ndarray:
        """(len(idx), R, L) base codes of spans ``idx``: from memory, or read from the FASTA."""
        idx = np.asarray(idx, np.int64)
        if self.codes is not None:
            return self.codes[idx]
        from atacformer.genome import normalize_chroms
        from atacformer.vocab.dna import _open_fasta, encode_bases

        if self._fa is None:
            fa = _open_fasta(self.fasta)
            self._fa = (fa, {str(normalize_chroms([k])[0]): k for k in reversed(fa.keys())})
        fa, names = self._fa
        r = self.accessibility.shape[1]
        out = np.empty((len(idx), r, self.region_length), np.uint8)
        t = self.table
        for o, i in enumerate(idx):
            seq = fa.fetch(names[t["chrom"].iat[i]], int(t["start"].iat[i]), int(t["end"].iat[i]))
            out[o] = encode_bases(seq).reshape(r, self.region_length)
        return out

    def split(self, test_start: int, chrom: str | None = None) -> tuple["RankingSpans", "RankingSpans"]:
        """Train spans ending at or before ``test_start`` and test spans starting at or after
        it (on ``chrom``, default: all chromosomes): no base is in both; spans across the cut
        are dropped."""
        t = self.table
        on = np.ones(len(t), bool) if chrom is None else (t["chrom"].to_numpy() == chrom)
        train = ~on | (t["end"].to_numpy() <= test_start)
        test = on & (t["start"].to_numpy() >= test_start)
        return self.subset(train), self.subset(test)


class _SpanExamples:
    """Training examples of :func:`~atacformer.train.pretrain` over :class:`RankingSpans`."""

    def __init__(self, spans: RankingSpans):
        if not len(spans):
            raise ValueError("no spans to train on")
        self.spans = spans

    def __len__(self) -> int:
        return len(self.spans)

    def lengths(self) -> np.ndarray:
        return np.ones(len(self.spans), np.int64)

    def get_rows(self, idx) -> dict:
        idx = np.asarray(idx, np.int64)
        return {"codes": self.spans.sequences(idx), "accessibility": self.spans.accessibility[idx]}


def iter_spans(peaks, fasta, *, region_length: int = 500, n_regions: int = 3, shift: int = 10,
               min_nonzero: int = 2, min_value: float | None = None, chroms=None, start: int | None = None,
               end: int | None = None, max_n: float = 0.1, block: int = 1_000_000, keep_sequence: bool = True,
               progress: bool = False):
    """Yield the :class:`RankingSpans` of one chromosome at a time (see :func:`build_spans`):
    only one chromosome's kept spans are in memory, as uint8 base codes.

    Examples
    --------
    >>> for part in iter_spans(peaks, "hg38.fa.gz"):            # doctest: +SKIP
    ...     np.save(f"{part.table.chrom[0]}.npy", part.codes)    # doctest: +SKIP
    """
    from atacformer.vocab.dna import _check_in_fasta, _open_fasta, encode_bases

    if n_regions < 2 or region_length < 1 or shift < 1 or not 1 <= min_nonzero <= n_regions:
        raise ValueError(f"need n_regions >= 2, region_length >= 1, shift >= 1 and 1 <= min_nonzero <= "
                         f"n_regions; got {n_regions}, {region_length}, {shift}, {min_nonzero}")
    span = n_regions * region_length
    step = max(1, span // shift)
    df = _pool(peaks)
    if min_value is None:  # a tenth of a typical peak's signal, as the thesis zeroes counts < 0.1
        min_value = 0.1 * float(np.median(df["accessibility"])) if len(df) else 0.0
    fa = _open_fasta(fasta)
    if chroms is None:
        chroms = list(pd.unique(df["chrom"]))
    from atacformer.genome import normalize_chroms

    chroms = [str(c) for c in normalize_chroms(np.asarray(list(chroms), dtype=object))]
    # the whole requested stretch must lie in the FASTA: a clear error before anything is read
    probe = pd.DataFrame({"chrom": chroms, "start": [start or 0] * len(chroms), "end": [0] * len(chroms)})
    names, _, _ = _check_in_fasta(fa, fasta, probe)
    lengths = {c: fa.length(names[c]) for c in chroms}
    if end is not None:
        _check_in_fasta(fa, fasta, probe.assign(end=end))
    by_chrom = df.groupby("chrom", sort=False).indices
    it = chroms
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(chroms, desc="building spans", unit="chrom")
    for c in it:
        lo, hi = int(start or 0), int(lengths[c] if end is None else end)
        if hi <= lo:
            raise ValueError(f"{c}: the stretch {lo:,}-{hi:,} is empty (start must be below end and the "
                             f"FASTA's {lengths[c]:,} bp)")
        rows = by_chrom.get(c, np.zeros(0, np.int64))
        p = df.iloc[rows]
        past = int((p["end"] > lengths[c]).sum())
        if past:  # a FASTA of part of a chromosome, or peaks of another assembly
            logger.warning("%s: %d peak(s) end past the FASTA's %s bp and are not used", c, past,
                           f"{lengths[c]:,}")
        p = p[(p["end"] > lo) & (p["start"] < hi)]
        starts = _candidate_starts(p["start"].to_numpy(np.int64), p["end"].to_numpy(np.int64), lo, hi, span, step)
        values = span_values(p, starts, region_length, n_regions) if len(starts) else np.zeros((0, n_regions))
        values[values < min_value] = 0
        keep = ((values > 0).sum(1) >= min_nonzero) & _distinct(values) if len(values) else np.zeros(0, bool)
        starts, values = starts[keep], values[keep]
        codes = np.empty((len(starts) if keep_sequence else 0, n_regions, region_length), np.uint8)
        ok = np.zeros(len(starts), bool)
        i = 0
        while i < len(starts):  # read the bases of spans within ``block`` bases at once
            j = int(np.searchsorted(starts, starts[i] + block, side="right"))
            b0, b1 = int(starts[i]), int(starts[j - 1]) + span
            seq = encode_bases(fa.fetch(names[c], b0, b1))
            idx = (starts[i:j] - b0)[:, None] + np.arange(span)[None, :]
            part = seq[idx].reshape(j - i, n_regions, region_length)
            ok[i:j] = ((part == 4).mean(axis=2) <= max_n).all(axis=1)
            if keep_sequence:
                codes[i:j] = part
            i = j
        table = pd.DataFrame({"chrom": c, "start": starts[ok], "end": starts[ok] + span})
        logger.info("%s: %d spans kept of %d overlapping a peak", c, int(ok.sum()), len(keep))
        yield RankingSpans(table, values[ok].astype(np.float32), codes[ok] if keep_sequence else None,
                           os.fspath(fasta), region_length)


def build_spans(peaks, fasta, **kwargs) -> RankingSpans:
    """Spans of ``n_regions`` adjacent windows ranked by accessibility, with their bases.

    Parameters
    ----------
    peaks
        A table from :func:`peak_accessibility` or a list of them (one per data set; a
        window's accessibility is then the mean over the data sets).
    fasta
        Indexed genome FASTA (plain, or bgzip with ``.fai`` and ``.gzi``).
    region_length, n_regions
        Window size and windows per span (500 bp x 3).
    shift
        Span starts lie on a grid of step ``n_regions x region_length // shift``.
    min_nonzero
        Accessible windows a span needs (2, as LeRoy 2025).
    min_value
        Window values below it count as 0 (default: a tenth of the median peak value).
    chroms
        Chromosomes to build (default: those of the peaks); each must be in the FASTA.
    start, end
        The stretch of each chromosome to use (default: all of it); ``end`` must not pass
        the FASTA's sequence.
    max_n
        Spans with a window holding more than this fraction of ``N`` are dropped.
    keep_sequence
        Keep the spans' bases in memory (uint8, 1 byte a base); ``False`` keeps coordinates
        only and training reads each batch's bases from the FASTA (a whole genome).
    block, progress
        Bases read per FASTA access; show a progress bar.

    Raises
    ------
    InputFormatError
        The FASTA is missing or lacks its ``.fai`` / ``.gzi`` index.
    GenomeMismatchError
        A chromosome is not in the FASTA, or ``end`` passes its sequence.

    Examples
    --------
    >>> spans = build_spans(peak_accessibility("cells.h5ad"), "hg19.fa.gz",
    ...                     chroms=["chr22"])                       # doctest: +SKIP
    >>> spans.codes.shape                                          # doctest: +SKIP
    (2000, 3, 500)
    """
    parts = list(iter_spans(peaks, fasta, **kwargs))
    n, w = kwargs.get("n_regions", 3), kwargs.get("region_length", 500)
    keep = kwargs.get("keep_sequence", True)
    if not parts:
        return RankingSpans(pd.DataFrame({"chrom": [], "start": [], "end": []}), np.zeros((0, n), np.float32),
                            np.zeros((0, n, w), np.uint8) if keep else None, os.fspath(fasta), w)
    return RankingSpans(pd.concat([p.table for p in parts], ignore_index=True),
                        np.concatenate([p.accessibility for p in parts]),
                        np.concatenate([p.codes for p in parts]) if keep else None, os.fspath(fasta), w)


# --------------------------------------------------------------------------------------------
# training and scoring
def _batcher(rows, rng, labels):
    import torch

    codes = torch.from_numpy(np.ascontiguousarray(rows["codes"]))
    return {"codes": codes, "accessibility": torch.from_numpy(rows["accessibility"])}, int(codes.shape[0])


def train_dna_ranker(spans: RankingSpans, out, *, config=None, progress: bool = False, **train_kwargs):
    """Train the DNA ranker on spans through the package's training loop; returns the
    exported model (``out/model``), loaded.

    Parameters
    ----------
    spans
        Training spans (:func:`build_spans`).
    out
        The run's folder (checkpoints, then ``model/``).
    config
        A :class:`~atacformer.models.dna_ranker.DnaRankerConfig` (default: its defaults with
        the spans' region count and length).
    progress
        Show a progress bar.
    **train_kwargs
        Other :class:`atacformer.train.TrainConfig` fields (``max_steps``, ``batch_size``,
        ``lr``, ``seed``, ``time_budget``...).

    Examples
    --------
    >>> model = train_dna_ranker(train_spans, "ranker", max_steps=300)   # doctest: +SKIP
    >>> scores = predict_scores(model, test_spans.codes)                 # doctest: +SKIP
    """
    import torch

    from atacformer.models.dna_ranker import DnaRankerConfig, DnaRankerModel
    from atacformer.train import TrainConfig, pretrain
    from atacformer.train.task import Task

    config = config or DnaRankerConfig()
    config = config.replace(n_regions=spans.accessibility.shape[1], region_length=spans.region_length)

    def build(seed):
        if seed is not None:
            torch.manual_seed(seed)
        return DnaRankerModel(config)

    task = Task(build=build, examples=_SpanExamples(spans), batcher=_batcher)
    kw = {"batch_size": 64, "lr": 1e-3, "warmup_steps": 20, "tensorboard": False, **train_kwargs}
    summary = pretrain(TrainConfig(model="dna-ranker", out=str(out), progress=progress, **kw), task=task)
    return DnaRankerModel.from_pretrained(Path(summary["model_dir"]))


def predict_scores(model, codes, batch_size: int = 256) -> np.ndarray:
    """(n, R) scores of the regions of spans (``codes`` (n, R, L), or :class:`RankingSpans`)
    by a DNA ranker; higher = ranked more accessible.

    Examples
    --------
    >>> from atacformer.models import load_model
    >>> scores = predict_scores(load_model("ranker/model"), spans.codes)          # doctest: +SKIP
    >>> ranking_metrics(scores, spans.accessibility)["full_order"]               # doctest: +SKIP
    """
    import torch

    was = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for s in range(0, len(codes), batch_size):
                idx = np.arange(s, min(s + batch_size, len(codes)))
                x = codes.sequences(idx) if isinstance(codes, RankingSpans) else codes[idx]
                out.append(model.score(torch.from_numpy(np.ascontiguousarray(x))).float().numpy())
    finally:
        model.train(was)
    return np.concatenate(out) if out else np.zeros((0, model.config.n_regions), np.float32)


# --------------------------------------------------------------------------------------------
# evaluation
def gc_fraction(codes: np.ndarray) -> np.ndarray:
    """(n, R) fraction of ``G`` + ``C`` among the ``A C G T`` bases of each region (0.5 for a
    region of ``N`` only): the GC-content ranking baseline.

    Examples
    --------
    >>> from atacformer.vocab.dna import encode_bases
    >>> gc_fraction(encode_bases("ACGGNA").reshape(1, 1, 6)).tolist()
    [[0.6]]
    """
    acgt = (codes < 4).sum(-1)
    gc = ((codes == 1) | (codes == 2)).sum(-1)
    return np.where(acgt > 0, gc / np.maximum(acgt, 1), 0.5)


def ranking_metrics(scores: np.ndarray, accessibility: np.ndarray) -> dict:
    """How well ``scores`` order each span's regions by ``accessibility`` (all different).

    Tied scores are broken at random, in expectation: ``full_order`` is the mean chance that
    the whole order is right (1/6 for random scores of 3 regions), ``pairwise`` the mean
    fraction of region pairs in the right order (a tie counts 1/2) and ``kendall_tau`` the
    mean Kendall tau-a (concordant minus discordant pairs over all pairs).

    Examples
    --------
    >>> ranking_metrics(np.array([[1, 2, 3], [3, 2, 1.0]]), np.array([[0, 1, 2], [0, 1, 2.0]]))
    {'n_spans': 2, 'full_order': 0.5, 'pairwise': 0.5, 'kendall_tau': 0.0}
    """
    s = np.asarray(scores, np.float64)
    a = np.asarray(accessibility, np.float64)
    n, r = a.shape
    if s.shape != a.shape:
        raise ValueError(f"scores {s.shape} and accessibility {a.shape} differ in shape")
    if n == 0:
        return {"n_spans": 0, "full_order": math.nan, "pairwise": math.nan, "kendall_tau": math.nan}
    iu = np.triu_indices(r, 1)
    ds = np.sign(s[:, :, None] - s[:, None, :])[:, iu[0], iu[1]]
    da = np.sign(a[:, :, None] - a[:, None, :])[:, iu[0], iu[1]]
    conc = (ds * da > 0).sum(1)
    disc = (ds * da < 0).sum(1)
    ties = (ds == 0).sum(1)
    pairs = len(iu[0])
    # the true order is the one strict order; the chance random tie-breaking reaches it is
    # 1 / (orders consistent with the scores) when no pair is discordant, else 0
    from itertools import permutations

    perms = np.array(list(permutations(range(r))))                            # (P, R)
    sp_ = s[:, perms]                                                         # (n, P, R)
    consistent = (np.diff(sp_, axis=2) >= 0).all(axis=2).sum(1)
    full = np.where(disc == 0, 1.0 / np.maximum(consistent, 1), 0.0)
    return {"n_spans": int(n), "full_order": float(full.mean()),
            "pairwise": float(((conc + 0.5 * ties) / pairs).mean()),
            "kendall_tau": float(((conc - disc) / pairs).mean())}

"""Cell quality control of a fragments file, computed in the tokenizer's single pass.

Per barcode (the set of SnapATAC2, Zhang 2024, and ArchR, Granja 2021):

- ``n_fragments``: unique fragments (lines of the file);
- ``duplicate_rate``: ``1 - n_fragments / read pairs``, the read pairs being the sum of the
  fifth (duplicate count) column, as SnapATAC2's ``frac_dup``;
- ``tsse``: TSS enrichment exactly as SnapATAC2 2.9 (``snap.metrics.tsse``) defines it: both
  Tn5 insertion sites of every fragment (``start`` and ``end - 1``) are placed relative to
  every TSS within +-2 kb (strand-aware; the TSSs are the distinct (position, strand) of the
  GTF's ``transcript`` records), and ``tsse = (centre / 11) / (flanks / 200 + 0.1)`` where
  ``centre`` counts the insertions at offsets -5..+5 and ``flanks`` those at the 100 offsets
  at each end of the window;
- ``frac_tss``: the fraction of fragments with an insertion within +-2 kb of a TSS;
- ``frac_promoter``: the fraction of fragments overlapping a promoter, 2 kb upstream to
  100 bp downstream of a TSS (ArchR's default promoter region);
- ``frip`` (with a peak set): the fraction of fragments overlapping a peak, as
  ``snap.metrics.frip``;
- ``nucleosome_signal``: mono-nucleosomal (147-294 bp) over nucleosome-free (< 147 bp)
  fragments (Signac's definition, Stuart 2021), NaN when a barcode has no short fragment.

Cells are called by the knee of the barcode-rank curve and/or minimum fragments and TSS
enrichment (:func:`call_cells`), and doublets scored by Scrublet (Wolock 2019) through
``scanpy.pp.scrublet`` (:func:`doublet_scores`).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from atacformer._core import qc as _qc
from atacformer.errors import InputFormatError

log = logging.getLogger(__name__)

QC_COLUMNS = ("n_fragments", "tsse", "frac_tss", "frac_promoter", "nucleosome_signal", "duplicate_rate")
PROMOTER_UPSTREAM = 2000
PROMOTER_DOWNSTREAM = 100


def read_tss(path, *, genome=None) -> pd.DataFrame:
    """Transcription start sites from a GTF or a TSS BED.

    Parameters
    ----------
    path
        GTF (gz or plain; the start of every ``transcript`` record, its end on the minus
        strand, as SnapATAC2 reads it) or a BED (``chrom start end [name score strand]``;
        the TSS is ``start``, or ``end - 1`` on the minus strand).
    genome
        Validate chromosomes against a genome (see :func:`atacformer.io.genes.read_gtf_records`).

    Returns
    -------
    pandas.DataFrame
        ``chrom``, ``pos`` (0-based), ``strand``: the distinct TSSs, sorted.

    Raises
    ------
    InputFormatError
        A file that cannot be read, or without any TSS; the message names the file.

    Examples
    --------
    >>> tss = read_tss("gencode.v33.basic.annotation.gtf.gz")  # doctest: +SKIP
    """
    from atacformer.io.genes import _is_gtf, read_gtf_records

    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputFormatError(p, "no such file (a GTF or a TSS BED was expected)")
    if _is_gtf(p):
        try:
            tx = read_gtf_records(p, ["transcript"], attributes=(), genome=genome)
        except InputFormatError as e:
            if "no transcript records" in str(e):
                raise InputFormatError(p, "no TSS found: the GTF has no 'transcript' records") from None
            raise
        chrom, start, end, strand = tx["chrom"].to_numpy(), tx["start"].to_numpy(), tx["end"].to_numpy(), \
            tx["strand"].to_numpy()
    else:
        chrom, start, end, strand = _read_tss_bed(p, genome)
    minus = np.asarray(strand == "-")
    pos = np.where(minus, np.asarray(end) - 1, np.asarray(start)).astype(np.int64)
    df = pd.DataFrame({"chrom": np.asarray(chrom, dtype=object), "pos": pos,
                       "strand": np.where(minus, "-", "+")})
    df = df.drop_duplicates().sort_values(["chrom", "pos", "strand"], kind="stable").reset_index(drop=True)
    if not len(df):
        raise InputFormatError(p, "no TSS found (empty file)")
    return df


def _read_tss_bed(p: str, genome):
    """chrom, start, end, strand of a TSS BED (strand: the sixth column, ``+`` when absent)."""
    from atacformer.genome import get_genome, is_contig
    from atacformer.io.bed import read_bed

    df = read_bed(p)
    strand = np.full(len(df), "+", dtype=object)
    first = pd.read_csv(p, sep="\t", header=None, comment="#", nrows=1, dtype=str)
    if first.shape[1] >= 6:
        col = pd.read_csv(p, sep="\t", header=None, comment="#", usecols=[5], dtype=str,
                          skip_blank_lines=True)[5].to_numpy(dtype=object)
        if len(col) == len(df):
            bad = ~np.isin(col, ["+", "-", "."])
            if bad.any():
                raise InputFormatError(p, "the sixth column (strand) must be '+', '-' or '.'", value=col[bad][0])
            strand = col
    if genome is not None:
        g = get_genome(genome)
        known = df["chrom"].isin(list(g.chrom_sizes)).to_numpy()
        contig = np.array([is_contig(c) for c in df["chrom"]], dtype=bool)
        if (~known & ~contig).any():
            c = df["chrom"].to_numpy()[~known & ~contig][0]
            raise InputFormatError(p, f"chromosome {c!r} is not in genome {g.name}")
        df, strand = df[known], strand[known]
    return df["chrom"].to_numpy(), df["start"].to_numpy(), df["end"].to_numpy(), np.asarray(strand)


def _merged(chrom, start, end):
    """Disjoint sorted intervals per chromosome: ``(chroms, starts, ends, {chrom: (lo, hi)})``."""
    df = pd.DataFrame({"chrom": chrom, "start": start, "end": end}).sort_values(["chrom", "start"], kind="stable")
    s_all, e_all, rng = [], [], {}
    n = 0
    for c, g in df.groupby("chrom", sort=False):
        s, e = g["start"].to_numpy(np.int64), g["end"].to_numpy(np.int64)
        run_end = np.maximum.accumulate(e)
        new = np.r_[True, s[1:] >= run_end[:-1]]
        idx = np.flatnonzero(new)
        s_all.append(s[new])
        e_all.append(np.maximum.reduceat(run_end, idx))
        rng[c] = (n, n + len(idx))
        n += len(idx)
    return np.concatenate(s_all), np.concatenate(e_all), rng


class PeakIndex:
    """A peak set (BED / narrowPeak) as disjoint sorted intervals per chromosome."""

    def __init__(self, path):
        from atacformer.io.bed import read_bed

        self.source = os.fspath(path)
        df = read_bed(self.source)
        self.s, self.e, self.range = _merged(df["chrom"].to_numpy(), df["start"].to_numpy(), df["end"].to_numpy())

    def tables(self, chroms):
        lo = np.array([self.range.get(c, (0, 0))[0] for c in chroms], np.int64)
        hi = np.array([self.range.get(c, (0, 0))[1] for c in chroms], np.int64)
        return lo, hi


class TssIndex:
    """TSSs and promoters per chromosome in the sorted arrays :func:`atacformer._core.qc.qc_block` reads."""

    def __init__(self, tss: pd.DataFrame, source: str | None = None):
        self.source = source
        self.chroms = list(dict.fromkeys(tss["chrom"]))
        order = np.lexsort((tss["pos"].to_numpy(), pd.Categorical(tss["chrom"], categories=self.chroms).codes))
        t = tss.iloc[order]
        self.pos = t["pos"].to_numpy(np.int64)
        self.fwd = (t["strand"].to_numpy() != "-")
        codes = pd.Categorical(t["chrom"], categories=self.chroms).codes
        bounds = np.searchsorted(codes, np.arange(len(self.chroms) + 1))
        self.range = {c: (int(bounds[i]), int(bounds[i + 1])) for i, c in enumerate(self.chroms)}
        # promoters: [TSS - 2 kb, TSS + 100) upstream-oriented, merged into disjoint intervals
        ps = np.where(self.fwd, self.pos - PROMOTER_UPSTREAM, self.pos - PROMOTER_DOWNSTREAM + 1)
        pe = np.where(self.fwd, self.pos + PROMOTER_DOWNSTREAM, self.pos + PROMOTER_UPSTREAM + 1)
        ps = np.maximum(ps, 0)
        s_all, e_all, prange = [], [], {}
        n = 0
        for c in self.chroms:
            a, b = self.range[c]
            o = np.argsort(ps[a:b], kind="stable")
            s, e = ps[a:b][o], pe[a:b][o]
            run_end = np.maximum.accumulate(e)
            new = np.r_[True, s[1:] >= run_end[:-1]]
            starts = s[new]
            idx = np.flatnonzero(new)
            ends = np.maximum.reduceat(e, idx)
            s_all.append(starts)
            e_all.append(ends)
            prange[c] = (n, n + len(starts))
            n += len(starts)
        self.prom_s = np.concatenate(s_all)
        self.prom_e = np.concatenate(e_all)
        self.prom_range = prange

    @classmethod
    def from_file(cls, path, *, genome=None) -> TssIndex:
        return cls(read_tss(path, genome=genome), source=os.fspath(path))

    def promoters(self) -> pd.DataFrame:
        """The merged promoter intervals (``chrom``, ``start``, ``end``)."""
        chrom = np.repeat(self.chroms, [b - a for a, b in (self.prom_range[c] for c in self.chroms)])
        return pd.DataFrame({"chrom": chrom, "start": self.prom_s, "end": self.prom_e})

    def tables(self, chroms):
        """Per file chromosome id: TSS and promoter ranges (empty where none)."""
        z = np.zeros(len(chroms), np.int64)
        tlo, thi, plo, phi = z.copy(), z.copy(), z.copy(), z.copy()
        for k, c in enumerate(chroms):
            if c in self.range:
                tlo[k], thi[k] = self.range[c]
                plo[k], phi[k] = self.prom_range[c]
        return tlo, thi, plo, phi


class QCCounters:
    """Per-barcode QC counters filled block by block (see :mod:`atacformer._core.qc`).

    Parameters
    ----------
    tss
        :class:`TssIndex`, a GTF / TSS BED path, or ``None`` (then no TSS enrichment nor
        promoter fraction).
    """

    def __init__(self, tss=None, *, genome=None, peaks=None):
        if tss is not None and not isinstance(tss, TssIndex):
            tss = TssIndex.from_file(tss, genome=genome)
        self.tss = tss
        self.peaks = PeakIndex(peaks) if peaks is not None and not isinstance(peaks, PeakIndex) else peaks
        self._peak_tables = None
        self.n = 0
        self._names = {"n_total": _qc.TOTAL, "n_nfr": _qc.NFR, "n_mono": _qc.MONO, "n_prom": _qc.PROM,
                       "n_tss_frag": _qc.TSS_FRAG, "tss_center": _qc.TSS_CENTER, "tss_flank": _qc.TSS_FLANK,
                       "n_peak": _qc.PEAK}
        self.acc = np.zeros((1024, _qc.N_COUNTERS), np.int64)
        self.profile = np.zeros(2 * _qc.FLANK + 1, np.int64)
        self.length_hist = np.zeros(_qc.MAX_LENGTH + 1, np.int64)
        self._tables = None
        self._empty = np.zeros(0, np.int64)
        self.chroms_seen: list[str] = []

    def _grow(self, n: int) -> None:
        if n <= len(self.acc):
            return
        b = np.zeros((max(n, 2 * len(self.acc)), _qc.N_COUNTERS), np.int64)
        b[:len(self.acc)] = self.acc
        self.acc = b

    def add(self, fb, cells: np.ndarray, n_cells: int) -> None:
        """Add one :class:`~atacformer.io.fragments.FragmentBlock`; ``cells`` are its fragments'
        rows (-1 to skip), ``n_cells`` the rows so far."""
        self._grow(n_cells)
        self.n = max(self.n, n_cells)
        if self._tables is None or len(self._tables[0]) != len(fb.chroms):
            self.chroms_seen = list(fb.chroms)
            if self.tss is not None:
                self._tables = self.tss.tables(fb.chroms)
            else:
                z = np.zeros(len(fb.chroms), np.int64)
                self._tables = (z, z, z, z)
        tlo, thi, plo, phi = self._tables
        t = self.tss
        pos = t.pos if t is not None else self._empty
        fwd = t.fwd if t is not None else np.zeros(0, bool)
        ps = t.prom_s if t is not None else self._empty
        pe = t.prom_e if t is not None else self._empty
        counts = fb.counts if fb.counts is not None else self._empty
        _qc.qc_block(fb.chrom_codes, fb.starts, fb.ends, counts, cells, tlo, thi, pos, fwd, plo, phi, ps, pe,
                     self.acc, self.profile, self.length_hist)
        if self.peaks is not None:
            if self._peak_tables is None or len(self._peak_tables[0]) != len(fb.chroms):
                self._peak_tables = self.peaks.tables(fb.chroms)
            _qc.overlap_block(fb.chrom_codes, fb.starts, fb.ends, cells, *self._peak_tables, self.peaks.s,
                              self.peaks.e, self.acc, _qc.PEAK)

    def check(self, path) -> None:
        """Refuse a TSS annotation or a peak set that shares no chromosome with the fragments."""
        if self.peaks is not None and not set(self.chroms_seen) & set(self.peaks.range):
            raise InputFormatError(self.peaks.source, f"no peak lies on a chromosome of the fragments file "
                                   f"{os.fspath(path)}; is the peak set of the same genome?")
        if self.tss is None:
            return
        if not set(self.chroms_seen) & set(self.tss.chroms):
            seen = ", ".join(self.chroms_seen[:5]) + (", ..." if len(self.chroms_seen) > 5 else "")
            theirs = ", ".join(self.tss.chroms[:5]) + (", ..." if len(self.tss.chroms) > 5 else "")
            raise InputFormatError(self.tss.source or path,
                                   f"no TSS lies on a chromosome of the fragments file {os.fspath(path)} "
                                   f"(fragments on {seen}; TSSs on {theirs}); is the annotation of the same genome?")

    def metrics(self, n_fragments: np.ndarray, rows=None) -> pd.DataFrame:
        """Per-row metrics (columns :data:`QC_COLUMNS`; ``tsse``, ``frac_tss`` and
        ``frac_promoter`` only with TSSs) for ``rows`` (all by default)."""
        n = len(n_fragments)
        sel = np.arange(n) if rows is None else np.asarray(rows)
        nf = np.asarray(n_fragments, np.int64)[sel]

        def g(name):
            a = self.acc[:, self._names[name]]
            out = np.zeros(len(sel), np.int64)
            inside = sel < len(a)
            out[inside] = a[sel[inside]]
            return out

        with np.errstate(divide="ignore", invalid="ignore"):
            cols = {"n_fragments": nf}
            if self.tss is not None:
                cols["tsse"] = (g("tss_center") / (2 * _qc.CENTER + 1)) / (g("tss_flank") / (2 * _qc.EDGE) + 0.1)
                cols["frac_tss"] = np.where(nf > 0, g("n_tss_frag") / np.maximum(nf, 1), np.nan)
                cols["frac_promoter"] = np.where(nf > 0, g("n_prom") / np.maximum(nf, 1), np.nan)
            if self.peaks is not None:
                cols["frip"] = np.where(nf > 0, g("n_peak") / np.maximum(nf, 1), np.nan)
            nfr, mono = g("n_nfr"), g("n_mono")
            cols["nucleosome_signal"] = np.where(nfr > 0, mono / np.maximum(nfr, 1), np.nan)
            tot = g("n_total")
            cols["duplicate_rate"] = np.where(tot > 0, 1.0 - nf / np.maximum(tot, 1), np.nan)
        return pd.DataFrame(cols)

    def library(self, n_fragments: np.ndarray) -> dict:
        """Library-level results for :func:`atacformer.pl.qc`: the TSS profile, the fragment
        length histogram, the barcode-rank curve (each distinct fragment count and the
        number of barcodes with at least as many) and the library TSS enrichment."""
        nf = np.asarray(n_fragments, np.int64)
        nf = nf[nf > 0]
        vals, cnt = np.unique(nf, return_counts=True)
        rank = np.cumsum(cnt[::-1])[::-1]  # barcodes with >= vals[i] fragments
        out = {"fragment_lengths": self.length_hist.copy(), "rank_fragments": vals, "rank": rank}
        if self.tss is not None:
            p = self.profile
            c = p[_qc.FLANK - _qc.CENTER:_qc.FLANK + _qc.CENTER + 1].sum() / (2 * _qc.CENTER + 1)
            bg = (p[:_qc.EDGE].sum() + p[-_qc.EDGE:].sum()) / (2 * _qc.EDGE)
            out["tss_profile"] = p.copy()
            out["library_tsse"] = float(c / (bg + 0.1))
        return out


def knee_threshold(n_fragments, *, min_fragments: int = 10, exclude_top: int = 50, points: int = 400) -> int:
    """Fragments per barcode at the knee (inflection) of the barcode-rank curve.

    Barcodes with at least ``min_fragments`` fragments are ranked by decreasing count; on
    the log-log rank plot (as 10x Cell Ranger and DropletUtils, Lun 2019, draw it) the curve
    is read at ``points`` log-spaced ranks and the knee is where it falls most steeply
    (DropletUtils' inflection point), the top ``exclude_top`` barcodes left out as its
    ``exclude.from``. Within that steepest step the largest drop between two consecutive
    barcodes is taken, and the count just above it is returned: barcodes with at least that
    many fragments are cells.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n = np.r_[rng.integers(3000, 6000, 500), rng.integers(10, 60, 20000)]
    >>> 60 <= knee_threshold(n) <= 3000
    True
    """
    nf = np.asarray(n_fragments, np.int64)
    nf = np.sort(nf[nf >= min_fragments])[::-1]
    if len(nf) < 3:
        raise ValueError(f"the knee needs at least 3 barcodes with >= {min_fragments} fragments, got {len(nf)}")
    lo = min(exclude_top, len(nf) // 10)
    grid = np.unique(np.round(np.logspace(np.log10(lo + 1), np.log10(len(nf)), points)).astype(np.int64)) - 1
    y = np.log10(nf[grid].astype(float))
    x = np.log10(grid + 1.0)
    if len(grid) < 2:
        return int(nf[0])
    slope = np.diff(y) / np.diff(x)
    i = int(np.argmin(slope))
    a, b = grid[i], grid[i + 1]
    seg = np.log10(nf[a:b + 1].astype(float))
    j = a + int(np.argmin(np.diff(seg)))  # the largest single drop inside the steepest step
    return int(nf[j])


def call_cells(obs: pd.DataFrame, *, min_fragments: int = 0, min_tsse: float | None = None,
               knee: bool = False) -> np.ndarray:
    """Boolean mask of the barcodes called cells.

    A cell has at least ``min_fragments`` fragments, at least the knee's count when
    ``knee`` (:func:`knee_threshold`), and a TSS enrichment of at least ``min_tsse``.

    Examples
    --------
    >>> obs = pd.DataFrame({"n_fragments": [5000, 20], "tsse": [9.0, 1.0]})
    >>> call_cells(obs, min_fragments=100, min_tsse=4).tolist()
    [True, False]
    """
    nf = obs["n_fragments"].to_numpy()
    keep = nf >= min_fragments
    if knee:
        keep &= nf >= knee_threshold(nf)
    if min_tsse is not None:
        if "tsse" not in obs:
            raise ValueError("min_tsse needs TSS enrichment: give a TSS annotation (tss=GTF or BED)")
        keep &= obs["tsse"].to_numpy() >= min_tsse
    return keep


def qc_metrics(fragments, tss=None, *, genome=None, barcodes=None, peaks=None, block_bytes=None, progress=None):
    """QC metrics of every barcode of a fragments file, in one pass (no tokenization).

    Parameters
    ----------
    fragments
        10x fragments file (gz/bgz/plain).
    tss
        GTF or TSS BED (see :func:`read_tss`) for ``tsse``, ``frac_tss`` and
        ``frac_promoter``; ``None`` leaves them out.
    genome
        Validate the TSS file's chromosomes against it.
    barcodes
        Only these barcodes (rows in this order); ``None``: every barcode, in order of first
        appearance.
    peaks
        BED / narrowPeak of peaks: adds ``frip``, the fraction of fragments overlapping one.

    Returns
    -------
    tuple[pandas.DataFrame, dict]
        Per-barcode metrics (index = barcodes, columns as :data:`QC_COLUMNS`) and the
        library-level results (see :meth:`QCCounters.library`).

    Examples
    --------
    >>> obs, lib = qc_metrics("fragments.tsv.gz", "gencode.gtf.gz")  # doctest: +SKIP
    >>> obs["tsse"].median()  # doctest: +SKIP
    """
    from atacformer.io._text import DEFAULT_BLOCK_BYTES, prefetch
    from atacformer.io.fragments import FragmentReader

    p = os.fspath(fragments)
    q = QCCounters(tss, genome=genome, peaks=peaks)
    reader = FragmentReader(p, block_bytes=block_bytes or DEFAULT_BLOCK_BYTES, counts=True)
    wl = None if barcodes is None else pd.Index(list(barcodes))
    lut = np.zeros(0, np.int64)
    n_frag = np.zeros(0, np.int64)
    bar = tqdm(desc=f"QC {os.path.basename(p)}", unit=" fragments", unit_scale=True,
               disable=progress is False if progress is not None else None, leave=False)
    for fb in prefetch(reader):
        if wl is None:
            cells = fb.barcode_codes
            n = reader.n_barcodes
        else:
            if len(lut) < reader.n_barcodes:
                lut = np.concatenate([lut, wl.get_indexer(reader.barcodes(len(lut))).astype(np.int64)])
            cells = lut[fb.barcode_codes]
            n = len(wl)
        if len(n_frag) < n:
            n_frag = np.concatenate([n_frag, np.zeros(max(n - len(n_frag), len(n_frag)), np.int64)])
        known = cells >= 0
        n_frag += np.bincount(cells[known], minlength=len(n_frag))[:len(n_frag)]
        q.add(fb, cells, n)
        bar.update(len(fb))
    bar.close()
    q.check(p)
    n = len(wl) if wl is not None else reader.n_barcodes
    n_frag = n_frag[:n] if len(n_frag) >= n else np.r_[n_frag, np.zeros(n - len(n_frag), np.int64)]
    obs = q.metrics(n_frag)
    obs.index = pd.Index(list(wl) if wl is not None else reader.barcodes())
    return obs, q.library(n_frag)


def doublet_scores(adata, *, threshold: float | None = 0.25, random_state: int = 0, **kwargs) -> np.ndarray:
    """Scrublet doublet scores (Wolock 2019) of tokenized cells through ``scanpy.pp.scrublet``,
    written to ``obs["doublet_score"]`` and ``obs["predicted_doublet"]`` (score above
    ``threshold``; ``None`` lets Scrublet pick it from the score histogram, which needs
    scikit-image).

    Examples
    --------
    >>> doublet_scores(adata)  # doctest: +SKIP
    """
    import scanpy as sc

    if adata.n_obs < 30:
        raise ValueError(f"doublet scores need at least 30 cells, got {adata.n_obs}")
    a = adata.copy()
    a.X = a.X.astype(np.float32)
    sc.pp.scrublet(a, threshold=threshold, random_state=random_state, **kwargs)
    adata.obs["doublet_score"] = a.obs["doublet_score"].to_numpy()
    adata.obs["predicted_doublet"] = a.obs["predicted_doublet"].to_numpy()
    return adata.obs["doublet_score"].to_numpy()

"""How well a universe represents the region sets it was built from.

The measures of geniml's ``assess`` module (Rymuza 2024), computed on sorted intervals with
numpy, one chromosome at a time, instead of streaming text files line by line:

- **Base-level overlap** of the universe ``U`` and each (merged) file ``F``: bases only in
  ``U``, only in ``F``, in both. From them ``precision = |U & F| / |U|``,
  ``recall = |U & F| / |F|`` and ``F10 = 101 P R / (100 P + R)`` (the F-beta score with
  beta = 10, which weighs recall ten times as much as precision).
- **Distances**: each region start of the file to the nearest region start of the universe
  and each end to the nearest end, pooled and summarised by their median (file to universe);
  the same from the universe's regions to the file's (universe to file). For a flexible
  universe (cores held as BED thickStart / thickEnd) the flexible variants measure to the
  start flank ``[start, thickStart]`` and the end flank ``[thickEnd, end]`` (0 inside).
- **Region boundary score** (RBS): ``(10 a + b) / 11`` with ``a = 101 / (d_fu + 100)`` and
  ``b = 101 / (d_uf + 100)`` for the median distances file-to-universe ``d_fu`` and
  universe-to-file ``d_uf`` (1.01 at zero distance, as geniml defines it).
- **Universe likelihood** under the collection's binomial coverage models (start, core,
  end tracks, :func:`~atacformer.vocab.universe.methods.lh_model`): for a hard universe each
  track scores its own bases (region starts, region bases, region ends) with the coverage
  model and every other base with the background model; for a flexible universe the flanks
  between region and core blend start (or end) and core models with linear weights.

geniml's streaming code has artefacts that change its numbers. With ``geniml_quirks=True``
they are reproduced, so that every figure equals geniml 0.8.4's (the tests compare them):

- distances: the nearest-region search keeps three universe (or file) regions in a queue
  and reads ahead past the end of a chromosome; each extra read swallows a region of the
  next chromosome, so the first regions of a chromosome can be skipped; a chromosome with
  fewer than three target regions (unless it is the last one) gives no distances, nor does
  one that follows a skipped chromosome when the target has a chromosome the query lacks;
  a file whose start distances are all skipped gets no median (NaN);
- hard likelihood: the end track scores the base just after each region (``end``), not its
  last base;
- flexible likelihood: the background before the first region of every chromosome but the
  first is counted from the previous chromosome's last region end, not from 0;
- likelihood models: where start or end coverage exceeds the number of files (several
  starts of one file within one smoothing window) geniml's background model computes
  ``n_files - value`` in uint16 and so wraps around to ``65536 + n_files - value``.

By default (``geniml_quirks=False``) the search is a true nearest-region search on every
chromosome both sides have, the end track scores the last base of each region, each
chromosome's background starts at 0, and coverage above the number of files gets the
background of :func:`~atacformer.vocab.universe.methods.lh_model` (log10 1e-10).

Other differences from geniml, in both modes: the universe's overlapping regions (if any)
are merged for the base overlap (geniml's sweep counts their shared bases as
universe-only) and the distance searches are exact for them (geniml's queue assumes sorted,
non-overlapping regions); chromosome names are normalised (``1`` and ``chr1`` match); a
flank of zero width contributes nothing (geniml divides by zero); a universe region on a
chromosome the collection never covers scores log10 1e-10 per base with the coverage
model (geniml's model is NaN there, and so its likelihood); chromosomes with underscores
(``chr1_KI270706v1_random``) are scored like any other (geniml's model file loses them).

Examples
--------
>>> from atacformer.vocab.universe import assess, methods  # doctest: +SKIP
>>> cov = CoverageTracks.from_beds(beds, genome="hg38")  # doctest: +SKIP
>>> table = assess.assess(methods.hmm(cov), beds, coverage=cov)  # doctest: +SKIP
>>> assess.summary(table)["f10"]  # doctest: +SKIP
>>> assess.write_report(table, "assessment.tsv")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from atacformer.errors import AtacformerError, InputFormatError, OutputError
from atacformer.genome import Genome, get_genome

log = logging.getLogger(__name__)

BETA = 10  # geniml's F-score weight: recall counts ten times as much as precision
OVERLAP_COLUMNS = ("universe_only_bp", "file_only_bp", "both_bp")
HARD_COLUMNS = ("median_dist_file_to_universe", "median_dist_universe_to_file", "rbs")
FLEX_COLUMNS = ("median_dist_file_to_universe_flex", "median_dist_universe_to_file_flex", "rbs_flex")
_HEADER = (b"#", b"track", b"browser")


# -- scores --------------------------------------------------------------------------------
def f_score(precision, recall, beta: float = BETA):
    """geniml's F-beta score ``(1 + beta^2) P R / (beta^2 P + R)`` (beta = 10).

    NaN where precision and recall are both 0 (a file that shares no base with the
    universe), as in geniml.

    Examples
    --------
    >>> round(float(f_score(0.5, 1.0)), 4)
    0.9902
    """
    p = np.asarray(precision, dtype=float)
    r = np.asarray(recall, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (1 + beta**2) * (p * r) / ((beta**2 * p) + r)


def rbs_score(dist_file_to_universe, dist_universe_to_file):
    """geniml's region boundary score from the two median distances.

    ``(10 a + b) / 11`` with ``a = 101 / (d_fu + 100)``, ``b = 101 / (d_uf + 100)``; 1.01
    when both distances are 0.

    Examples
    --------
    >>> round(float(rbs_score(0, 0)), 4), round(float(rbs_score(100, 100)), 4)
    (1.01, 0.505)
    """
    a = 101 / (np.asarray(dist_file_to_universe, dtype=float) + 100)
    b = 101 / (np.asarray(dist_universe_to_file, dtype=float) + 100)
    return (10 * a + b) / 11


# -- chromosome order (geniml's natural_chr_sort) ------------------------------------------
def _natural_cmp(a: str, b: str) -> int:
    ac = a.replace("chr", "").split("_")[0]
    bc = b.replace("chr", "").split("_")[0]
    if ac.isnumeric() and bc.isnumeric() and ac != bc:
        return (int(ac) > int(bc)) - (int(ac) < int(bc))
    return (a > b) - (a < b)


def _chrom_order(chroms) -> list[str]:
    """Chromosomes in the order geniml streams them (``sort -k1,1V`` / ``natural_chr_sort``)."""
    return sorted(set(chroms), key=functools.cmp_to_key(_natural_cmp))


# -- reading -------------------------------------------------------------------------------
def _n_header_lines(path) -> int:
    from atacformer.io._text import open_binary

    n = 0
    with open_binary(path, threads=0) as f:
        for line in f:
            if line.startswith(_HEADER) or not line.strip():
                n += 1
                continue
            return n
    return n


def read_universe(path) -> pd.DataFrame:
    """Read a universe BED: ``chrom``, ``start``, ``end``, and for a flexible universe (BED9
    or wider, as geniml and :meth:`Universe.write` write them) ``core_start`` /
    ``core_end`` from thickStart / thickEnd.

    Raises
    ------
    InputFormatError
        Unreadable lines, or a core that is not an integer or lies outside its region; the
        message names the file, line and value.

    Examples
    --------
    >>> read_universe("universe_hmm.bed").columns.tolist()  # doctest: +SKIP
    ['chrom', 'start', 'end', 'core_start', 'core_end']
    """
    from atacformer.io.bed import read_bed

    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputFormatError(p, "no such file")
    df = read_bed(p)
    skip = _n_header_lines(p)
    first = pd.read_csv(p, sep="\t", header=None, skiprows=skip, nrows=1, dtype=str, quoting=3)
    if first.shape[1] < 8:
        return df
    fast = _thick_fast(p, skip, first.shape[1])
    if fast is not None and len(fast[0]) == len(df):
        df["core_start"], df["core_end"] = fast
        return df
    try:  # the slow path names the bad line
        thick = pd.read_csv(p, sep="\t", header=None, skiprows=skip, usecols=[6, 7], dtype=str, quoting=3,
                            skip_blank_lines=True)
    except (pd.errors.ParserError, ValueError) as e:
        raise InputFormatError(p, f"could not be read as a BED9 universe: {e}") from None
    if len(thick) != len(df):  # pragma: no cover - both readers skip the same lines
        raise InputFormatError(p, "could not line up thickStart / thickEnd with the regions")
    for j, name in ((6, "core_start"), (7, "core_end")):
        col = thick[j]
        num = pd.to_numeric(col, errors="coerce")
        bad = num.isna() | (num < 0)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputFormatError(p, f"column {j + 1} (thick{'Start' if j == 6 else 'End'}) must be a "
                                      "non-negative integer", line=skip + i + 1, value=col.iloc[i])
        df[name] = num.to_numpy(np.int64)
    return df


def _thick_fast(p: str, skip: int, ncols: int):
    """thickStart / thickEnd with pyarrow; ``None`` when anything is off (then the slow
    reader finds the line)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from atacformer.io._text import open_binary

    names = [f"c{j}" for j in range(ncols)]
    try:
        with open_binary(p, threads=0) as f:
            tab = pacsv.read_csv(
                f, read_options=pacsv.ReadOptions(column_names=names, skip_rows=skip),
                parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
                convert_options=pacsv.ConvertOptions(include_columns=["c6", "c7"],
                                                     column_types={"c6": pa.int64(), "c7": pa.int64()}))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    a = tab.column("c6").to_numpy(zero_copy_only=False)
    b = tab.column("c7").to_numpy(zero_copy_only=False)
    if a.dtype != np.int64 or b.dtype != np.int64 or (a < 0).any() or (b < 0).any():
        return None
    return a, b


def _check_core(df: pd.DataFrame, name) -> None:
    s, e = df["start"].to_numpy(), df["end"].to_numpy()
    for col in ("core_start", "core_end"):
        c = df[col].to_numpy()
        bad = (c < s) | (c > e)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            r = df.iloc[i]
            path = name if isinstance(name, str) and os.path.exists(name) else None
            raise InputFormatError(path if path else name,
                                   f"{col} lies outside its region (the core must be within start..end)",
                                   line=(_n_header_lines(path) + i + 1) if path else None,
                                   value=f"{r['chrom']}:{r['start']}-{r['end']} core {r['core_start']}-{r['core_end']}")


def _check_regions(df: pd.DataFrame, g: Genome, name, clip: bool) -> pd.DataFrame:
    from atacformer.vocab.universe.coverage import _coded

    _, _, e, kept = _coded(df, g, name, clip, rows=True)
    df = df.iloc[kept].copy()
    df["end"] = e
    if clip and "core_start" in df:
        df["core_start"] = np.minimum(df["core_start"], df["end"])
        df["core_end"] = np.minimum(df["core_end"], df["end"])
    return df


class _Intervals:
    """Per-chromosome sorted regions of one side: ``rows[chrom] = (start, end, core_start,
    core_end)`` arrays (core = start / end for a hard set), plus the merged bases."""

    def __init__(self, df: pd.DataFrame, flexible: bool, merge: bool):
        from atacformer.vocab.universe.coverage import merge_intervals

        self.rows: dict[str, tuple] = {}
        self.merged: dict[str, tuple] = {}
        for chrom, sub in df.groupby("chrom", sort=False):
            s = sub["start"].to_numpy(np.int64)
            e = sub["end"].to_numpy(np.int64)
            ms, me = merge_intervals(s, e)
            self.merged[chrom] = (ms, me)
            if merge:  # a file, as geniml reads it: sorted and ``bedtools merge``d
                self.rows[chrom] = (ms, me, ms, me)
            else:
                cs = sub["core_start"].to_numpy(np.int64) if flexible else s
                ce = sub["core_end"].to_numpy(np.int64) if flexible else e
                o = np.lexsort((e, s))
                self.rows[chrom] = (s[o], e[o], cs[o], ce[o])
        self.order = _chrom_order(self.rows)

    def bases(self) -> int:
        return int(sum(int((e - s).sum()) for s, e in self.merged.values()))


# -- base overlap --------------------------------------------------------------------------
def _base_overlap(u: _Intervals, f: _Intervals) -> tuple[int, int, int]:
    """Bases only in the universe, only in the file, in both (merged sets)."""
    from atacformer.vocab.universe.coverage import merge_intervals

    both = 0
    for chrom in set(u.merged) & set(f.merged):
        us, ue = u.merged[chrom]
        fs, fe = f.merged[chrom]
        a, b = merge_intervals(np.concatenate([us, fs]), np.concatenate([ue, fe]))
        both += int((ue - us).sum()) + int((fe - fs).sum()) - int((b - a).sum())
    nu, nf = u.bases(), f.bases()
    return nu - both, nf - both, both


# -- distances -----------------------------------------------------------------------------
def _gap(qa, qb, da, db):
    """geniml's distance between query ``[qa, qb]`` and target ``[da, db]`` where one of them
    is a point: 0 when they meet, else the distance between their nearest ends."""
    return np.maximum(np.maximum(da - qb, qa - db), 0)


def _nearest(qa, qb, da, db):
    """Distance from each query ``[qa, qb]`` to the nearest target ``[da, db]`` (targets
    sorted by ``da``): the last target starting at or before ``qb`` (with the furthest end
    among those) or the first one after it."""
    k = np.searchsorted(da, qb, side="right") - 1
    reach = np.maximum.accumulate(db)
    big = np.iinfo(np.int64).max
    left = np.where(k >= 0, np.maximum(qa - reach[np.maximum(k, 0)], 0), big)
    nxt = np.minimum(k + 1, len(da) - 1)
    right = np.where(k + 1 < len(da), da[nxt] - qb, big)
    return np.minimum(left, right)


def _stream_ranges(d: dict, q_order: list[str], d_order: list[str], last3_reads) -> dict:
    """Simulate geniml's streaming nearest-region search over chromosome blocks.

    ``d``: target line counts per chromosome; queries are streamed in ``q_order``, targets
    in ``d_order`` (each chromosome's lines together); ``last3_reads(chrom, lo, hi)`` counts the queries of ``chrom`` whose nearest
    among the last three targets ``hi - 3 .. hi - 1`` is strictly the last (each makes geniml
    read one line past the chromosome). Returns ``{chrom: (lo, hi)}``: the target lines
    (indices within the chromosome) geniml compares the chromosome's queries with; a
    chromosome it skips is absent.
    """
    rank = {c: i for i, c in enumerate(_chrom_order(set(q_order) | set(d_order)))}
    blocks = [(rank[c], c) for c in d_order if d[c]]
    lo_of = np.cumsum([0] + [d[c] for _, c in blocks])
    N = int(lo_of[-1])
    block_rank = np.array([r for r, _ in blocks], dtype=np.int64)

    def rank_at(i):
        return int(block_rank[np.searchsorted(lo_of, i, side="right") - 1])

    def block_end(i):
        return int(lo_of[np.searchsorted(lo_of, i, side="right")])

    out = {}
    ptr, unused, cur, waiting = 0, [], None, False
    for chrom in q_order:
        rq = rank[chrom]
        if not unused:
            if ptr >= N:
                waiting = True  # end of the target file: geniml stays on the old chromosome
                continue
            dline = ptr
            ptr += 1
            if cur is not None and rank_at(dline) == cur:  # finish the old chromosome
                end = block_end(dline)
                dline, ptr = (end, end + 1) if end < N else (N - 1, N)
            unused.append(dline)
        cur = rq
        u = unused[-1]
        q_start, qlen = None, 0
        if rank_at(u) == rq:
            waiting, q_start, qlen, unused = False, u, 1, []
        elif rank_at(u) > rq:
            waiting = True
            continue
        while qlen < 3 and ptr < N:  # fill the queue of three
            r = rank_at(ptr)
            if r < rq:
                ptr = block_end(ptr)
            elif r == rq:
                take = min(3 - qlen, block_end(ptr) - ptr)
                if q_start is None:
                    q_start = ptr
                qlen += take
                ptr += take
            else:
                unused.append(ptr)
                ptr += 1
                waiting = True
                break
        if qlen == 0:
            waiting = True
        if waiting:
            continue
        base = int(lo_of[[c for _, c in blocks].index(chrom)])
        lo, hi = q_start - base, d[chrom]
        out[chrom] = (lo, hi)
        reads = last3_reads(chrom, lo, hi) if hi - lo >= 3 else 0
        ptr = base + hi
        for _ in range(min(reads, N - ptr)):  # lines of later chromosomes read and set aside
            unused.append(ptr)
            ptr += 1
    return out


def _median_distance(query: _Intervals, target: _Intervals, *, flexible: bool, uni_to_file: bool,
                     quirks: bool) -> float:
    """geniml's ``calc_distance_between_two_files``: median of the pooled start and end
    distances from each query region to the nearest target region."""

    def sides(rows, is_universe):
        s, e, cs, ce = rows
        if flexible and is_universe:
            return (s, cs), (ce, e)  # the start flank and the end flank
        return (s, s), (e, e)

    pooled = {0: [], 1: []}
    for which in (0, 1):  # 0: starts, 1: ends
        q = {c: sides(query.rows[c], uni_to_file)[which] for c in query.rows}
        d = {}
        for c in target.rows:
            a, b = sides(target.rows[c], not uni_to_file)[which]
            if not quirks:  # order the targets for a true nearest search
                o = np.lexsort((b, a))
                a, b = a[o], b[o]
            d[c] = (a, b)
        if quirks:
            def last3(chrom, lo, hi, q=q, d=d):
                qa, qb = q[chrom]
                da, db = d[chrom]
                g = [_gap(qa, qb, da[hi - k], db[hi - k]) for k in (3, 2, 1)]
                return int(((g[2] < g[0]) & (g[2] < g[1])).sum())

            ranges = _stream_ranges({c: len(d[c][0]) for c in d}, query.order, target.order, last3)
        else:
            ranges = {c: (0, len(d[c][0])) for c in query.order if c in d}
        for chrom, (lo, hi) in ranges.items():
            qa, qb = q[chrom]
            da, db = d[chrom][0][lo:hi], d[chrom][1][lo:hi]
            if quirks:  # geniml compares with the lines as they stand; sort for the search
                o = np.lexsort((db, da))
                da, db = da[o], db[o]
            pooled[which].append(_nearest(qa, qb, da, db))
    if not pooled[0] or not sum(len(x) for x in pooled[0]):
        return float("nan")
    return float(np.median(np.concatenate(pooled[0] + pooled[1])))


# -- likelihood ----------------------------------------------------------------------------
class _Scored:
    """One track of one chromosome with per-base scores ``model[value, col]``, summed over
    intervals from run-length prefix sums."""

    def __init__(self, track, model: np.ndarray):
        self.pos = track.pos
        self.length = track.length
        self.ends = track.run_ends
        widths = self.ends - self.pos
        self.w = {c: model[track.val, c] for c in (0, 1)}
        self.cum = {c: np.concatenate([[0.0], np.cumsum(self.w[c] * widths)]) for c in (0, 1)}

    def _F(self, x, col):
        i = np.searchsorted(self.pos, x, side="right") - 1
        return self.cum[col][i] + (x - self.pos[i]) * self.w[col][i]

    def sum(self, a, b, col):
        """``sum(score[a:b])`` with numpy's slice rules (empty when ``a >= b``)."""
        a = np.clip(np.asarray(a, np.int64), 0, self.length)
        b = np.clip(np.asarray(b, np.int64), 0, self.length)
        return np.where(a < b, self._F(b, col) - self._F(a, col), 0.0)

    def weighted(self, a, b, col, reverse: bool):
        """``sum(w * score[a:b])`` with geniml's flank weights ``w = linspace(1/n, 1, n)``
        (``(j + 1) / n``; reversed for the end flank), ``n = b - a``; 0 when ``n = 0``."""
        from atacformer._core.overlap import expand_ranges

        a = np.asarray(a, np.int64)
        b = np.asarray(b, np.int64)
        n = b - a
        ok = n > 0
        i0 = np.searchsorted(self.pos, a, side="right") - 1
        i1 = np.searchsorted(self.pos, b, side="left")
        owner, run = expand_ranges(np.where(ok, i0, 0), np.where(ok, i1, 0))
        p = np.maximum(self.pos[run], a[owner])
        q = np.minimum(self.ends[run], b[owner])
        if reverse:  # weight (b - x) for base x
            tri = ((b[owner] - p) + (b[owner] - q + 1)) * (q - p) / 2
        else:  # weight (x - a + 1)
            tri = ((p - a[owner] + 1) + (q - a[owner])) * (q - p) / 2
        out = np.bincount(owner, weights=tri * self.w[col][run], minlength=len(a))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(ok, out / np.where(ok, n, 1), 0.0)


def _model(track, n_files: int, quirks: bool) -> np.ndarray:
    """:func:`~atacformer.vocab.universe.methods.lh_model`; with ``quirks``, values above the
    number of files get geniml's background: it computes ``n_files - value`` in uint16 (the
    coverage's type), which wraps around to ``65536 + n_files - value`` under NumPy 2."""
    from atacformer.vocab.universe.methods import lh_model

    model = lh_model(track, n_files)
    if quirks and len(model) > n_files + 1:
        vals, _ = track.value_counts()
        over = vals[vals > n_files]
        free = n_files * track.length - track.total()
        model[over, 0] = np.log10(((n_files - over) % 65536) / free + 1e-10)
    return model


def _universe_frame(universe) -> pd.DataFrame:
    return universe.regions if hasattr(universe, "regions") else universe


def universe_likelihood(universe, coverage, *, flexible: bool = False, geniml_quirks: bool = False) -> float:
    """Log10-likelihood of a universe under the collection's coverage models.

    geniml's ``hard_universe_likelihood`` (``flexible=False``) and
    ``likelihood_flexible_universe`` (``flexible=True``) of Rymuza 2024, from run-length
    tracks: the same numbers geniml reads from the bigWig tracks and its model file.

    Parameters
    ----------
    universe
        A :class:`~atacformer.vocab.universe.methods.Universe`, a regions DataFrame
        (``chrom``, ``start``, ``end``, and ``core_start`` / ``core_end`` when flexible) or
        a BED path; chromosomes must be in ``coverage.genome``.
    coverage
        :class:`~atacformer.vocab.universe.coverage.CoverageTracks` of the collection.
    flexible
        Score the flanks between region and core with blended models (needs a core).
    geniml_quirks
        Reproduce geniml's end base (one past the region) and its per-chromosome background
        offset (module docstring); ``False`` for the corrected definitions.

    Returns
    -------
    float
        The sum over the three tracks and every base of the chromosomes the collection
        covers (and of any other chromosome a universe region is on).

    Examples
    --------
    >>> universe_likelihood(methods.hmm(cov), cov, flexible=True)  # doctest: +SKIP
    -2281602192.19...
    """
    df = read_universe(universe) if isinstance(universe, (str, os.PathLike)) else _universe_frame(universe)
    if flexible and "core_start" not in df:
        raise AtacformerError("the universe is not flexible (no core / thickStart-thickEnd columns): "
                              "use flexible=False")
    g = coverage.genome
    df = _check_regions(df, g, universe if isinstance(universe, (str, os.PathLike)) else "universe", False)
    by_chrom = {c: sub for c, sub in df.groupby("chrom", sort=False)}
    order = _chrom_order(by_chrom)
    total = 0.0
    prev_end = 0  # geniml's flexible likelihood carries it over chromosomes
    for chrom in coverage.chroms:  # the chromosomes the collection covers (those geniml's model has)
        if chrom not in by_chrom:
            for kind in ("start", "core", "end"):
                t = coverage.track(kind, chrom)
                total += float(_Scored(t, _model(t, coverage.n_files, geniml_quirks)).sum(0, t.length, 0))
    for chrom in order:
        sub = by_chrom[chrom].sort_values(["start", "end"], kind="stable")
        sc = {}
        for kind in ("start", "core", "end"):
            t = coverage.track(kind, chrom)
            sc[kind] = _Scored(t, _model(t, coverage.n_files, geniml_quirks))
        L = sc["core"].length
        s = sub["start"].to_numpy(np.int64)
        e = sub["end"].to_numpy(np.int64)
        if not flexible:
            last = e - 1 if not geniml_quirks else e
            for kind, (a, b) in (("start", (s, s + 1)), ("core", (s, e)), ("end", (last, last + 1))):
                prev = np.concatenate([[0], b[:-1]])
                x = sc[kind]
                total += float(x.sum(a, b, 1).sum() + x.sum(prev, a, 0).sum() + x.sum(b[-1], L, 0))
            continue
        cs = sub["core_start"].to_numpy(np.int64)
        ce = sub["core_end"].to_numpy(np.int64)
        first = prev_end if geniml_quirks else 0
        prev = np.concatenate([[first], e[:-1]])
        st, co, en = sc["start"], sc["core"], sc["end"]

        def bg(a, b):
            return st.sum(a, b, 0) + co.sum(a, b, 0) + en.sum(a, b, 0)

        res = bg(prev, s).sum() + bg(e[-1], L)
        res += (co.sum(cs, ce, 1) + st.sum(cs, ce, 0) + en.sum(cs, ce, 0)).sum()
        for a, b, proc, out, rev in ((s, cs, st, en, False), (ce, e, en, st, True)):
            n = b - a
            with np.errstate(divide="ignore", invalid="ignore"):
                ew = np.where(n > 0, 1 / np.where(n > 0, n, 1), 0.0)
            w1 = co.weighted(a, b, 1, rev)
            w0 = co.weighted(a, b, 0, rev)
            part = (ew * proc.sum(a, b, 1) + w1 + (1 - ew) * proc.sum(a, b, 0)
                    + (co.sum(a, b, 0) - w0) + out.sum(a, b, 0))
            res += np.where(n > 0, part, 0.0).sum()
        total += float(res)
        prev_end = int(e[-1])
    return total


# -- the assessment ------------------------------------------------------------------------
def _load_universe(universe):
    if isinstance(universe, (str, os.PathLike)):
        name = os.fspath(universe)
        df = read_universe(name)
    elif hasattr(universe, "regions"):
        name, df = "universe", universe.regions
    elif isinstance(universe, pd.DataFrame):
        name, df = "universe", universe
    else:
        raise TypeError(f"universe must be a BED path, a Universe or a DataFrame, not {type(universe).__name__}")
    missing = {"chrom", "start", "end"} - set(df.columns)
    if missing:
        raise InputFormatError(None, f"the universe table lacks column(s) {', '.join(sorted(missing))}")
    if not len(df):
        raise InputFormatError(name, "the universe has no regions")
    return name, df


def assess(universe, files, *, coverage=None, genome=None, likelihood: bool = True, clip: bool = False,
           geniml_quirks: bool = False, progress: bool | None = None) -> pd.DataFrame:
    """Assess how well a universe represents each region set of a collection.

    geniml's ``assess`` measures (Rymuza 2024) for every file: base-level overlap, precision,
    recall and F10, median boundary distances both ways and the RBS, and their flexible
    variants for a flexible universe; and the universe's likelihood given the collection.

    Parameters
    ----------
    universe
        A BED path (BED3, or BED9 with the core as thickStart / thickEnd for a flexible
        universe), a :class:`~atacformer.vocab.universe.methods.Universe`, or a DataFrame
        with ``chrom``, ``start``, ``end`` (and ``core_start``, ``core_end``).
    files
        BED / narrowPeak paths (gz or plain), one row each in the result. Each file's
        regions are merged first (``bedtools merge``, as geniml does).
    coverage
        :class:`~atacformer.vocab.universe.coverage.CoverageTracks` of the collection for
        the likelihood; ``None`` builds it from ``files``.
    genome
        A genome name or ``.chrom.sizes`` path the inputs must fit; default the coverage's,
        then the universe's, then the built-in genome every input fits.
    likelihood
        Compute the likelihood (``False`` skips it and the coverage).
    clip
        Cut regions that run past their chromosome's end instead of failing.
    geniml_quirks
        Reproduce geniml 0.8.4's numbers exactly, artefacts included (module docstring);
        default ``False``: the corrected definitions.
    progress
        Show a progress bar (default: when interactive).

    Returns
    -------
    pandas.DataFrame
        One row per file: ``file``, ``universe_only_bp``, ``file_only_bp``, ``both_bp``,
        ``precision``, ``recall``, ``f10``, ``median_dist_file_to_universe``,
        ``median_dist_universe_to_file``, ``rbs``, and for a flexible universe
        ``median_dist_file_to_universe_flex``, ``median_dist_universe_to_file_flex``,
        ``rbs_flex``. ``table.attrs`` holds the collection-level figures: ``likelihood``
        (and ``likelihood_flexible``), ``universe``, ``n_regions``, ``universe_bp``,
        ``flexible``, ``genome``, ``geniml_quirks``.

    Raises
    ------
    AtacformerError
        An empty file list.
    InputFormatError
        A missing or unreadable file, or a universe core outside its region.
    GenomeMismatchError
        A region on a chromosome outside the genome, or past a chromosome's end (without
        ``clip``); the message names the file, line and value.

    Examples
    --------
    >>> table = assess("universe.bed", ["a.narrowPeak.gz", "b.bed"], genome="hg38")  # doctest: +SKIP
    >>> table[["file", "f10", "rbs"]]  # doctest: +SKIP
    >>> summary(table)  # doctest: +SKIP
    """
    from atacformer.io.bed import read_bed
    from atacformer.vocab.universe.coverage import CoverageTracks, _common_genome

    paths = [os.fspath(p) for p in files]
    if not paths:
        raise AtacformerError("empty collection: give at least one BED file to assess the universe against")
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputFormatError(missing[0], f"no such file{more}")
    uname, udf = _load_universe(universe)
    flexible = "core_start" in udf.columns
    frames = [read_bed(p) for p in tqdm(paths, desc="reading BED files", unit=" files", leave=False,
                                        disable=progress is False if progress is not None else None)]
    if coverage is not None:
        g = coverage.genome
        if genome is not None and get_genome(genome).chrom_sizes != g.chrom_sizes:
            raise AtacformerError(f"genome {get_genome(genome).name} differs from the coverage's ({g.name})")
    elif genome is not None:
        g = get_genome(genome)
    elif getattr(universe, "genome", None) is not None:
        g = get_genome(universe.genome)
    else:
        g = _common_genome(frames + [udf[["chrom", "start", "end"]]], paths + [uname])
    udf = _check_regions(udf, g, uname, clip)
    if flexible:
        _check_core(udf, uname)
    frames = [_check_regions(df, g, p, clip) for df, p in zip(frames, paths)]
    u = _Intervals(udf, flexible, merge=False)
    rows = []
    for p, df in tqdm(list(zip(paths, frames)), desc="assessing", unit=" files", leave=False,
                      disable=progress is False if progress is not None else None):
        f = _Intervals(df, False, merge=True)
        u_only, f_only, both = _base_overlap(u, f)
        row = {"file": p, "universe_only_bp": u_only, "file_only_bp": f_only, "both_bp": both}
        for flex, suffix in ((False, ""), (True, "_flex")) if flexible else ((False, ""),):
            fu = _median_distance(f, u, flexible=flex, uni_to_file=False, quirks=geniml_quirks)
            uf = _median_distance(u, f, flexible=flex, uni_to_file=True, quirks=geniml_quirks)
            row[f"median_dist_file_to_universe{suffix}"] = fu
            row[f"median_dist_universe_to_file{suffix}"] = uf
        rows.append(row)
    table = pd.DataFrame(rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        table["precision"] = table["both_bp"] / (table["both_bp"] + table["universe_only_bp"])
        table["recall"] = table["both_bp"] / (table["both_bp"] + table["file_only_bp"])
    table["f10"] = f_score(table["precision"], table["recall"])
    table["rbs"] = rbs_score(table["median_dist_file_to_universe"], table["median_dist_universe_to_file"])
    cols = ["file", *OVERLAP_COLUMNS, "precision", "recall", "f10", *HARD_COLUMNS]
    if flexible:
        table["rbs_flex"] = rbs_score(table["median_dist_file_to_universe_flex"],
                                      table["median_dist_universe_to_file_flex"])
        cols += list(FLEX_COLUMNS)
    table = table[cols]
    table.attrs.update({"universe": uname, "n_regions": int(len(udf)), "universe_bp": u.bases(),
                        "flexible": flexible, "genome": g.name, "geniml_quirks": geniml_quirks})
    if likelihood:
        cov = coverage if coverage is not None else CoverageTracks.from_regions(
            frames, g, names=paths, progress=False)
        table.attrs["n_files_coverage"] = int(cov.n_files)
        table.attrs["likelihood"] = universe_likelihood(udf, cov, flexible=False, geniml_quirks=geniml_quirks)
        if flexible:
            table.attrs["likelihood_flexible"] = universe_likelihood(udf, cov, flexible=True,
                                                                  geniml_quirks=geniml_quirks)
    return table


def summary(table: pd.DataFrame) -> dict:
    """Collection-level figures of an :func:`assess` table.

    The means over files of precision, recall, F10, the median distances and the RBS
    (NaN entries left out, as geniml's ``*_from_assessment_file`` functions do; its
    ``get_f_10_score`` would be NaN if any file shared no base with the universe), and the
    likelihood(s), number of regions and bases of the universe from ``table.attrs`` when
    present.

    Examples
    --------
    >>> s = summary(assess(u, beds, genome="hg38"))  # doctest: +SKIP
    >>> s["f10"], s["rbs"], s["likelihood"]  # doctest: +SKIP
    """
    out = {"n_files": int(len(table))}
    for col in ("precision", "recall", "f10", *HARD_COLUMNS, *FLEX_COLUMNS):
        if col in table:
            out[col] = float(pd.to_numeric(table[col], errors="coerce").mean())
    for key in ("likelihood", "likelihood_flexible"):
        if key in table.attrs:
            out[key] = float(table.attrs[key])
    for key in ("n_regions", "universe_bp"):
        if key in table.attrs:
            out[key] = int(table.attrs[key])
    return out


def write_report(table: pd.DataFrame, path, *, overwrite: bool = False) -> Path:
    """Write an :func:`assess` table as TSV, through a temporary file and a rename.

    The collection-level figures of ``table.attrs`` (likelihood, universe, ...) come first
    as ``# key<TAB>value`` lines; read the file back with
    ``pandas.read_csv(path, sep="\\t", comment="#")``.

    Raises
    ------
    OutputError
        ``path`` exists and ``overwrite`` is not set, or is a folder.

    Examples
    --------
    >>> write_report(table, "assessment.tsv")  # doctest: +SKIP
    PosixPath('assessment.tsv')
    """
    path = Path(os.fspath(path))
    if path.is_dir():
        raise OutputError(f"{path} is a folder; name a .tsv file inside it")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            for k, v in table.attrs.items():
                f.write(f"# {k}\t{v}\n")
            table.to_csv(f, sep="\t", index=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path

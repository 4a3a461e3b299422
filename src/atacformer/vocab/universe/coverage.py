"""Coverage tracks of a collection of region sets, held as run lengths.

Three tracks per chromosome, as ``uniwig`` computes them for geniml (Rymuza 2024, the
consensus-universe paper behind the LeRoy 2025 dissertation, ch. 3):

- ``core``: at each base, the number of region sets whose regions cover it. Each set's
  regions are merged first, so a set counts once per base however many of its rows overlap.
- ``start``: at each base, the number of region starts within ``smooth`` bases of it (each
  start ``s`` adds 1 on ``[s - smooth, s + smooth]``).
- ``end``: the same for region ends (the last base ``e - 1`` of a half-open ``[s, e)``).

Identical rows of one set are counted once in every track. A track is stored as run
lengths (``pos``: where each run begins, ``val``: its value), never as a dense array the
length of a chromosome, so memory follows the number of region boundaries. Tracks are
written to and read from bigWig files (``PREFIX_start.bw``, ``PREFIX_core.bw``,
``PREFIX_end.bw``, the names geniml's universe builders read) with pyBigWig.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from atacformer.errors import AtacformerError, GenomeMismatchError, InputFormatError
from atacformer.genome import Genome, get_genome

log = logging.getLogger(__name__)

KINDS = ("start", "core", "end")
DEFAULT_SMOOTH = 25  # the window geniml's tutorial gives uniwig for region starts and ends


@dataclass
class Track:
    """One chromosome's coverage as run lengths.

    ``val[i]`` holds on ``[pos[i], pos[i + 1])`` (the last run up to ``length``); ``pos[0]``
    is 0 and neighbouring runs differ in value.
    """

    pos: np.ndarray
    val: np.ndarray
    length: int

    @classmethod
    def from_intervals(cls, starts: np.ndarray, ends: np.ndarray, length: int) -> "Track":
        """The number of ``[starts[i], ends[i])`` covering each base of ``[0, length)``."""
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        if not len(starts):
            return cls(np.zeros(1, np.int64), np.zeros(1, np.int32), int(length))
        at = np.concatenate([starts, ends])
        step = np.concatenate([np.ones(len(starts), np.int32), -np.ones(len(ends), np.int32)])
        order = np.argsort(at, kind="stable")
        at, step = at[order], step[order]
        level = np.cumsum(step, dtype=np.int32)
        last = np.ones(len(at), bool)
        last[:-1] = at[1:] != at[:-1]  # the level after all changes at one position
        at, level = at[last], level[last]
        pos = np.concatenate([[0], at])
        val = np.concatenate([[0], level]).astype(np.int32)
        keep = pos < length
        return cls._compact(pos[keep], val[keep], int(length))

    @classmethod
    def _compact(cls, pos, val, length) -> "Track":
        # several runs at one position (a change at 0): the last one holds
        last = np.ones(len(pos), bool)
        last[:-1] = pos[1:] != pos[:-1]
        pos, val = pos[last], val[last]
        new = np.ones(len(val), bool)
        new[1:] = val[1:] != val[:-1]
        return cls(pos[new].astype(np.int64), val[new].astype(np.int32), length)

    @classmethod
    def from_dense(cls, values: np.ndarray) -> "Track":
        v = np.asarray(values)
        if not len(v):
            return cls(np.zeros(1, np.int64), np.zeros(1, np.int32), 0)
        change = np.flatnonzero(v[1:] != v[:-1]) + 1
        pos = np.concatenate([[0], change])
        return cls(pos.astype(np.int64), v[pos].astype(np.int32), len(v))

    @property
    def run_ends(self) -> np.ndarray:
        return np.append(self.pos[1:], self.length)

    @property
    def widths(self) -> np.ndarray:
        return self.run_ends - self.pos

    def total(self) -> int:
        """The sum of the track over every base."""
        return int(np.dot(self.widths, self.val.astype(np.int64)))

    def dense(self, start: int = 0, end: int | None = None, dtype=np.int32) -> np.ndarray:
        """Per-base values on ``[start, end)`` (only for the stretches a method works on)."""
        end = self.length if end is None else end
        i0 = np.searchsorted(self.pos, start, side="right") - 1
        i1 = np.searchsorted(self.pos, end, side="left")
        p = np.clip(self.pos[i0:i1], start, end)
        e = np.clip(np.append(self.pos[i0 + 1:i1], end), start, end)
        return np.repeat(self.val[i0:i1].astype(dtype), e - p)

    def intervals(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Maximal stretches of runs where ``keep`` (one bool per run) holds."""
        keep = np.asarray(keep, bool)
        k = np.concatenate([[False], keep, [False]])
        first = np.flatnonzero(k[1:-1] & ~k[:-2])
        last = np.flatnonzero(k[1:-1] & ~k[2:])
        return self.pos[first], self.run_ends[last]

    def value_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct values and the number of bases holding each (ascending values)."""
        vals, inv = np.unique(self.val, return_inverse=True)
        return vals, np.bincount(inv, weights=self.widths, minlength=len(vals)).astype(np.int64)


@dataclass
class CoverageTracks:
    """Start, core and end coverage of a collection over a genome.

    Build with :meth:`from_beds` (or :meth:`from_regions`), save with :meth:`write_bigwig`,
    load with :meth:`read_bigwig`. ``tracks[kind][chrom]`` is a :class:`Track`; chromosomes no
    region touches are absent.

    Examples
    --------
    >>> cov = CoverageTracks.from_beds(["a.bed", "b.bed"], genome="hg38")  # doctest: +SKIP
    >>> cov.track("core", "chr1").dense(10_000, 10_010)  # doctest: +SKIP
    """

    genome: Genome
    n_files: int
    smooth: int = DEFAULT_SMOOTH
    tracks: dict = field(default_factory=lambda: {k: {} for k in KINDS})
    files: list = field(default_factory=list)

    @property
    def chroms(self) -> list[str]:
        """Chromosomes with coverage, in genome order."""
        return [c for c in self.genome.chroms if c in self.tracks["core"]]

    def track(self, kind: str, chrom: str) -> Track:
        if kind not in KINDS:
            raise ValueError(f"unknown track {kind!r}: one of {', '.join(KINDS)}")
        t = self.tracks[kind].get(chrom)
        if t is None:
            t = Track(np.zeros(1, np.int64), np.zeros(1, np.int32), self.genome.length(chrom))
        return t

    def mean_coverage(self, kind: str = "core", chrom: str | None = None) -> float:
        """Mean per-base value over one chromosome, or over the whole genome."""
        if chrom is not None:
            t = self.track(kind, chrom)
            return t.total() / t.length
        total = sum(self.track(kind, c).total() for c in self.chroms)
        return total / sum(self.genome.chrom_sizes.values())

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_regions(cls, region_sets, genome, *, smooth: int = DEFAULT_SMOOTH, names=None, clip: bool = False,
                     progress: bool | None = None) -> "CoverageTracks":
        """Tracks of region sets given as DataFrames with ``chrom``, ``start``, ``end``.

        A region past its chromosome's end is an error naming it, or with ``clip=True`` is cut
        at the end (peak callers' extended peaks can overhang a chromosome by a few bases).
        """
        g = get_genome(genome)
        region_sets = list(region_sets)
        if not region_sets:
            raise AtacformerError("empty collection: give at least one region set")
        names = list(names) if names is not None else [f"set {i + 1}" for i in range(len(region_sets))]
        chroms = g.chroms
        per_chrom: dict[int, dict[str, list]] = {}
        for df, name in tqdm(list(zip(region_sets, names)), desc="reading region sets", unit=" sets",
                             disable=progress is False if progress is not None else None, leave=False):
            code, s, e = _coded(df, g, name, clip)
            order = np.lexsort((e, s, code))
            code, s, e = code[order], s[order], e[order]
            dup = np.zeros(len(s), bool)  # identical rows of one set count once
            dup[1:] = (code[1:] == code[:-1]) & (s[1:] == s[:-1]) & (e[1:] == e[:-1])
            code, s, e = code[~dup], s[~dup], e[~dup]
            bounds = np.searchsorted(code, np.arange(len(chroms) + 1))
            for ci in np.flatnonzero(np.diff(bounds)):
                cs, ce = s[bounds[ci]:bounds[ci + 1]], e[bounds[ci]:bounds[ci + 1]]
                L = g.chrom_sizes[chroms[ci]]
                d = per_chrom.setdefault(int(ci), {k: [] for k in KINDS})
                d["core"].append(merge_intervals(cs, ce, presorted=True))
                d["start"].append((np.maximum(cs - smooth, 0), np.minimum(cs + smooth + 1, L)))
                d["end"].append((np.maximum(ce - 1 - smooth, 0), np.minimum(ce + smooth, L)))
        out = cls(genome=g, n_files=len(region_sets), smooth=smooth, files=names)
        for ci in sorted(per_chrom):
            chrom = chroms[ci]
            for kind in KINDS:
                parts = per_chrom[ci][kind]
                s = np.concatenate([p[0] for p in parts])
                e = np.concatenate([p[1] for p in parts])
                out.tracks[kind][chrom] = Track.from_intervals(s, e, g.chrom_sizes[chrom])
            del per_chrom[ci]
        return out

    @classmethod
    def from_beds(cls, paths, genome=None, *, smooth: int = DEFAULT_SMOOTH, clip: bool = False,
                  progress: bool | None = None) -> "CoverageTracks":
        """Tracks of BED / narrowPeak files (gz or plain).

        ``genome`` (a name or a ``.chrom.sizes`` path) is checked against every file; when it
        is ``None`` the built-in genome that every file fits is used, and files that fit no
        common genome are an error naming them.
        """
        from atacformer.io.bed import read_bed

        paths = [os.fspath(p) for p in paths]
        if not paths:
            raise AtacformerError("empty collection: give at least one BED file")
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: no such file")
        frames = [read_bed(p) for p in tqdm(paths, desc="reading BED files", unit=" files",
                                            disable=progress is False if progress is not None else None,
                                            leave=False)]
        g = get_genome(genome) if genome is not None else _common_genome(frames, paths)
        return cls.from_regions(frames, g, smooth=smooth, names=paths, clip=clip, progress=False)

    # -- bigWig -------------------------------------------------------------------------
    def write_bigwig(self, folder, prefix: str = "all") -> dict[str, Path]:
        """Write ``PREFIX_{start,core,end}.bw`` into ``folder`` (each through a temporary
        name and a rename); zero runs are left out, as bigWig readers report them as gaps.

        The header lists only the chromosomes with coverage: geniml's builders stop with an
        error on a chromosome that has none."""
        import pyBigWig

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        header = [(c, self.genome.chrom_sizes[c]) for c in self.chroms]
        out = {}
        for kind in KINDS:
            path = folder / f"{prefix}_{kind}.bw"
            tmp = folder / f".{prefix}_{kind}.bw.tmp"
            try:
                bw = pyBigWig.open(os.fspath(tmp), "w")
                bw.addHeader(header, maxZooms=10)
                for c in self.chroms:
                    t = self.track(kind, c)
                    nz = t.val != 0
                    if nz.any():
                        bw.addEntries([c] * int(nz.sum()), t.pos[nz].tolist(),
                                      ends=t.run_ends[nz].tolist(), values=t.val[nz].astype(float).tolist())
                bw.close()
                os.replace(tmp, path)
            finally:
                if tmp.exists():
                    tmp.unlink()
            out[kind] = path
        return out

    @classmethod
    def read_bigwig(cls, folder, prefix: str = "all", *, n_files: int, genome=None,
                    smooth: int = DEFAULT_SMOOTH) -> "CoverageTracks":
        """Read tracks written by :meth:`write_bigwig` (or by ``uniwig``)."""
        import pyBigWig

        folder = Path(folder)
        g = None
        out = None
        for kind in KINDS:
            path = folder / f"{prefix}_{kind}.bw"
            if not path.exists():
                raise FileNotFoundError(f"{path}: no such file")
            bw = pyBigWig.open(os.fspath(path))
            if out is None:
                g = get_genome(genome) if genome is not None else Genome(os.fspath(path), dict(bw.chroms()))
                out = cls(genome=g, n_files=int(n_files), smooth=smooth)
            for c, L in bw.chroms().items():
                iv = bw.intervals(c) or []
                if not iv:
                    continue
                a = np.asarray(iv, dtype=np.float64)
                s, e, v = a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), np.rint(a[:, 2]).astype(np.int32)
                # runs between entries are zero
                pos = np.concatenate([[0], np.column_stack([s, e]).ravel()])
                val = np.concatenate([[0], np.column_stack([v, np.zeros_like(v)]).ravel()])
                keep = pos < L
                from atacformer.genome import normalize_chrom

                out.tracks[kind][normalize_chrom(c)] = Track._compact(pos[keep], val[keep], int(L))
            bw.close()
        return out


def merge_intervals(starts: np.ndarray, ends: np.ndarray, presorted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Merge overlapping or touching half-open intervals (bedtools merge)."""
    if not len(starts):
        return starts, ends
    if presorted:
        s, e = starts, ends
    else:
        order = np.lexsort((ends, starts))
        s, e = starts[order], ends[order]
    reach = np.maximum.accumulate(e)
    new = np.ones(len(s), bool)
    new[1:] = s[1:] > reach[:-1]
    idx = np.flatnonzero(new)
    last = np.append(idx[1:], len(s)) - 1
    return s[idx], reach[last]


def _bad_chrom_line(path, chrom: str) -> int | None:
    """1-based line of the first region on ``chrom`` (for the error message)."""
    from atacformer.genome import normalize_chrom
    from atacformer.io._text import open_binary

    if path is None or not os.path.exists(os.fspath(path)):
        return None
    with open_binary(path, threads=0) as f:
        for i, line in enumerate(f, 1):
            field = line.split(b"\t", 1)[0].decode(errors="replace").strip()
            if field and normalize_chrom(field) == chrom:
                return i
    return None


def _coded(df: pd.DataFrame, g: Genome, name, clip: bool, rows: bool = False):
    """Chromosome codes (genome order), starts and ends of one region set, checked.

    Regions on unplaced / alternative contigs (``chrUn_*``, ``*_random``, ``*_alt``, chrM...)
    the genome lacks are dropped, as the tokenizer does; any other unknown chromosome is an
    error naming the file, line and value. A region past its chromosome's end is an error,
    or with ``clip`` is cut at the end. With ``rows``, the positions of the kept rows in
    ``df`` come fourth.
    """
    from atacformer.genome import is_contig

    path = name if isinstance(name, (str, os.PathLike)) and os.path.exists(os.fspath(name)) else None
    cat = pd.Categorical(df["chrom"], categories=g.chroms)
    code = cat.codes.astype(np.int64)
    s = df["start"].to_numpy(np.int64)
    e = df["end"].to_numpy(np.int64)
    kept = np.arange(len(df))
    if (code < 0).any():
        unknown = pd.unique(df["chrom"].to_numpy()[code < 0])
        bad = [c for c in unknown if not is_contig(c)]
        if bad:
            raise GenomeMismatchError(path if path else name, f"chromosome outside genome {g.name}",
                                      line=_bad_chrom_line(path, bad[0]), value=bad[0])
        log.info("%s: %d regions on %d contigs outside genome %s dropped", name, int((code < 0).sum()),
                 len(unknown), g.name)
        keep = code >= 0
        code, s, e, kept = code[keep], s[keep], e[keep], kept[keep]
    L = np.array([g.chrom_sizes[c] for c in g.chroms], np.int64)[code]
    past = e > L
    if past.any():
        if not clip:
            i = int(np.flatnonzero(past)[0])
            c = g.chroms[code[i]]
            raise GenomeMismatchError(path if path else name,
                                      f"region ends past its chromosome ({g.chrom_sizes[c]:,} bp) in genome {g.name}",
                                      value=f"{c}:{s[i]}-{e[i]}")
        log.info("%s: %d regions cut at their chromosome's end", name, int(past.sum()))
        e = np.minimum(e, L)
        keep = s < e
        code, s, e, kept = code[keep], s[keep], e[keep], kept[keep]
    return (code, s, e, kept) if rows else (code, s, e)


def _common_genome(frames, paths) -> Genome:
    from atacformer.genome._genome import BUILTIN_GENOMES
    from atacformer.genome import is_contig

    fits = []
    for df in frames:
        ok = set()
        ends = df.groupby("chrom")["end"].max()
        ends = ends[[not is_contig(c) for c in ends.index]]
        for name in BUILTIN_GENOMES:
            g = get_genome(name)
            if all(c in g.chrom_sizes and e <= g.chrom_sizes[c] for c, e in ends.items()):
                ok.add(name)
        fits.append(ok)
    common = set.intersection(*fits)
    if common:
        return get_genome([n for n in BUILTIN_GENOMES if n in common][0])
    desc = "; ".join(f"{p}: {' or '.join(sorted(f)) or 'no built-in genome'}" for p, f in zip(paths, fits))
    raise InputFormatError(paths[0], f"the BED files do not fit one genome ({desc}); pass the genome "
                                     "(a name or a .chrom.sizes file) and keep one assembly per collection")

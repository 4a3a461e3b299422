"""DNA features of every region of a vocabulary: k-mer composition, TF motif scores, and
embeddings of a pluggable DNA language model.

The sequence comes from an indexed genome FASTA (plain, or bgzip with ``.fai`` and
``.gzi``, as ``samtools faidx`` makes), read one chromosome span at a time.
Soft-masked (lower-case) bases count as upper-case; any letter other than ``ACGT`` (``N``)
breaks k-mers and motif windows: a k-mer or window holding one is not counted.

* k-mers: counts of canonical k-mers (a k-mer and its reverse complement are one feature),
  divided by the region's number of counted k-mers (frequencies).
* motifs: JASPAR CORE vertebrate matrices (Castro-Mondragon 2022 JASPAR; Rauluseviciute 2024
  JASPAR), shipped offline by pyjaspar. Each count matrix becomes a position weight matrix
  with pseudocounts and a log2-odds matrix against a uniform background exactly as
  ``motif.counts.normalize(pseudocounts).log_odds()`` of Bio.motifs (Cock 2009 Biopython);
  per region the maximum window score over both strands (``motif_max``) and the number of
  windows, both strands, whose score reaches the threshold of p-value ``pvalue`` under the
  background (``motif_count``; the threshold is Bio.motifs'
  ``pssm.distribution(precision=1000).threshold_fpr(pvalue)``, a dynamic programme over
  the discretised score distribution, as FIMO, Grant 2011).
* encoder: any object with ``encode(sequences) -> (n, d)`` (:class:`DNAEncoder`), e.g.
  :class:`HFEncoder` on a local Hugging Face checkpoint (Nucleotide Transformer,
  Dalla-Torre 2024).

Examples
--------
>>> from atacformer.vocab import Vocabulary
>>> from atacformer.vocab.dna import region_features, dna_table
>>> v = Vocabulary.from_bed("universe.bed.gz")                    # doctest: +SKIP
>>> feats = region_features(v, "hg38.fa.gz", kmers=(4, 5, 6))     # doctest: +SKIP
>>> np.save("dna.npy", dna_table(feats))                          # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from atacformer.errors import GenomeMismatchError, InputFormatError, InputMissingError
from atacformer.genome import normalize_chroms

__all__ = ["DNAEncoder", "HFEncoder", "MotifSet", "canonical_kmers", "dna_table", "encode_bases",
           "kmer_frequencies", "load_jaspar", "read_regions", "region_features", "scan_motifs"]

_LUT = np.full(256, 4, dtype=np.uint8)
for _i, _b in enumerate("ACGT"):
    _LUT[ord(_b)] = _i
    _LUT[ord(_b.lower())] = _i


# --------------------------------------------------------------------------------------------
# sequences
def encode_bases(seq) -> np.ndarray:
    """2-bit codes of a sequence: ``A C G T`` (either case) = ``0 1 2 3``, anything else 4.

    Examples
    --------
    >>> encode_bases("ACgtN").tolist()
    [0, 1, 2, 3, 4]
    """
    if isinstance(seq, str):
        seq = seq.encode("ascii", "replace")
    return _LUT[np.frombuffer(seq, dtype=np.uint8)]


def _check_fasta(path) -> None:
    p = Path(os.fspath(path))
    if not p.is_file():
        raise InputMissingError(p, "genome FASTA not found")
    with open(p, "rb") as f:
        head = f.read(4)
    if not Path(str(p) + ".fai").is_file():
        raise InputFormatError(p, "the FASTA has no index: run `samtools faidx` on it (expected "
                               f"{p.name}.fai next to it)", value=str(p) + ".fai")
    if head[:2] == b"\x1f\x8b":
        if head[3:4] != b"\x04":  # BGZF sets FEXTRA
            raise InputFormatError(p, "the FASTA is gzip- but not bgzip-compressed: recompress it with "
                                   "`bgzip` and index it with `samtools faidx`")
        if not Path(str(p) + ".gzi").is_file():
            raise InputFormatError(p, "the bgzip FASTA has no block index: run `samtools faidx` on it "
                                   f"(expected {p.name}.gzi next to it)", value=str(p) + ".gzi")


class _IndexedFasta:
    """Random access to a ``samtools faidx``-indexed FASTA, plain or bgzip (``.gzi``).

    Reads the region's bytes only: for bgzip, the ``.gzi`` block index gives the compressed
    block holding the first byte (pyfaidx 0.8 instead reads bgzip records from their start on
    every fetch and takes samtools' uncompressed ``.fai`` offsets for virtual offsets).
    """

    def __init__(self, path):
        self.path = Path(os.fspath(path))
        _check_fasta(self.path)
        try:
            fai = pd.read_csv(str(self.path) + ".fai", sep="\t", header=None, usecols=[0, 1, 2, 3, 4],
                              dtype={0: str})
        except Exception as e:
            raise InputFormatError(str(self.path) + ".fai", f"not a FASTA index: {e}") from None
        self.index = {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in fai.itertuples(index=False)}
        with open(self.path, "rb") as f:
            self.bgzf = f.read(2) == b"\x1f\x8b"
        if self.bgzf:
            raw = np.fromfile(str(self.path) + ".gzi", dtype="<u8")
            if len(raw) < 1 or len(raw) != 1 + 2 * int(raw[0]):
                raise InputFormatError(str(self.path) + ".gzi", "not a bgzip block index")
            pairs = raw[1:].reshape(-1, 2).astype(np.int64)
            self._coff = np.r_[0, pairs[:, 0]]
            self._uoff = np.r_[0, pairs[:, 1]]

    def keys(self):
        return list(self.index)

    def length(self, name) -> int:
        return self.index[name][0]

    def _read(self, u0: int, n: int) -> bytes:
        if not self.bgzf:
            with open(self.path, "rb") as f:
                f.seek(u0)
                return f.read(n)
        from Bio import bgzf

        b = int(np.searchsorted(self._uoff, u0, side="right")) - 1
        with bgzf.BgzfReader(os.fspath(self.path), "rb") as f:
            f.seek(bgzf.make_virtual_offset(int(self._coff[b]), int(u0 - self._uoff[b])))
            return f.read(n)

    def fetch(self, name, start: int, end: int) -> bytes:
        """Bases ``[start, end)`` (0-based) of sequence ``name``, as stored (case kept)."""
        if end <= start:
            return b""
        _, off, lb, lw = self.index[name]
        b0 = off + (start // lb) * lw + start % lb
        b1 = off + ((end - 1) // lb) * lw + (end - 1) % lb + 1
        raw = self._read(b0, b1 - b0)
        seq = raw.replace(b"\n", b"").replace(b"\r", b"")
        if len(seq) != end - start:
            raise InputFormatError(self.path, f"truncated sequence {name}:{start}-{end} (the index does not match "
                                   "the file)")
        return seq


def _open_fasta(path) -> _IndexedFasta:
    return _IndexedFasta(path)


def read_regions(regions) -> pd.DataFrame:
    """``chrom`` (UCSC-style names), ``start``, ``end`` of a :class:`~atacformer.vocab.Vocabulary`,
    a DataFrame with those columns, or a BED file / vocabulary folder path.

    Examples
    --------
    >>> read_regions(pd.DataFrame({"chrom": ["22"], "start": [0], "end": [10]}))
       chrom  start  end
    0  chr22      0   10
    """
    from atacformer.vocab import Vocabulary

    if isinstance(regions, (str, os.PathLike)):
        p = Path(os.fspath(regions))
        regions = Vocabulary.load(p) if p.is_dir() else Vocabulary.from_bed(p)
    if isinstance(regions, Vocabulary):
        return pd.DataFrame({"chrom": regions.chroms, "start": regions.starts, "end": regions.ends})
    if isinstance(regions, pd.DataFrame):
        missing = {"chrom", "start", "end"} - set(regions.columns)
        if missing:
            raise ValueError(f"regions DataFrame lacks columns {sorted(missing)}")
        df = pd.DataFrame({"chrom": normalize_chroms(regions["chrom"].astype(str).to_numpy()),
                           "start": regions["start"].to_numpy(np.int64),
                           "end": regions["end"].to_numpy(np.int64)})
        if (df["end"] < df["start"]).any() or (df["start"] < 0).any():
            i = int(np.flatnonzero((df["end"] < df["start"]) | (df["start"] < 0))[0])
            raise ValueError(f"region {i} is not a valid interval: {df.iloc[i].tolist()}")
        return df
    raise TypeError(f"regions must be a Vocabulary, a DataFrame or a path, not {type(regions).__name__}")


def _chrom_spans(fa, path, df: pd.DataFrame):
    """Check the regions against the FASTA, then yield ``(rows, codes, rel_starts, rel_ends)``
    per chromosome, ``codes`` covering ``[min start, max end)`` of its regions."""
    names, groups, chroms = _check_in_fasta(fa, path, df)
    for c in chroms:
        rows = np.asarray(groups[c])
        s = df["start"].to_numpy()[rows]
        e = df["end"].to_numpy()[rows]
        lo, hi = int(s.min()), int(e.max())
        codes = encode_bases(fa.fetch(names[c], lo, hi))
        yield rows, codes, (s - lo).astype(np.int64), (e - lo).astype(np.int64)


def _check_in_fasta(fa, path, df: pd.DataFrame):
    """Refuse regions on a chromosome the FASTA lacks or ending past its sequence; return
    ``(UCSC name -> FASTA name, chrom -> row indices, chromosomes in order)``."""
    names = {}
    for k in fa.keys():
        names.setdefault(str(normalize_chroms([k])[0]), k)
    chroms = pd.unique(df["chrom"].to_numpy())
    absent = [c for c in chroms if c not in names]
    if absent:
        raise GenomeMismatchError(path, f"{len(absent)} region chromosome(s) are not in the FASTA, "
                                  f"which has {sorted(names)[:5]}{'...' if len(names) > 5 else ''}",
                                  value=absent[0])
    groups = df.groupby("chrom", sort=False).indices
    for c in chroms:
        rows = np.asarray(groups[c])
        n = fa.length(names[c])
        ends = df["end"].to_numpy()[rows]
        if ends.max() > n:
            i = rows[int(np.argmax(ends))]
            raise GenomeMismatchError(path, f"region {c}:{df['start'].iat[i]}-{df['end'].iat[i]} ends past "
                                      f"the FASTA sequence {names[c]} ({n:,} bp)", value=int(df["end"].iat[i]))
    return names, groups, chroms


# --------------------------------------------------------------------------------------------
# k-mers
def canonical_kmers(k: int) -> tuple[np.ndarray, list[str]]:
    """Column of every k-mer code (big-endian 2-bit) among the canonical k-mers, and their names.

    A k-mer and its reverse complement share the column named after the lexicographically
    smaller of the two.

    Examples
    --------
    >>> col, names = canonical_kmers(2)
    >>> len(names), names[:4], int(col[0b0011])   # AT (code 3) is its own reverse complement
    (10, ['AA', 'AC', 'AG', 'AT'], 3)
    """
    n = 4 ** k
    codes = np.arange(n, dtype=np.int64)
    rc = np.zeros(n, dtype=np.int64)
    x = codes.copy()
    for _ in range(k):
        rc = (rc << 2) | (3 - (x & 3))
        x >>= 2
    canon = np.minimum(codes, rc)
    uniq, col = np.unique(canon, return_inverse=True)
    letters = np.array(list("ACGT"))
    digits = (uniq[:, None] >> (2 * np.arange(k - 1, -1, -1))[None, :]) & 3
    names = ["".join(r) for r in letters[digits]]
    return col.astype(np.int64), names


def kmer_frequencies(codes: np.ndarray, starts, ends, k: int, block: int = 20_000_000) -> np.ndarray:
    """Canonical k-mer frequencies of the regions ``codes[starts[i]:ends[i]]`` (float32,
    ``(n_regions, n_canonical)``); rows of regions without any counted k-mer are 0.

    Vectorised: rolling codes over the whole array, one ``np.bincount`` of
    ``region * n_cols + column`` per block of regions.

    Examples
    --------
    >>> f = kmer_frequencies(encode_bases("AAAAT"), [0], [5], 2)
    >>> float(f[0, 0]), float(f[0, 3])   # AA (3 of 4), AT (1 of 4)
    (0.75, 0.25)
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    col, names = canonical_kmers(k)
    n_cols = len(names)
    n = len(codes)
    out = np.zeros((len(starts), n_cols), dtype=np.float32)
    if n < k or len(starts) == 0:
        return out
    c = codes.astype(np.int64)
    bad = c > 3
    c[bad] = 0
    m = n - k + 1
    code = np.zeros(m, dtype=np.int64)
    for j in range(k):
        code = (code << 2) | c[j:j + m]
    badp = np.concatenate([[0], np.cumsum(bad, dtype=np.int64)])
    valid = (badp[k:k + m] - badp[:m]) == 0
    kcol = np.where(valid, col[code], -1)
    nwin = np.maximum(ends - starts - k + 1, 0)
    per = max(1, block // n_cols)
    for b0 in range(0, len(starts), per):
        b1 = min(len(starts), b0 + per)
        w = nwin[b0:b1]
        tot = int(w.sum())
        if tot == 0:
            continue
        reg = np.repeat(np.arange(b1 - b0, dtype=np.int64), w)
        first = np.repeat(starts[b0:b1] - np.concatenate([[0], np.cumsum(w)[:-1]]), w)
        pos = first + np.arange(tot, dtype=np.int64)
        kc = kcol[pos]
        keep = kc >= 0
        counts = np.bincount(reg[keep] * n_cols + kc[keep], minlength=(b1 - b0) * n_cols)
        counts = counts.reshape(b1 - b0, n_cols).astype(np.float32)
        s = counts.sum(axis=1, keepdims=True)
        out[b0:b1] = np.divide(counts, s, out=np.zeros_like(counts), where=s > 0)
    return out


# --------------------------------------------------------------------------------------------
# motifs
@dataclass
class MotifSet:
    """Log-odds matrices (``(L, 4)`` float64, columns A C G T) and score thresholds of motifs.

    Build with :meth:`from_jaspar` or :meth:`from_bio`.
    """

    ids: list[str]
    names: list[str]
    pssms: list[np.ndarray]
    pvalue: float
    thresholds: np.ndarray
    _tables: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.ids)

    def scan_tables(self) -> tuple:
        """The arrays the scanning kernel reads (block score tables, their order, the
        stacked matrices), built on first use and kept: a set scanned over many chromosomes
        or region sets builds them once."""
        if self._tables is None:
            self._tables = _motif_arrays(self.pssms, self.thresholds)
        return self._tables

    @classmethod
    def from_bio(cls, motifs, pvalue: float = 1e-4, pseudocounts="jaspar", precision: int = 1000) -> "MotifSet":
        """From ``Bio.motifs`` motifs (with ``counts``): PSSM ``counts.normalize(pseudocounts)
        .log_odds()`` (uniform background) and the threshold of ``pssm.distribution(precision)
        .threshold_fpr(pvalue)``, computed identically but compiled.

        ``pseudocounts="jaspar"`` is ``Bio.motifs.jaspar.calculate_pseudocounts`` (0.25 x the
        square root of the number of sites, per base); a number is used for every base.
        """
        from Bio.motifs import jaspar as bj

        from atacformer.vocab import _dna_kernels as K

        ids, names, pssms, diffs, npts, start0, mins, steps = [], [], [], [], [], [], [], []
        for mot in motifs:
            pc = bj.calculate_pseudocounts(mot) if pseudocounts == "jaspar" else pseudocounts
            pssm = mot.counts.normalize(pseudocounts=pc).log_odds()
            L = pssm.length
            M = np.array([[pssm[a][i] for a in "ACGT"] for i in range(L)], dtype=np.float64)
            if not np.isfinite(M).all():
                raise ValueError(f"motif {getattr(mot, 'matrix_id', mot.name)}: infinite log-odds; "
                                 "use positive pseudocounts")
            # Bio.motifs.thresholds.ScoreDistribution(pssm=..., precision) set-up, verbatim
            mn, mx = pssm.min, pssm.max
            min_score = min(0.0, mn)
            interval = max(0.0, mx) - min_score
            n_points = precision * L
            step = interval / (n_points - 1)
            d = np.array([[int((M[i, a] - 0.0 + 0.5 * step) // step) for a in range(4)] for i in range(L)],
                         dtype=np.int64)
            ids.append(str(getattr(mot, "matrix_id", None) or mot.name))
            names.append(str(mot.name))
            pssms.append(M)
            diffs.append(d)
            npts.append(n_points)
            start0.append(-int((min_score - 0.0 + 0.5 * step) // step))
            mins.append(min_score)
            steps.append(step)
        n = len(pssms)
        idx = np.zeros(n, dtype=np.int64)
        if n:
            lengths = np.array([len(p) for p in pssms], dtype=np.int64)
            off = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            K.fpr_thresholds(np.concatenate(diffs), off, lengths, np.array(npts, dtype=np.int64),
                             np.array(start0, dtype=np.int64), float(pvalue), idx)
        thr = np.array([mins[m] + int(idx[m]) * steps[m] for m in range(n)], dtype=np.float64)
        return cls(ids, names, pssms, float(pvalue), thr)

    @classmethod
    def from_jaspar(cls, release: str = "JASPAR2024", collection: str = "CORE", tax_group=("vertebrates",),
                    pvalue: float = 1e-4, pseudocounts="jaspar") -> "MotifSet":
        """The latest version of every matrix of a JASPAR collection (offline, via pyjaspar).

        Examples
        --------
        >>> ms = MotifSet.from_jaspar("JASPAR2024")          # doctest: +SKIP
        >>> len(ms), ms.ids[0]                                # doctest: +SKIP
        (879, 'MA0004.1')
        """
        return cls.from_bio(load_jaspar(release, collection, tax_group), pvalue=pvalue, pseudocounts=pseudocounts)


def load_jaspar(release: str = "JASPAR2024", collection: str = "CORE", tax_group=("vertebrates",)) -> list:
    """Bio.motifs JASPAR motifs of a pyjaspar release (no network), sorted by matrix id."""
    from pyjaspar import jaspardb

    try:
        jdb = jaspardb(release=release)
    except Exception as e:
        raise ValueError(f"unknown JASPAR release {release!r}: {e}") from None
    motifs = jdb.fetch_motifs(collection=collection, tax_group=list(tax_group))
    return sorted(motifs, key=lambda m: m.matrix_id)


#: bases of the regions every motif scans before the next (their 5-mer index stays in cache
#: while each motif's tables are read once per group)
GROUP_BASES = 50_000


def _motif_arrays(pssms, thresholds=None):
    """What the scanning kernel reads: every motif's forward and reverse-complement rows
    stacked (float64), and each matrix cut into blocks of up to 5 columns with a float32
    table of every block's scores, the most selective block first and its more selective
    neighbour second (see
    :func:`atacformer.vocab._dna_kernels.scan_motifs`)."""
    from atacformer.vocab._dna_kernels import CHUNK as K

    rows, off, lens = [], [], []
    tabs, g_col, g_shift, g_tab, g_rest, q_first, q_n, q_after = [], [], [], [], [], [], [], []
    orders, ranked, g_order = [], [], []
    n = n_tab = n_order = 0
    for m, M in enumerate(pssms):
        L = len(M)
        # a window can lose at most `slack` against the motif's best score and still be a hit
        slack = float(M.max(axis=1).sum() - thresholds[m]) if thresholds is not None else np.inf
        off.append(n)
        lens.append(L)
        n += 2 * L
        for mat in (M, M[::-1, ::-1]):  # reverse complement: reversed rows, A<->T, C<->G
            rows.append(mat)
            blocks = []
            for c0 in range(0, L, K):
                sub = mat[c0:c0 + K]
                w = len(sub)
                codes = np.arange(4 ** w)
                t = np.zeros(4 ** w)
                for j in range(w):
                    t = t + sub[j][(codes >> (2 * (w - 1 - j))) & 3]
                # the share of the block's w-mers that can still make a hit: the fewer, the more
                # windows the block drops (then the larger spread first)
                share = float(np.mean(t >= t.max() - slack)) if np.isfinite(slack) else 1.0
                blocks.append(((share, -float(t.max() - t.min())), c0, 2 * (K - w), t))
            blocks.sort(key=lambda x: x[0])  # the block that drops most windows first
            after = True
            if len(blocks) == 1:  # the first test reads two blocks: a second one that adds 0
                blocks.append(((1.0, 0.0), 0, 0, np.zeros(4 ** K)))
            else:  # second: the more selective neighbour of the first (the index stores its code)
                c1 = blocks[0][1]
                nbr = next(i for i in range(1, len(blocks)) if abs(blocks[i][1] - c1) == K)
                blocks.insert(1, blocks.pop(nbr))
                after = blocks[1][1] > c1
            q_after.append(after)
            q_first.append(len(g_col))
            q_n.append(len(blocks))
            best = [float(t.max()) for *_, t in blocks]
            for i, (_, c0, sh, t) in enumerate(blocks):
                g_col.append(c0)
                g_shift.append(sh)
                g_tab.append(n_tab)
                g_rest.append(sum(best[i + 1:]))
                t32 = t.astype(np.float32)
                tabs.append(t32)
                n_tab += len(t)
                g_order.append(n_order)
                if i == 0:  # the first block's codes from the highest score down, with their scores
                    o = np.argsort(-t32, kind="stable")
                    orders.append(o.astype(np.uint16))
                    ranked.append(t32[o])
                    n_order += len(t)
    i64 = lambda x: np.array(x, dtype=np.int64)  # noqa: E731
    mats = np.ascontiguousarray(np.concatenate(rows)) if rows else np.zeros((0, 4))
    tab = np.concatenate(tabs) if tabs else np.zeros(0, dtype=np.float32)
    order = np.concatenate(orders) if orders else np.zeros(0, dtype=np.uint16)
    ranked = np.concatenate(ranked) if ranked else np.zeros(0, dtype=np.float32)
    return (mats, i64(off), i64(lens), tab, order, ranked, i64(g_col), i64(g_shift), i64(g_tab), np.array(g_rest),
            i64(g_order), i64(q_first), i64(q_n), np.array(q_after, dtype=np.bool_))


def scan_motifs(codes: np.ndarray, starts, ends, motifs: MotifSet) -> tuple[np.ndarray, np.ndarray]:
    """Max log-odds score (float32, NaN without a full ACGT window) and the number of windows
    scoring at least the motif's threshold, both strands, of every region ``codes[s:e]`` and
    motif: two ``(n_regions, n_motifs)`` arrays.

    Examples
    --------
    >>> ms = MotifSet.from_jaspar()                                               # doctest: +SKIP
    >>> mx, cnt = scan_motifs(encode_bases("ACGTGACTCAGCA" * 10), [0], [130], ms)  # doctest: +SKIP
    """
    from atacformer.vocab import _dna_kernels as K

    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    n_m = len(motifs)
    out_max = np.full((len(starts), n_m), np.nan, dtype=np.float32)
    out_cnt = np.zeros((len(starts), n_m), dtype=np.int32)
    if n_m == 0 or len(starts) == 0:
        return out_max, out_cnt
    packed = motifs.scan_tables()
    if max(len(m) for m in motifs.pssms) >= K.RUN_CAP:
        raise ValueError(f"motifs of {K.RUN_CAP} columns or more are not supported")
    mats, off, lens, *blocks = packed
    # groups of consecutive regions of about GROUP_BASES bases (at least one region each)
    size = np.cumsum(np.maximum(ends - starts, 0))
    cuts = np.searchsorted(size, np.arange(1, int(size[-1] // GROUP_BASES) + 1) * GROUP_BASES, side="right")
    groups = np.unique(np.concatenate([[0], cuts, [len(starts)]])).astype(np.int64)
    K.scan_motifs(codes, K.chunk_codes(codes, K.CHUNK), starts, ends, groups, mats, off, lens, *blocks,
                  motifs.thresholds.astype(np.float64), out_max, out_cnt)
    return out_max, out_cnt


# --------------------------------------------------------------------------------------------
# encoders
@runtime_checkable
class DNAEncoder(Protocol):
    """Anything that embeds DNA sequences: ``encode(list[str]) -> np.ndarray (n, d)``.

    Examples
    --------
    >>> class GC:
    ...     def encode(self, sequences):
    ...         return np.array([[(s.count("G") + s.count("C")) / max(len(s), 1)] for s in sequences])
    >>> isinstance(GC(), DNAEncoder)
    True
    """

    def encode(self, sequences) -> np.ndarray: ...


class HFEncoder:
    """Mean-pooled last hidden states of a local Hugging Face checkpoint folder (e.g. a
    Nucleotide Transformer, Dalla-Torre 2024), never downloaded (``local_files_only``).

    Parameters
    ----------
    path
        Folder holding the model and its tokenizer (``save_pretrained`` output).
    device
        ``"cpu"``, ``"cuda"`` or ``None`` (cuda when available).
    batch_size
        Sequences per forward pass.
    max_length
        Token limit per sequence (longer ones are truncated); default the tokenizer's
        ``model_max_length`` when finite.
    trust_remote_code
        Passed to ``from_pretrained`` (some checkpoints ship their own model code).

    Examples
    --------
    >>> enc = HFEncoder("nucleotide-transformer-v2-50m", device="cpu")   # doctest: +SKIP
    >>> enc.encode(["ACGT" * 50, "TTGCA" * 40]).shape                   # doctest: +SKIP
    (2, 512)
    """

    def __init__(self, path, device: str | None = None, batch_size: int = 16, max_length: int | None = None,
                 trust_remote_code: bool = False):
        import torch
        from transformers import AutoModel, AutoTokenizer

        p = Path(os.fspath(path))
        if not p.is_dir():
            raise InputMissingError(p, "DNA encoder folder not found (a local Hugging Face checkpoint folder)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True,
                                                           trust_remote_code=trust_remote_code)
            self.model = AutoModel.from_pretrained(p, local_files_only=True, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise InputFormatError(p, f"not a loadable Hugging Face model folder: {e}") from None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.batch_size = int(batch_size)
        ml = max_length or getattr(self.tokenizer, "model_max_length", None)
        self.max_length = int(ml) if ml and ml < 1_000_000 else None
        self.path = p

    def encode(self, sequences) -> np.ndarray:
        """``(n, hidden_size)`` float32 embeddings, sequences upper-cased."""
        import torch

        seqs = [str(s).upper() for s in sequences]
        out = []
        with torch.inference_mode():
            for b in range(0, len(seqs), self.batch_size):
                tok = self.tokenizer(seqs[b:b + self.batch_size], return_tensors="pt", padding=True,
                                     truncation=self.max_length is not None, max_length=self.max_length)
                tok = {k: v.to(self.device) for k, v in tok.items()}
                h = self.model(**tok).last_hidden_state
                m = tok["attention_mask"].unsqueeze(-1).to(h.dtype)
                out.append(((h * m).sum(1) / m.sum(1).clamp(min=1)).float().cpu().numpy())
        d = int(getattr(self.model.config, "hidden_size", 0))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, d), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# all features
def region_features(regions, fasta, *, kmers=(4, 5, 6), motifs="JASPAR2024", pvalue: float = 1e-4,
                    encoder=None, progress=None):
    """DNA features of every region: an AnnData regions x features.

    Parameters
    ----------
    regions
        A :class:`~atacformer.vocab.Vocabulary`, a DataFrame with ``chrom``/``start``/``end``
        (0-based half-open), or a BED file / vocabulary folder.
    fasta
        Indexed genome FASTA (``.fai``; bgzip also ``.gzi``). Chromosome names are matched
        after :func:`~atacformer.genome.normalize_chrom` (``22`` = ``chr22``).
    kmers
        k values of the canonical k-mer frequencies (``()`` for none).
    motifs
        A JASPAR release of pyjaspar (CORE vertebrates), a :class:`MotifSet`, or ``None``.
    pvalue
        p-value of a motif hit (threshold of ``motif_count``); ignored for a MotifSet.
    encoder
        A :class:`DNAEncoder`, or a local Hugging Face folder for :class:`HFEncoder`.
    progress
        Show a progress bar (default: when there are over 10,000 regions).

    Returns
    -------
    anndata.AnnData
        ``X`` float32; ``obs`` the regions (``chrom``, ``start``, ``end``; index
        ``chrom:start-end``); ``var`` with ``kind`` (``kmer``, ``motif_max``,
        ``motif_count``, ``encoder``) and ``name`` (k-mer, motif name). Motif columns are
        ``"<matrix id>_max"`` / ``"<matrix id>_count"``. ``uns["dna_features"]`` records the
        parameters. ``motif_max`` is NaN for a region without a full ACGT window.

    Examples
    --------
    >>> import pandas as pd
    >>> regs = pd.DataFrame({"chrom": ["chr22"] * 2, "start": [17_000_000, 17_001_000],
    ...                      "end": [17_000_500, 17_001_500]})
    >>> ad = region_features(regs, "hg19_chr22.fa.gz", kmers=(4,), motifs=None)   # doctest: +SKIP
    >>> ad.shape                                                                    # doctest: +SKIP
    (2, 136)
    """
    import anndata as ad
    from tqdm.auto import tqdm

    df = read_regions(regions)
    n = len(df)
    kmers = tuple(int(k) for k in (kmers or ()))
    if any(k < 1 or k > 12 for k in kmers):
        raise ValueError(f"k-mer sizes must be within 1..12, got {kmers}")
    fa = _open_fasta(fasta)
    ms = motifs
    if isinstance(motifs, str):
        ms = MotifSet.from_jaspar(motifs, pvalue=pvalue)
    if isinstance(encoder, (str, os.PathLike)):
        encoder = HFEncoder(encoder)
    if encoder is not None and not isinstance(encoder, DNAEncoder):
        raise TypeError("encoder must have an encode(sequences) method")
    kcols = {k: canonical_kmers(k)[1] for k in kmers}
    blocks = {k: np.zeros((n, len(kcols[k])), dtype=np.float32) for k in kmers}
    if ms is not None:
        mmax = np.full((n, len(ms)), np.nan, dtype=np.float32)
        mcnt = np.zeros((n, len(ms)), dtype=np.float32)
    enc = None
    show = progress if progress is not None else n > 10_000
    spans = _chrom_spans(fa, fasta, df)
    with tqdm(total=n, disable=not show, desc="region features", unit="region") as bar:
        for rows, codes, s, e in spans:
            for k in kmers:
                blocks[k][rows] = kmer_frequencies(codes, s, e, k)
            if ms is not None and len(ms):
                a, b = scan_motifs(codes, s, e, ms)
                mmax[rows] = a
                mcnt[rows] = b
            if encoder is not None:
                lut = np.frombuffer(b"ACGTN", dtype=np.uint8)
                seqs = [lut[codes[i:j]].tobytes().decode() for i, j in zip(s, e)]
                x = np.asarray(encoder.encode(seqs), dtype=np.float32)
                if enc is None:
                    enc = np.zeros((n, x.shape[1]), dtype=np.float32)
                enc[rows] = x
            bar.update(len(rows))
    mats, var = [], []
    for k in kmers:
        mats.append(blocks[k])
        var.append(pd.DataFrame({"kind": "kmer", "name": kcols[k]}, index=kcols[k]))
    if ms is not None:
        mats += [mmax, mcnt]
        var.append(pd.DataFrame({"kind": "motif_max", "name": ms.names}, index=[f"{i}_max" for i in ms.ids]))
        var.append(pd.DataFrame({"kind": "motif_count", "name": ms.names}, index=[f"{i}_count" for i in ms.ids]))
    if encoder is not None:
        if enc is None:
            enc = np.zeros((n, 0), dtype=np.float32)
        names = [f"enc_{j}" for j in range(enc.shape[1])]
        mats.append(enc)
        var.append(pd.DataFrame({"kind": "encoder", "name": names}, index=names))
    X = np.concatenate(mats, axis=1) if mats else np.zeros((n, 0), dtype=np.float32)
    var = pd.concat(var) if var else pd.DataFrame({"kind": [], "name": []})
    var["kind"] = pd.Categorical(var["kind"], categories=["kmer", "motif_max", "motif_count", "encoder"])
    obs = df.copy()
    obs.index = (df["chrom"].astype(str) + ":" + df["start"].astype(str) + "-" + df["end"].astype(str)).to_numpy()
    obs.index.name = None
    out = ad.AnnData(X=X, obs=obs, var=var)
    out.obs_names_make_unique()
    out.uns["dna_features"] = {
        "fasta": os.fspath(fasta), "kmers": list(kmers),
        "motifs": (motifs if isinstance(motifs, str) else ("custom" if ms is not None else "none")),
        "pvalue": float(ms.pvalue) if ms is not None else float(pvalue),
        "encoder": str(getattr(encoder, "path", type(encoder).__name__)) if encoder is not None else "none",
    }
    return out


def dna_table(adata, kinds=None, standardize: bool = True) -> np.ndarray:
    """The ``(n_regions, d)`` float32 table of :func:`region_features` output, rows in region
    (token-id) order, as ``atacformer.train.build.load_dna_table`` reads from ``.npy``.

    NaN (no full ACGT window) becomes the column mean; with ``standardize`` each column is
    centred and scaled to unit variance (constant columns become 0), and motif hit counts
    are ``log1p``-transformed first.

    Examples
    --------
    >>> import anndata as ad
    >>> a = ad.AnnData(np.array([[0.5, np.nan], [0.25, 2.0]], dtype=np.float32),
    ...                var=pd.DataFrame({"kind": ["kmer", "motif_max"]}, index=["AA", "M_max"]))
    >>> dna_table(a).tolist()
    [[1.0, 0.0], [-1.0, 0.0]]
    """
    X = np.asarray(adata.X, dtype=np.float64)
    kind = adata.var["kind"].astype(str).to_numpy() if "kind" in adata.var else np.full(adata.n_vars, "")
    if kinds is not None:
        keep = np.isin(kind, list(kinds))
        X, kind = X[:, keep], kind[keep]
    X = X.copy()
    if standardize:
        cnt = kind == "motif_count"
        X[:, cnt] = np.log1p(X[:, cnt])
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(X, axis=0) if len(X) else np.zeros(X.shape[1])
    mean = np.where(np.isfinite(mean), mean, 0.0)
    bad = np.isnan(X)
    X[bad] = np.take(mean, np.nonzero(bad)[1])
    if standardize and len(X):
        sd = X.std(axis=0)
        X = np.divide(X - mean, sd, out=np.zeros_like(X), where=sd > 0)
    return X.astype(np.float32)

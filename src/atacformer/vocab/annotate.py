"""A genomic-region class for every vocabulary region, for the masked-bin model's
``<eos>``-per-region-class variant (Ge 2025, "decoder by genomic regions").

Seed 000 proposes HOMER's annotation (promoter, exon, intron, UTRs, TTS, intergenic, ...).
This module does the part of it that a TSS list and a gene list determine, with HOMER's
priority (a region with several classes takes the first that applies):

1. ``promoter``: overlaps a promoter window, HOMER's ``promoter-TSS`` definition: 1 kb
   upstream to 100 bp downstream of a TSS, strand-aware (without a strand column: 1 kb on
   both sides);
2. ``gene_body``: overlaps a gene (introns and exons alike; needs a genes BED);
3. ``intergenic`` (or ``distal`` when only TSSs are given): the rest.

TSSs come from a TSS BED (e.g. ``hg19_tss.archr.bed.gz``, ``hg38_gencode_tss_unique.bed.gz``)
or, failing that, from the genes BED (a gene's start on ``+``, its end on ``-``). Overlap is
the package's exact half-open overlap (:func:`atacformer.tokenizers.regions.region_token_pairs`).
Finer classes (exons, UTRs, enhancers, CTCF sites) need annotations this package does not
ship; :func:`classes_from_bed` turns any labelled BED (``chrom start end class``) into
classes with a priority order.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from atacformer.genome import normalize_chroms
from atacformer.tokenizers.regions import region_token_pairs
from atacformer.vocab import Vocabulary

logger = logging.getLogger(__name__)

UPSTREAM, DOWNSTREAM = 1000, 100


def read_annotation_bed(path) -> pd.DataFrame:
    """``chrom``, ``start``, ``end``, ``name``, ``strand`` of a BED file with 3 to 6+ columns
    (missing name: ``""``; missing or invalid strand: ``"."``)."""
    df = pd.read_csv(path, sep="\t", header=None, comment="#", dtype=str)
    df = df.iloc[:, :6]
    df = df[~df[0].str.startswith(("track", "browser"))]
    if df.shape[1] < 3:
        raise ValueError(f"{path}: a BED file needs at least 3 tab-separated columns, found {df.shape[1]}")
    try:
        start, end = df[1].astype(np.int64).to_numpy(), df[2].astype(np.int64).to_numpy()
    except ValueError as e:
        raise ValueError(f"{path}: start/end columns are not integers ({e})") from None
    out = pd.DataFrame({"chrom": normalize_chroms(df[0].to_numpy()), "start": start, "end": end})
    out["name"] = df[3].to_numpy() if 3 in df.columns else ""
    strand = df[5].to_numpy() if 5 in df.columns else np.full(len(df), ".")
    out["strand"] = np.where(np.isin(strand, ["+", "-"]), strand, ".")
    return out


def promoter_windows(tss: pd.DataFrame, upstream: int = UPSTREAM, downstream: int = DOWNSTREAM
                     ) -> pd.DataFrame:
    """Promoter windows around TSSs (``start`` of each row is the TSS position).

    Examples
    --------
    >>> t = pd.DataFrame({"chrom": ["chr1", "chr1"], "start": [5000, 5000], "end": [5001, 5001],
    ...                   "strand": ["+", "-"]})
    >>> promoter_windows(t)[["start", "end"]].values.tolist()
    [[4000, 5101], [4900, 6001]]
    """
    pos = tss["start"].to_numpy(np.int64)
    minus = tss["strand"].to_numpy() == "-"
    unknown = tss["strand"].to_numpy() == "."
    lo = np.where(minus, pos - downstream, pos - upstream)
    hi = np.where(minus, pos + upstream + 1, pos + downstream + 1)
    hi = np.where(unknown, pos + upstream + 1, hi)
    return pd.DataFrame({"chrom": tss["chrom"].to_numpy(), "start": np.maximum(lo, 0), "end": hi})


def _gene_tss(genes: pd.DataFrame) -> pd.DataFrame:
    minus = genes["strand"].to_numpy() == "-"
    pos = np.where(minus, genes["end"].to_numpy() - 1, genes["start"].to_numpy())
    return pd.DataFrame({"chrom": genes["chrom"].to_numpy(), "start": pos, "end": pos + 1,
                         "strand": genes["strand"].to_numpy()})


def _overlapping(vocab: Vocabulary, regions: pd.DataFrame) -> np.ndarray:
    _, tokens = region_token_pairs(vocab, regions["chrom"].to_numpy(), regions["start"].to_numpy(),
                                   regions["end"].to_numpy())
    hit = np.zeros(vocab.n_regions, dtype=bool)
    hit[tokens] = True
    return hit


def annotate_regions(vocab: Vocabulary, tss=None, genes=None, upstream: int = UPSTREAM,
                     downstream: int = DOWNSTREAM) -> tuple[np.ndarray, list[str]]:
    """Class of every vocabulary region from a TSS BED and/or a genes BED.

    Parameters
    ----------
    vocab
        The vocabulary (bins or peaks).
    tss, genes
        BED paths (or DataFrames from :func:`read_annotation_bed`); at least one. ``genes``
        may be a GTF instead: the classes are then HOMER's (:func:`annotate_gtf`).
    upstream, downstream
        Promoter window around each TSS (HOMER: 1000 and 100).

    Returns
    -------
    classes
        (n_regions,) int64 class ids.
    names
        Class names: ``["promoter", "gene_body", "intergenic"]`` with genes, else
        ``["promoter", "distal"]``.

    Examples
    --------
    >>> classes, names = annotate_regions(vocab, tss="hg19_tss.archr.bed.gz",
    ...                                   genes="hg19_genes.archr.bed.gz")  # doctest: +SKIP
    """
    if tss is None and genes is None:
        raise ValueError("annotate_regions needs a TSS BED and/or a genes BED (or a GTF)")
    if isinstance(genes, (str, os.PathLike)):
        from atacformer.io.genes import _is_gtf

        if _is_gtf(os.fspath(genes)):  # a GTF: HOMER's classes
            ann = annotate_gtf(vocab, genes, upstream=upstream, downstream=downstream)
            return ann["region_class"].cat.codes.to_numpy(np.int64), list(HOMER_CLASSES)
    gdf = None if genes is None else (genes if isinstance(genes, pd.DataFrame) else read_annotation_bed(genes))
    if tss is not None:
        tdf = tss if isinstance(tss, pd.DataFrame) else read_annotation_bed(tss)
    else:
        tdf = _gene_tss(gdf)
    promoter = _overlapping(vocab, promoter_windows(tdf, upstream, downstream))
    if gdf is None:
        names = ["promoter", "distal"]
        classes = np.where(promoter, 0, 1)
    else:
        names = ["promoter", "gene_body", "intergenic"]
        body = _overlapping(vocab, gdf)
        classes = np.select([promoter, body], [0, 1], default=2)
    return classes.astype(np.int64), names


def classes_from_bed(vocab: Vocabulary, path, priority: list[str] | None = None
                     ) -> tuple[np.ndarray, list[str]]:
    """Region classes from a labelled BED (``chrom start end class``, e.g. HOMER's output
    reduced to its ``Annotation`` column): a region takes the first class in ``priority``
    (default: order of first appearance in the file) among the intervals it overlaps;
    regions overlapping none get the class ``"other"``."""
    df = read_annotation_bed(path)
    labels = df["name"].astype(str).to_numpy()
    names = list(priority) if priority is not None else list(dict.fromkeys(labels))
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise ValueError(f"{path}: classes {unknown[:5]} are not in the priority list {names}")
    names = names + ["other"]
    rank = {n: i for i, n in enumerate(names)}
    q, tokens = region_token_pairs(vocab, df["chrom"].to_numpy(), df["start"].to_numpy(),
                                   df["end"].to_numpy())
    classes = np.full(vocab.n_regions, len(names) - 1, dtype=np.int64)
    np.minimum.at(classes, tokens, np.array([rank[x] for x in labels[q]], dtype=np.int64))
    return classes, names


# -- HOMER classes and TSS distances from a GTF ------------------------------------------------
HOMER_CLASSES = ("promoter-TSS", "TTS", "5' UTR", "3' UTR", "exon", "intron", "intergenic")
TTS_UPSTREAM, TTS_DOWNSTREAM = 100, 1000  # HOMER's TTS window around a transcript's last base


def _as_vocabulary(regions) -> Vocabulary:
    if isinstance(regions, Vocabulary):
        return regions
    df = regions
    return Vocabulary(df["chrom"].to_numpy(), df["start"].to_numpy(np.int64), df["end"].to_numpy(np.int64))


def _windows(chroms, pos, strand, up: int, down: int) -> pd.DataFrame:
    """``[pos - up, pos + down]`` on ``+``, ``[pos - down, pos + up]`` on ``-`` (inclusive)."""
    minus = strand == "-"
    lo = np.where(minus, pos - down, pos - up)
    hi = np.where(minus, pos + up + 1, pos + down + 1)
    return pd.DataFrame({"chrom": chroms, "start": np.maximum(lo, 0), "end": hi})


def _utr_sides(utr: pd.DataFrame, cds: pd.DataFrame) -> np.ndarray:
    """``5' UTR`` or ``3' UTR`` for each record of a GENCODE-style ``UTR`` table: before its
    transcript's coding part on the transcript's strand, or after it (Ensembl names them)."""
    side = np.full(len(utr), "3' UTR", dtype=object)
    named = utr["feature"].to_numpy()
    side[named == "five_prime_utr"] = "5' UTR"
    plain = np.flatnonzero(named == "UTR")
    if len(plain):
        span = cds.groupby("transcript_id").agg(lo=("start", "min"), hi=("end", "max"))
        u = utr.iloc[plain]
        lo = u["transcript_id"].map(span["lo"]).to_numpy(dtype=float)
        hi = u["transcript_id"].map(span["hi"]).to_numpy(dtype=float)
        plus = u["strand"].to_numpy() == "+"
        five = np.where(plus, u["end"].to_numpy() <= lo, u["start"].to_numpy() >= hi)
        side[plain] = np.where(five, "5' UTR", "3' UTR")
    return side


def transcript_tss(transcripts: pd.DataFrame) -> pd.DataFrame:
    """One row per transcript: its TSS base (``start`` on ``+``, ``end - 1`` on ``-``)."""
    minus = transcripts["strand"].to_numpy() == "-"
    pos = np.where(minus, transcripts["end"].to_numpy() - 1, transcripts["start"].to_numpy())
    return pd.DataFrame({"chrom": transcripts["chrom"].to_numpy(), "pos": pos,
                         "strand": transcripts["strand"].to_numpy(),
                         "gene_name": transcripts["gene_name"].to_numpy()})


def nearest_tss(vocab: Vocabulary, tss: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance from every region to its nearest TSS, and that TSS's gene.

    The distance is 0 when the region holds the TSS base, else the number of bases from the
    TSS to the region's nearest base, negative when the region lies upstream of the TSS on
    its transcript's strand. Ties go to the TSS with the lower position (the first one in the
    table when several transcripts share it). Regions on chromosomes without a TSS get NaN
    and ``""``.
    """
    n = vocab.n_regions
    dist = np.full(n, np.nan)
    gene = np.full(n, "", dtype=object)
    t = tss.reset_index(drop=True)
    t = t.iloc[np.lexsort((np.arange(len(t)), t["pos"].to_numpy()))]
    for chrom, sub in t.groupby("chrom", sort=False):
        idx = np.flatnonzero(vocab.chroms == chrom)
        if not len(idx):
            continue
        pos = sub["pos"].to_numpy(np.int64)
        keep = np.ones(len(pos), bool)
        keep[1:] = pos[1:] != pos[:-1]  # the first transcript at each position
        pos = pos[keep]
        strand = sub["strand"].to_numpy()[keep]
        name = sub["gene_name"].to_numpy()[keep]
        s, e = vocab.starts[idx], vocab.ends[idx]
        inside = np.searchsorted(pos, s, side="left")  # first TSS >= s
        has_in = (inside < len(pos)) & (pos[np.minimum(inside, len(pos) - 1)] < e)
        left = inside - 1  # last TSS < s
        right = inside  # first TSS >= s (>= e when none inside)
        dl = np.where(left >= 0, s - pos[np.maximum(left, 0)], np.iinfo(np.int64).max)
        dr = np.where(right < len(pos), pos[np.minimum(right, len(pos) - 1)] - (e - 1), np.iinfo(np.int64).max)
        pick = np.where(has_in, right, np.where(dl <= dr, left, right))
        d = np.where(has_in, 0, np.minimum(dl, dr)).astype(np.float64)
        # upstream on the TSS's strand: before a + TSS, after a - TSS
        before = (e - 1) < pos[pick]
        up = np.where(strand[pick] == "+", before, ~before & ~has_in)
        dist[idx] = np.where(up & ~has_in, -d, d)
        gene[idx] = name[pick]
    return dist, gene


def annotate_gtf(regions, gtf, *, genome=None, upstream: int = UPSTREAM, downstream: int = DOWNSTREAM
                 ) -> pd.DataFrame:
    """HOMER-style annotation of regions from a GTF: class, TSS distance and nearest gene.

    Each region takes the first class that applies in HOMER's priority order
    (:data:`HOMER_CLASSES`), by exact half-open overlap:

    1. ``promoter-TSS``: within 1 kb upstream to 100 bp downstream of a transcript's TSS;
    2. ``TTS``: within 100 bp upstream to 1 kb downstream of a transcript's last base;
    3. ``5' UTR`` / ``3' UTR``: a UTR (GENCODE's ``UTR`` records are sided by the
       transcript's coding part; Ensembl's ``five_prime_utr`` / ``three_prime_utr`` as named);
    4. ``exon``: any exon (coding or not);
    5. ``intron``: inside a transcript, on none of the above;
    6. ``intergenic``: the rest.

    Parameters
    ----------
    regions
        A :class:`~atacformer.vocab.Vocabulary` or a DataFrame with ``chrom``, ``start``, ``end``.
    gtf
        GENCODE / Ensembl GTF (``transcript``, ``exon``, ``UTR``/``*_prime_utr`` and ``CDS``
        records; ``gene_name``, ``gene_type``/``gene_biotype``, ``transcript_id``).
    genome
        Checks the GTF's chromosomes and ends against this genome.

    Returns
    -------
    pandas.DataFrame
        One row per region: ``region_class``; ``noncoding`` (the class comes only from
        genes that are not ``protein_coding``); ``tss_distance`` (see :func:`nearest_tss`);
        ``nearest_gene``.

    Examples
    --------
    >>> ann = annotate_gtf(Vocabulary.from_bed("peaks.bed"), "gencode.v33.gtf.gz")  # doctest: +SKIP
    >>> ann["region_class"].value_counts()  # doctest: +SKIP
    """
    from atacformer.errors import InputFormatError
    from atacformer.io.genes import read_gtf_records

    vocab = _as_vocabulary(regions)
    rec = read_gtf_records(gtf, ["transcript", "exon", "CDS", "UTR", "five_prime_utr", "three_prime_utr"],
                           genome=genome)
    tx = rec[rec["feature"] == "transcript"]
    if not len(tx):
        raise InputFormatError(gtf, "no transcript records: TSSs cannot be placed")
    if not set(tx["chrom"]) & set(vocab.chroms):
        raise InputFormatError(gtf, f"no transcript on the regions' chromosomes "
                                    f"({', '.join(sorted(set(vocab.chroms))[:5])})")
    coding = rec["gene_type"].to_numpy() == "protein_coding"
    has_type = rec["gene_type"].notna().any()
    tss = transcript_tss(tx)
    tx_minus = tx["strand"].to_numpy() == "-"
    tes = np.where(tx_minus, tx["start"].to_numpy(), tx["end"].to_numpy() - 1)
    utr = rec[rec["feature"].isin(["UTR", "five_prime_utr", "three_prime_utr"])]
    utr_side = _utr_sides(utr, rec[rec["feature"] == "CDS"])
    exon = rec["feature"].to_numpy() == "exon"
    sets = [
        (_windows(tss["chrom"].to_numpy(), tss["pos"].to_numpy(), tss["strand"].to_numpy(), upstream, downstream),
         coding[tx.index]),
        (_windows(tx["chrom"].to_numpy(), tes, tx["strand"].to_numpy(), TTS_UPSTREAM, TTS_DOWNSTREAM),
         coding[tx.index]),
        (utr[utr_side == "5' UTR"], coding[utr.index[utr_side == "5' UTR"]]),
        (utr[utr_side == "3' UTR"], coding[utr.index[utr_side == "3' UTR"]]),
        (rec[exon], coding[exon]),
        (tx, coding[tx.index]),
    ]
    n = vocab.n_regions
    cls = np.full(n, len(HOMER_CLASSES) - 1, dtype=np.int64)
    noncoding = np.zeros(n, bool)
    for k in range(len(sets) - 1, -1, -1):  # lowest priority first, overwritten by higher ones
        feats, is_coding = sets[k]
        q, tok = region_token_pairs(vocab, feats["chrom"].to_numpy(), feats["start"].to_numpy(),
                                    feats["end"].to_numpy())
        hit = np.zeros(n, bool)
        hit[tok] = True
        any_coding = np.zeros(n, bool)
        any_coding[tok[np.asarray(is_coding)[q]]] = True
        cls[hit] = k
        noncoding[hit] = has_type and True
        noncoding[hit & any_coding] = False
    dist, gene = nearest_tss(vocab, tss)
    return pd.DataFrame({"region_class": pd.Categorical.from_codes(cls, HOMER_CLASSES), "noncoding": noncoding,
                         "tss_distance": dist, "nearest_gene": gene})

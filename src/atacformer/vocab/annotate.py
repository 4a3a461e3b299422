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
        BED paths (or DataFrames from :func:`read_annotation_bed`); at least one.
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
        raise ValueError("annotate_regions needs a TSS BED and/or a genes BED")
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

"""Region-level annotation of an AnnData's variables (its vocabulary regions)."""

from __future__ import annotations

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

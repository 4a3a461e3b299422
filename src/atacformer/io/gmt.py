"""Gene sets in the GMT format (MSigDB / GSEA), plain or gzip-compressed.

One gene set a line: ``name <TAB> description <TAB> gene <TAB> gene ...``. Empty lines and
empty gene fields (trailing tabs) are skipped; a gene listed twice in one set counts once.
Gene sets are what TOSICA (Chen 2023) turns into one token each: :func:`gene_set_membership`
intersects them with a data set's genes.
"""

from __future__ import annotations

import io
import logging
import os

import numpy as np
import pandas as pd

from atacformer.errors import InputFormatError
from atacformer.io._text import open_binary

log = logging.getLogger(__name__)

__all__ = ["gene_set_membership", "read_gmt"]


def read_gmt(path) -> dict[str, list[str]]:
    """Read a GMT file (``.gmt`` or ``.gmt.gz``) into ``{set name: [genes]}`` in file order.

    Parameters
    ----------
    path
        The GMT file.

    Returns
    -------
    dict
        Set name -> its genes (file order, duplicates removed).

    Raises
    ------
    InputFormatError
        A line with fewer than three tab-separated fields, an empty set name, a name used
        twice, or a file with no gene set (the message names the file and the line).

    Examples
    --------
    >>> from atacformer.io.gmt import read_gmt
    >>> sets = read_gmt("h.all.v7.0.symbols.gmt")     # doctest: +SKIP
    >>> len(sets["HALLMARK_HYPOXIA"])                  # doctest: +SKIP
    200
    """
    p = os.fspath(path)
    sets: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    with open_binary(p) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline=None)
        try:
            for i, line in enumerate(text, start=1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) < 3:
                    raise InputFormatError(p, "a GMT line needs a set name, a description and at least one gene, "
                                           "separated by tabs", line=i, value=line[:80])
                name = fields[0].strip()
                if not name:
                    raise InputFormatError(p, "the gene set name (first field) is empty", line=i)
                if name in sets:
                    raise InputFormatError(p, f"gene set name used twice (first on line {first_line[name]})",
                                           line=i, value=name)
                genes = list(dict.fromkeys(g.strip() for g in fields[2:] if g.strip()))
                if not genes:
                    raise InputFormatError(p, "the gene set lists no gene", line=i, value=name)
                sets[name] = genes
                first_line[name] = i
        except UnicodeDecodeError as e:
            raise InputFormatError(p, f"not a text GMT file ({e.reason})") from None
    if not sets:
        raise InputFormatError(p, "no gene set in the file (GMT: name<TAB>description<TAB>genes...)")
    log.info("%s: %d gene sets, %d genes", p, len(sets), len({g for v in sets.values() for g in v}))
    return sets


def gene_set_membership(gene_sets: dict[str, list[str]], genes, *, min_genes: int = 5,
                        max_genes: int | None = None, source: str = "the gene sets"):
    """Intersect gene sets with a data set's genes and keep the sets of a usable size.

    Parameters
    ----------
    gene_sets
        Set name -> genes (e.g. from :func:`read_gmt`).
    genes
        The data's gene names, in the data's order.
    min_genes, max_genes
        Keep sets with at least ``min_genes`` (and at most ``max_genes``) of the data's genes
        after the intersection.
    source
        How error messages name the gene sets (e.g. the GMT path).

    Returns
    -------
    names : list of str
        Kept set names, in the input's order.
    members : list of numpy.ndarray
        Per kept set, the sorted positions of its genes in ``genes``.

    Raises
    ------
    ValueError
        No set keeps ``min_genes`` of the data's genes (the message says how many genes of
        the sets are in the data at all).

    Examples
    --------
    >>> names, members = gene_set_membership({"A": ["x", "y"], "B": ["z"]}, ["y", "x", "q"], min_genes=2)
    >>> names, [m.tolist() for m in members]
    (['A'], [[0, 1]])
    """
    if min_genes < 1:
        raise ValueError(f"min_genes must be at least 1, got {min_genes}")
    index = pd.Index([str(g) for g in genes])
    if index.has_duplicates:
        dup = index[index.duplicated()].unique()[:3].tolist()
        raise ValueError(f"the data's gene names are not unique (e.g. {dup}); make them unique first")
    names, members = [], []
    for name, set_genes in gene_sets.items():
        pos = index.get_indexer(pd.Index(set_genes))
        pos = np.unique(pos[pos >= 0])
        if len(pos) >= min_genes and (max_genes is None or len(pos) <= max_genes):
            names.append(name)
            members.append(pos.astype(np.int64))
    if not names:
        all_genes = {g for v in gene_sets.values() for g in v}
        hit = int(index.isin(list(all_genes)).sum())
        raise ValueError(
            f"no gene set of {source} ({len(gene_sets):,} sets) keeps {min_genes} or more of the data's "
            f"{len(index):,} genes ({hit:,} of the data's genes are in any set; data genes e.g. "
            f"{index[:3].tolist()}, set genes e.g. {sorted(all_genes)[:3]}): are they the same species and "
            "gene naming (symbols vs Ensembl ids)? Lower --min-genes-per-set or use another gene column")
    log.info("%d of %d gene sets keep %d-%s of the data's genes", len(names), len(gene_sets), min_genes,
             max_genes if max_genes is not None else "any")
    return names, members

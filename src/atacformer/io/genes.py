"""Gene annotations: GTF (GENCODE / Ensembl) or a genes BED -> one row per gene.

Every reader returns a DataFrame with ``chrom`` (normalised), ``start``, ``end`` (0-based
half-open), ``strand`` (``+``/``-``), ``gene_name`` and ``gene_id``, in file order.

- **GTF** (``.gtf``/``.gtf.gz``): the ``gene`` records, 1-based inclusive coordinates made
  0-based half-open (``start - 1``, ``end``), the ``gene_name`` and ``gene_id`` attributes.
  A GTF without ``gene`` records (UCSC-style exports) gives one gene per ``gene_id`` spanning
  its ``transcript`` records. A gene without ``gene_name`` (Ensembl leaves it out for some
  novel genes) is named by its ``gene_id``; a file where no gene has one is an error.
- **genes BED** (``.bed``/``.bed.gz``, 6+ columns): ``chrom start end name id strand``,
  e.g. ArchR's gene annotations, whose 5th column is an Entrez id.

Files are read in blocks with pyarrow; a block that fails a check is re-read line by line
so that the error names the file, the line and the value.
"""

from __future__ import annotations

import io
import logging
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from atacformer.errors import GenomeMismatchError, InputFormatError
from atacformer.genome import get_genome, normalize_chrom, normalize_chroms
from atacformer.io._text import check_int, check_interval_fields, iter_blocks, locate_bad_line, skip_header

log = logging.getLogger(__name__)

GENE_COLUMNS = ["chrom", "start", "end", "strand", "gene_name", "gene_id"]
_GTF_COLS = ["seqname", "source", "feature", "start", "end", "score", "strand", "frame", "attributes"]
_GTF_DESC = "GTF: seqname source feature start end score strand frame attributes"
_BED_DESC = "genes BED: chrom start end name id strand"
_BLOCK = 8 << 20  # large enough for pyarrow's threads, small enough not to matter in memory


def _attribute(values, key: str) -> pd.Series:
    """The value of attribute ``key`` on each line (``None`` where absent): ``key "value";``
    (GTF 2.2) or an unquoted ``key value;``, anchored on ``;`` so that ``gene_name`` does not
    match inside ``havana_gene_name``. Vectorised (RE2 in pyarrow)."""
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, type=pa.string())
    found = None
    for pattern in (rf'(?:^|;)\s*{key}\s+"(?P<v>[^"]*)"', rf'(?:^|;)\s*{key}\s+(?P<v>[^;\s"]+)'):
        v = pc.struct_field(pc.extract_regex(arr, pattern), [0])
        found = v if found is None else pc.coalesce(found, v)
        if found.null_count == 0:  # the unquoted form is only looked for where the quoted one is absent
            break
    return pd.Series(found.to_numpy(zero_copy_only=False), dtype=object)


def _is_gtf(path: str) -> bool:
    low = path.lower()
    for suffix in (".gz", ".bgz"):
        low = low.removesuffix(suffix)
    if low.endswith((".gtf", ".gff", ".gff2")):
        return True
    if low.endswith(".bed"):
        return False
    for block, _, _ in iter_blocks(path, block_bytes=1 << 16):  # sniff the first data line
        block, _ = skip_header(block, 1, (b"#", b"track", b"browser"))
        first = block.split(b"\n", 1)[0].split(b"\t")
        return len(first) >= 9 and b'"' in first[8]
    return False


def read_genes(path, *, genome=None) -> pd.DataFrame:
    """Read genes from a GTF (gz or plain) or a genes BED.

    Parameters
    ----------
    path
        GENCODE / Ensembl GTF (``gene`` records; ``gene_name`` and ``gene_id`` attributes;
        1-based inclusive, converted to 0-based half-open), or a BED with at least 6
        columns ``chrom start end name id strand`` (0-based half-open).
    genome
        Genome name (``hg38``...), ``.chrom.sizes`` path or
        :class:`~atacformer.genome.Genome`. When given, every gene must lie on one of its
        chromosomes and end within it; genes on unplaced contigs (``chrUn_*``, ``KI270*``,
        ``*_random``...) the genome lacks are dropped.

    Returns
    -------
    pandas.DataFrame
        Columns ``chrom``, ``start``, ``end``, ``strand``, ``gene_name``, ``gene_id``.

    Raises
    ------
    InputFormatError
        A line that cannot be read (column count, coordinates), a strand other than ``+``
        or ``-``, a gene without ``gene_id``, a GTF without ``gene_name`` attributes, or no
        gene at all; the message names the file, the line and the value.
    GenomeMismatchError
        With ``genome``: a gene on a chromosome it lacks, or ending past its end.

    Examples
    --------
    >>> genes = read_genes("gencode.v33.basic.annotation.gtf.gz", genome="hg38")  # doctest: +SKIP
    >>> genes.columns.tolist()  # doctest: +SKIP
    ['chrom', 'start', 'end', 'strand', 'gene_name', 'gene_id']
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputFormatError(p, "no such file")
    g = get_genome(genome) if genome is not None else None
    df = _read_gtf(p, g) if _is_gtf(p) else _read_bed(p, g)
    if not len(df):
        raise InputFormatError(p, "no genes found")
    return df.reset_index(drop=True)


def chrom_lengths(chroms, sizes: dict) -> np.ndarray:
    """Length of each chromosome in ``chroms`` (int64; the int64 maximum where unknown)."""
    mapped = pd.Series(np.asarray(chroms, dtype=object)).map(sizes)
    out = np.full(len(mapped), np.iinfo(np.int64).max, dtype=np.int64)
    known = mapped.notna().to_numpy()
    out[known] = mapped[known].to_numpy(np.int64)
    return out


# -- shared per-block checks ---------------------------------------------------------------
def _locate(path, block, line, check, error=InputFormatError) -> None:
    """:func:`locate_bad_line` that passes over ``#`` comment lines."""
    locate_bad_line(path, block, line, lambda f: None if f[0].startswith("#") else check(f), error=error)


def _check_strand(path, block, line, strand, column, is_gene):
    bad = ~np.isin(strand, ["+", "-"])
    if bad.any():
        _locate(path, block, line, lambda f: ("strand must be '+' or '-' (it places the gene's TSS)", f[column])
                if is_gene(f) and f[column] not in ("+", "-") else None)
        raise InputFormatError(path, "strand must be '+' or '-'", line=line, value=str(strand[bad][0]))


def _check_genome(path, block, line, genome, chroms, ends, chrom_field, end_of, is_gene) -> np.ndarray:
    """Rows to keep: genes on unplaced contigs ``genome`` lacks are dropped; any other unknown
    chromosome or an end past the chromosome's end is an error naming the line."""
    from atacformer.genome import is_contig

    keep = np.ones(len(chroms), dtype=bool)
    if genome is None or not len(chroms):
        return keep
    sizes = genome.chrom_sizes
    for c in pd.unique(chroms):
        if c in sizes:
            continue
        if is_contig(c):
            keep &= chroms != c
            continue
        _locate(path, block, line,
                        lambda f, bad=c: (f"chromosome is not in genome {genome.name}",
                                          f[chrom_field]) if is_gene(f) and normalize_chrom(f[chrom_field]) == bad
                        else None, error=GenomeMismatchError)
    length = chrom_lengths(chroms, sizes)
    if (ends > length).any():
        def over(f):
            c = normalize_chrom(f[chrom_field])
            if is_gene(f) and c in sizes and end_of(f) > sizes[c]:
                return f"gene ends past the end of {c} ({sizes[c]} bp) in genome {genome.name}", end_of(f)
            return None

        _locate(path, block, line, over, error=GenomeMismatchError)
    return keep


def _blocks(path):
    """Whole-line blocks with leading header lines removed; ``#`` lines inside a block too."""
    first = True
    for block, line, _ in iter_blocks(path, block_bytes=_BLOCK):
        if first:
            block, line = skip_header(block, line, (b"#", b"track", b"browser"))
            first = False
        if not block or block.isspace():
            continue
        parsed = block
        if b"\n#" in block:  # comment lines further down (GFF-style '###'): dropped for pyarrow
            parsed = b"".join(ln for ln in io.BytesIO(block) if not ln.startswith(b"#"))
        yield block, parsed, line


def _read_table(path, block, parsed, line, names, types, check):
    try:
        return pacsv.read_csv(
            io.BytesIO(parsed),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=True),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types=types),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        _locate(path, block, line, check)
        raise InputFormatError(path, "could not be parsed", line=line) from None


# -- GTF -----------------------------------------------------------------------------------
def _gtf_line_check(f):
    if len(f) != 9:
        return f"expected 9 tab-separated columns ({_GTF_DESC}), found {len(f)}", "\t".join(f)
    for j, name in ((3, "start"), (4, "end")):
        bad = check_int(f[j], name, max_digits=18)
        if bad:
            return bad
    s, e = int(f[3]), int(f[4])
    if s < 1:
        return "start must be >= 1 (GTF coordinates are 1-based)", s
    if s > e:
        return f"start > end ({s} > {e})", f"{f[3]}\t{f[4]}"
    return None


def _read_gtf(path: str, genome) -> pd.DataFrame:
    names = _GTF_COLS
    types = {c: pa.string() for c in names} | {"start": pa.int64(), "end": pa.int64()}
    genes, transcripts = [], []
    first_gene_block = None  # (block, line) of the first gene record, to name it in errors
    for block, parsed, line in _blocks(path):
        tab = _read_table(path, block, parsed, line, names, types, _gtf_line_check)
        s = tab.column("start").to_numpy()
        e = tab.column("end").to_numpy()
        if (s < 1).any() or (s > e).any():
            _locate(path, block, line, _gtf_line_check)
        feature = tab.column("feature")
        for kind, out in (("gene", genes), ("transcript", transcripts)):
            sel = tab.filter(pc.equal(feature, kind))
            if kind == "transcript" and genes:  # transcripts only matter when there are no genes
                continue
            if not sel.num_rows:
                continue
            if kind == "gene" and first_gene_block is None:
                first_gene_block = (block, line)
            out.append(_gtf_rows(path, block, line, sel, kind, genome))
    if genes:
        df = pd.concat(genes, ignore_index=True)
    elif transcripts:
        df = _genes_from_transcripts(path, pd.concat(transcripts, ignore_index=True))
        log.info("%s: no 'gene' records; %d genes made from the span of their transcripts", path, len(df))
    else:
        raise InputFormatError(path, "no 'gene' or 'transcript' records found; is it a GTF file?")
    missing = df["gene_name"].isna().to_numpy()
    if missing.all():
        if first_gene_block is not None:
            block, line = first_gene_block
            _locate(path, block, line, lambda f: (
                "the GTF has no gene_name attribute (expected e.g. gene_name \"TP53\"; GENCODE and Ensembl "
                "GTFs have one)", f[8]) if len(f) == 9 and f[2] == "gene" else None)
        raise InputFormatError(path, "the GTF has no gene_name attribute (expected e.g. gene_name \"TP53\")")
    if missing.any():
        log.warning("%s: %d of %d genes have no gene_name; they are named by their gene_id", path,
                    int(missing.sum()), len(df))
        df.loc[missing, "gene_name"] = df.loc[missing, "gene_id"]
    return df[GENE_COLUMNS]


def _gtf_rows(path, block, line, sel, kind, genome) -> pd.DataFrame:
    def is_kind(f):
        return len(f) == 9 and f[2] == kind

    strand = sel.column("strand").to_numpy(zero_copy_only=False).astype(object)
    _check_strand(path, block, line, strand, 6, is_kind)
    attrs = sel.column("attributes")
    gene_id = _attribute(attrs, "gene_id")
    if gene_id.isna().any():
        _locate(path, block, line, lambda f: ("no gene_id attribute", f[8])
                        if is_kind(f) and _attribute([f[8]], "gene_id").isna().iloc[0] else None)
        raise InputFormatError(path, "a record has no gene_id attribute", line=line)
    chroms = normalize_chroms(sel.column("seqname").to_numpy(zero_copy_only=False)).astype(object)
    ends = sel.column("end").to_numpy()
    keep = _check_genome(path, block, line, genome, chroms, ends, 0, lambda f: int(f[4]), is_kind)
    df = pd.DataFrame({"chrom": chroms, "start": sel.column("start").to_numpy() - 1, "end": ends,
                       "strand": strand, "gene_name": _attribute(attrs, "gene_name").to_numpy(dtype=object),
                       "gene_id": gene_id.to_numpy(dtype=object)})
    return df[keep]


def _genes_from_transcripts(path, tx: pd.DataFrame) -> pd.DataFrame:
    grouped = tx.groupby("gene_id", sort=False)
    df = grouped.agg(chrom=("chrom", "first"), start=("start", "min"), end=("end", "max"),
                     strand=("strand", "first"), gene_name=("gene_name", "first"),
                     n_chrom=("chrom", "nunique"), n_strand=("strand", "nunique")).reset_index()
    bad = (df["n_chrom"] > 1) | (df["n_strand"] > 1)
    if bad.any():
        raise InputFormatError(path, "a gene's transcripts lie on several chromosomes or strands",
                               value=df.loc[bad, "gene_id"].iloc[0])
    return df


# -- genes BED -----------------------------------------------------------------------------
def _bed_line_check(f):
    return check_interval_fields(f, 6, _BED_DESC, max_digits=18)


def _read_bed(path: str, genome) -> pd.DataFrame:
    parts = []
    for block, parsed, line in _blocks(path):
        ncols = len(parsed[: parsed.find(b"\n")].split(b"\t"))
        if ncols < 6:
            _locate(path, block, line, _bed_line_check)
        names = ["chrom", "start", "end", "name", "id", "strand"] + [f"c{j}" for j in range(6, ncols)]
        types = {c: pa.string() for c in names} | {"start": pa.int64(), "end": pa.int64()}
        tab = _read_table(path, block, parsed, line, names, types,
                          lambda f: check_interval_fields(f, 6, _BED_DESC, n_exact=ncols, max_digits=18))
        s = tab.column("start").to_numpy()
        e = tab.column("end").to_numpy()
        if (s < 0).any() or (s > e).any():
            _locate(path, block, line, _bed_line_check)
        strand = tab.column("strand").to_numpy(zero_copy_only=False).astype(object)
        _check_strand(path, block, line, strand, 5, lambda f: len(f) >= 6)
        chroms = normalize_chroms(tab.column("chrom").to_numpy(zero_copy_only=False)).astype(object)
        keep = _check_genome(path, block, line, genome, chroms, e, 0, lambda f: int(f[2]), lambda f: True)
        parts.append(pd.DataFrame({
            "chrom": chroms, "start": s, "end": e, "strand": strand,
            "gene_name": tab.column("name").to_numpy(zero_copy_only=False).astype(object),
            "gene_id": tab.column("id").to_numpy(zero_copy_only=False).astype(object)})[keep])
    if not parts:
        raise InputFormatError(path, "no genes found (empty file)")
    return pd.concat(parts, ignore_index=True)[GENE_COLUMNS]


def read_gtf_records(path, features, *, attributes=("gene_id", "gene_name", "gene_type", "transcript_id"),
                     genome=None) -> pd.DataFrame:
    """The records of some feature types of a GTF, with some of their attributes.

    Parameters
    ----------
    path
        GTF (gz or plain), GENCODE or Ensembl.
    features
        Feature types to keep (``transcript``, ``exon``, ``CDS``, ``UTR``,
        ``five_prime_utr``...).
    attributes
        Attribute columns to add (``None`` where a record lacks one); Ensembl's
        ``gene_biotype`` fills ``gene_type`` when that is absent.
    genome
        As for :func:`read_genes`: records on unplaced contigs the genome lacks are dropped,
        any other unknown chromosome or an end past a chromosome is an error naming the line.

    Returns
    -------
    pandas.DataFrame
        ``chrom``, ``start``, ``end`` (0-based half-open), ``strand``, ``feature`` and the
        attributes, in file order.

    Examples
    --------
    >>> exons = read_gtf_records("gencode.gtf.gz", ["exon"])  # doctest: +SKIP
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputFormatError(p, "no such file")
    if not _is_gtf(p):
        raise InputFormatError(p, "not a GTF file (expected 9 columns with quoted attributes)")
    g = get_genome(genome) if genome is not None else None
    wanted = pa.array(list(features), type=pa.string())
    types = {c: pa.string() for c in _GTF_COLS} | {"start": pa.int64(), "end": pa.int64()}
    parts = []
    for block, parsed, line in _blocks(p):
        tab = _read_table(p, block, parsed, line, _GTF_COLS, types, _gtf_line_check)
        s = tab.column("start").to_numpy()
        e = tab.column("end").to_numpy()
        if (s < 1).any() or (s > e).any():
            _locate(p, block, line, _gtf_line_check)
        sel = tab.filter(pc.is_in(tab.column("feature"), value_set=wanted))
        if not sel.num_rows:
            continue

        def is_kind(f):
            return len(f) == 9 and f[2] in features

        strand = sel.column("strand").to_numpy(zero_copy_only=False).astype(object)
        _check_strand(p, block, line, strand, 6, is_kind)
        chroms = normalize_chroms(sel.column("seqname").to_numpy(zero_copy_only=False)).astype(object)
        ends = sel.column("end").to_numpy()
        keep = _check_genome(p, block, line, g, chroms, ends, 0, lambda f: int(f[4]), is_kind)
        attrs = sel.column("attributes")
        df = pd.DataFrame({"chrom": chroms, "start": sel.column("start").to_numpy() - 1, "end": ends,
                           "strand": strand,
                           "feature": sel.column("feature").to_numpy(zero_copy_only=False).astype(object)})
        for a in attributes:
            v = _attribute(attrs, a)
            if a == "gene_type" and v.isna().all():
                v = _attribute(attrs, "gene_biotype")
            df[a] = v.to_numpy(dtype=object)
        parts.append(df[keep])
    if not parts:
        raise InputFormatError(p, f"no {'/'.join(features)} records found")
    return pd.concat(parts, ignore_index=True)

"""Cells -> clusters -> pseudo-bulk -> peaks: the per-cluster peak sets a consensus universe
is built from (LeRoy 2025).

Single cells are too sparse to call peaks on, so cells are first grouped (given labels, or
clusters of the package's own LSI + Leiden embedding), each group's fragments are pooled
into one pseudo-bulk sample, and peaks are called on each pseudo-bulk with MACS3 (Zhang
2008 MACS), the way ArchR (Granja 2021) and SnapATAC2 (Zhang 2024) call cluster-level peaks.
The universe methods then merge these per-cluster peak sets into one consensus set.

- :func:`cluster_cells`: one label per cell, given or found by clustering.
- :func:`pseudobulk_fragments`: one streaming pass over a fragments file, one fragments file
  per cluster.
- :func:`call_peaks`: the ``macs3 callpeak`` command on one pseudo-bulk (the real MACS3,
  run as a subprocess), Tn5 insertions with ``--nomodel --shift -100 --extsize 200``.
- :func:`cluster_peak_sets`: the whole chain. A peak matrix has no fragments, so there a
  cluster's peak set is the matrix peaks open in enough of its cells instead.

Outputs are written under a temporary name and renamed into place, so a failure leaves no
partial file behind.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from atacformer.errors import AtacformerError, GenomeMismatchError, InputFormatError, InputMissingError, OutputError

log = logging.getLogger(__name__)

__all__ = ["MIN_CELLS", "MIN_CELL_FRACTION", "MIN_FRAGMENTS", "call_peaks", "cluster_cells",
           "cluster_peak_sets", "effective_genome_size", "pseudobulk_fragments", "read_cluster_labels"]

#: cells with fewer fragments are left out of clustering (the 1,000-fragment cut of ArchR,
#: Granja 2021, and SnapATAC2, Zhang 2024)
MIN_FRAGMENTS = 1000
#: clusters with fewer cells get no peak set (ArchR's ``minCells`` per pseudo-bulk, Granja 2021)
MIN_CELLS = 25
#: matrix route: a peak belongs to a cluster's set when open in at least this fraction of its cells
MIN_CELL_FRACTION = 0.05
#: what to install when MACS3 is missing
MACS3_HINT = 'pip install "atacformer[peaks]"'
#: MACS3's shorthands for the effective genome size
_GSIZE = {"hg19": "hs", "hg38": "hs", "mm10": "mm", "mm39": "mm"}
#: first-line barcode column names taken for a header in a label file
_HEADER_WORDS = {"barcode", "barcodes", "cell", "cells", "cell_id", "cellid", "cell_barcode", "cb",
                 "obs_names", "index", "id", ""}
_CLUSTERS_FILE = "clusters.tsv"


def _require_file(path, what: str = "input") -> str:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputMissingError(p, f"{what} file does not exist")
    return p


# --------------------------------------------------------------------------- labels


def read_cluster_labels(path) -> pd.Series:
    """Read a ``barcode<TAB>label`` file into a Series (index = barcodes, values = str labels).

    Further columns are ignored; blank lines and ``#`` lines are skipped; a first line whose
    barcode column is a column name (``barcode``, ``cell``, ``cell_id``...) is a header.
    Cells labelled ``""``, ``NA`` or ``nan`` are left out.

    Raises
    ------
    InputFormatError
        Missing or empty file, a line with one column, a barcode given twice with two labels;
        the message names the file, the line and the value.

    Examples
    --------
    >>> labels = read_cluster_labels("cell_labels.tsv")  # doctest: +SKIP
    >>> labels.value_counts()  # doctest: +SKIP
    """
    p = _require_file(path, "cluster label")
    seen: dict[str, tuple[str, int]] = {}
    first = True
    with open(p, encoding="utf-8", errors="replace") as f:
        for i, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise InputFormatError(p, "expected 2 tab-separated columns (barcode, label)", line=i, value=line)
            bc, lab = fields[0].strip(), fields[1].strip()
            if first and bc.lower() in _HEADER_WORDS:
                first = False
                continue  # a header
            first = False
            if lab in ("", "NA", "nan", "NaN"):
                continue
            if bc in seen and seen[bc][0] != lab:
                raise InputFormatError(p, f"barcode listed twice with different labels ({seen[bc][0]!r} on line "
                                       f"{seen[bc][1]}, {lab!r} here)", line=i, value=bc)
            seen.setdefault(bc, (lab, i))
    if not seen:
        raise InputFormatError(p, "no cell labels found (empty file); expected lines 'barcode<TAB>label'")
    s = pd.Series([v[0] for v in seen.values()], index=pd.Index(list(seen), dtype=object), dtype=object,
                  name="cluster")
    s.attrs["source"] = p
    return s


def _as_labels(labels, what: str = "clusters") -> pd.Series:
    """A clean label Series: str labels, unique str index, unlabelled cells dropped."""
    if isinstance(labels, Mapping) and not isinstance(labels, pd.Series):
        labels = pd.Series(labels, dtype=object)
    if not isinstance(labels, pd.Series):
        raise TypeError(f"{what} must be a pandas Series (barcode -> label), got {type(labels).__name__}")
    source = labels.attrs.get("source")
    s = labels[labels.notna()]
    s = pd.Series(s.astype(str).to_numpy(), index=pd.Index(s.index.astype(str), dtype=object), name="cluster")
    if not s.index.is_unique:
        clash = s.groupby(level=0).nunique()
        clash = clash[clash > 1]
        if len(clash):
            raise InputFormatError(source, f"{what}: barcode given twice with different labels",
                                   value=clash.index[0])
        s = s[~s.index.duplicated()]
    if source is not None:
        s.attrs["source"] = source
    return s


def _file_stems(labels) -> dict[str, str]:
    """A file-name-safe, unique stem per label (``CD4+ T`` -> ``CD4+_T``)."""
    out, used = {}, set()
    for lab in labels:
        stem = re.sub(r"[^A-Za-z0-9._+-]+", "_", str(lab)).strip("._") or "cluster"
        base, k = stem, 1
        while stem.lower() in used:
            k += 1
            stem = f"{base}_{k}"
        used.add(stem.lower())
        out[lab] = stem
    return out


# --------------------------------------------------------------------------- clustering


def _kind(data) -> str:
    """``"fragments"`` or ``"matrix"``."""
    if hasattr(data, "obs") and hasattr(data, "var"):
        return "matrix"
    from atacformer.tokenizers import input_kind

    p = _require_file(data)
    kind = input_kind(p)
    if kind not in ("fragments", "matrix"):
        raise InputFormatError(p, f"expected a fragments file (.tsv.gz) or a peak matrix (.h5ad, .h5, MTX "
                               f"folder), got a {kind} input")
    return kind


def _cluster_embedding(cells, source, *, n_clusters, resolution, seed) -> pd.Series:
    """The package's LSI + Leiden on tokenized cells (as :mod:`atacformer.demo` does)."""
    from atacformer import tools as tl

    if cells.n_cells < 5:
        raise InputFormatError(source, f"only {cells.n_cells} cells to cluster; give labels (groupby) instead")
    adata = cells.to_anndata()
    tl.lsi(adata, n_components=min(30, min(adata.shape) - 2), seed=seed)
    tl.cluster(adata, "X_lsi", "leiden", n_clusters=n_clusters,
               resolution=None if n_clusters is not None else resolution, seed=seed, key_added="cluster")
    return pd.Series(adata.obs["cluster"].astype(str).to_numpy(), index=pd.Index(adata.obs_names, dtype=object),
                     name="cluster")


def _matrix_labels(pm, groupby, source) -> pd.Series:
    obs = pm.obs
    if isinstance(groupby, str) and groupby in obs.columns:
        s = obs[groupby]
        s = pd.Series(s.to_numpy(dtype=object), index=pd.Index(obs.index.astype(str), dtype=object))
        return _as_labels(s[s.notna()], f"obs column {groupby!r}")
    if isinstance(groupby, (pd.Series, Mapping)):
        table = _as_labels(groupby, "groupby")
    elif isinstance(groupby, (str, os.PathLike)) and os.path.isfile(groupby):
        table = read_cluster_labels(groupby)
    else:
        raise InputFormatError(source, f"groupby {groupby!r} is neither an obs column (columns: "
                               f"{list(obs.columns)}) nor a label file")
    known = table.index.isin(obs.index.astype(str))
    if not known.any():
        from atacformer.tokenizers.fragments import _suffix_hint

        raise InputFormatError(table.attrs.get("source"), f"none of its {len(table):,} barcodes is a cell of "
                               f"{source} (label barcode e.g. {table.index[0]!r}, cell e.g. {obs.index[0]!r}); "
                               f"{_suffix_hint(list(obs.index[:1000]), list(table.index[:1000]))}")
    if not known.all():
        log.warning("%s: %d of its %d labelled barcodes are not cells of %s; they are ignored",
                    table.attrs.get("source", "groupby"), int((~known).sum()), len(table), source)
    out = table[known]
    out.attrs.update(table.attrs)
    return out


def _read_matrix(data):
    from atacformer.io.matrix import peak_matrix_from_anndata, read_peak_matrix

    if hasattr(data, "obs"):
        return peak_matrix_from_anndata(data), "<AnnData>"
    return read_peak_matrix(data), os.fspath(data)


def cluster_cells(data, *, genome=None, groupby=None, bin_size: int = 5000, n_clusters: int | None = None,
                  resolution: float = 1.0, min_fragments: int = MIN_FRAGMENTS, seed: int = 0,
                  progress: bool | None = None) -> pd.Series:
    """One cluster label per cell: given labels, or clusters of the cells' LSI embedding.

    Without ``groupby`` the cells are clustered with the package's own pieces, as
    ``atacformer demo`` does: a fragments file is tokenized into ``bin_size`` genome bins
    (:func:`~atacformer.tokenizers.tokenize_fragments`), a peak matrix into its own peaks
    (:func:`~atacformer.tokenizers.tokenize_peak_matrix`); then
    :func:`atacformer.tools.lsi` (TF-IDF + SVD, Cusanovich 2018) and Leiden clustering
    (:func:`atacformer.tools.cluster`, Traag 2019) of the kNN graph.

    Parameters
    ----------
    data
        A 10x fragments file (``.tsv.gz``), or a peak matrix: ``.h5ad``/10x ``.h5`` path,
        Matrix Market folder, or an AnnData with peak coordinates.
    genome
        Genome of a fragments file (``hg38``, ``hg19``, ``mm10``, ``mm39`` or a
        ``.chrom.sizes`` path): the bins are its chromosomes and the fragments are checked
        against it. Needed to cluster fragments; a matrix is checked against it when given.
    groupby
        Labels to use instead of clustering: an ``obs`` column name (matrix input), the path
        of a ``barcode<TAB>label`` file (:func:`read_cluster_labels`), or a Series/mapping
        barcode -> label. For a fragments file the labels are returned as read; that their
        barcodes are in the file is checked by :func:`pseudobulk_fragments` (one pass).
    bin_size
        Genome bin size (bp) of the fragments tokenization.
    n_clusters
        Target number of clusters (Leiden resolution searched); ``None`` runs Leiden once at
        ``resolution``.
    resolution
        Leiden resolution when ``n_clusters`` is ``None``.
    min_fragments
        Fragments input: cells with fewer fragments are not clustered (and get no label).
        Not used with ``groupby`` or for a matrix (every cell with a count is clustered).
    seed
        Random state of the SVD and of Leiden.
    progress
        Progress bar of the tokenization (``None``: only on a terminal).

    Returns
    -------
    pandas.Series
        Index = cell barcodes (``obs_names`` of a matrix), values = cluster labels (str;
        Leiden clusters are ``"0"``, ``"1"``... with ``"0"`` the largest).

    Raises
    ------
    InputFormatError
        Missing or unreadable input, an ``obs`` column that does not exist, a label file
        naming no cell of a matrix, no cell passing ``min_fragments``.
    GenomeMismatchError
        A fragment or peak does not fit ``genome``.

    Examples
    --------
    >>> labels = cluster_cells("fragments.tsv.gz", genome="hg38", n_clusters=8)  # doctest: +SKIP
    >>> labels = cluster_cells("bm.h5ad", groupby="cell_type")  # doctest: +SKIP
    >>> labels.value_counts()  # doctest: +SKIP
    """
    kind = _kind(data)
    if kind == "matrix":
        pm, source = _read_matrix(data)
        return _cluster_matrix(pm, source, genome=genome, groupby=groupby, n_clusters=n_clusters,
                               resolution=resolution, seed=seed)
    p = os.fspath(data)
    if groupby is not None:
        if isinstance(groupby, (pd.Series, Mapping)):
            return _as_labels(groupby, "groupby")
        if not isinstance(groupby, (str, os.PathLike)):
            raise TypeError(f"groupby must be a label file path or a Series, got {type(groupby).__name__}")
        if not os.path.exists(groupby):
            raise InputMissingError(groupby, "cluster label file does not exist (the labels of a fragments file "
                                    "come from a 'barcode<TAB>label' file)")
        return read_cluster_labels(groupby)
    if genome is None:
        raise ValueError(f"{p}: a genome is needed to bin the fragments for clustering (genome='hg38'...), "
                         "or give labels with groupby")
    from atacformer.demo import compact
    from atacformer.tokenizers import tokenize_fragments
    from atacformer.vocab import Vocabulary

    cells = compact(tokenize_fragments(p, Vocabulary.from_bins(genome, bin_size), genome=genome,
                                       min_fragments=min_fragments, progress=progress))
    log.info("%s: clustering %d cells with at least %d fragments", p, cells.n_cells, min_fragments)
    return _cluster_embedding(cells, p, n_clusters=n_clusters, resolution=resolution, seed=seed)


def _cluster_matrix(pm, source, *, genome, groupby, n_clusters, resolution, seed) -> pd.Series:
    if genome is not None:
        _check_peaks(pm, genome, source)
    if groupby is not None:
        return _matrix_labels(pm, groupby, source)
    from atacformer.tokenizers import TokenizedCells, tokenize_peak_matrix
    from atacformer.vocab import Vocabulary

    vocab = Vocabulary(pm.peaks["chrom"].astype(str).to_numpy(), pm.peaks["start"].to_numpy(),
                       pm.peaks["end"].to_numpy())
    cells = tokenize_peak_matrix(pm, vocab)
    nonempty = np.flatnonzero(np.diff(cells.X.indptr) > 0)
    if len(nonempty) < cells.n_cells:
        log.info("%s: %d cells without any count are not clustered", source, cells.n_cells - len(nonempty))
        cells = TokenizedCells(X=cells.X[nonempty], barcodes=np.asarray(cells.barcodes)[nonempty], vocab=vocab)
    return _cluster_embedding(cells, source, n_clusters=n_clusters, resolution=resolution, seed=seed)


def _check_peaks(pm, genome, source) -> np.ndarray:
    """Check the matrix peaks against ``genome``; returns the mask of peaks on its
    chromosomes (peaks on unplaced contigs it lacks are dropped)."""
    from atacformer.genome import get_genome
    from atacformer.genome import is_contig

    g = get_genome(genome)
    chroms = pm.peaks["chrom"].astype(str).to_numpy(dtype=object)
    keep = np.array([c in g.chrom_sizes for c in chroms], dtype=bool)
    checked = keep | ~np.array([is_contig(c) for c in chroms], dtype=bool)  # unknown contigs are dropped
    g.check_intervals(chroms[checked], pm.peaks["end"].to_numpy()[checked], source=source)
    return keep


# --------------------------------------------------------------------------- pseudo-bulk


class _GenomeCheck:
    """Chromosome and coordinate checks of fragment blocks against a genome, as the
    tokenizer makes them: unplaced contigs the genome lacks are flagged unusable, any other
    unknown chromosome or an end past a chromosome's end is an error naming the line."""

    def __init__(self, genome):
        from atacformer.genome import get_genome

        self.g = get_genome(genome)
        self.usable = np.zeros(0, dtype=bool)
        self.length = np.zeros(0, dtype=np.int64)

    def __call__(self, fb) -> np.ndarray:
        """Per-row mask of the fragments on the genome's chromosomes."""
        from atacformer.genome import normalize_chrom
        from atacformer.genome import is_contig

        sizes = self.g.chrom_sizes
        if len(fb.chroms) > len(self.usable):
            n0 = len(self.usable)
            usable = np.ones(len(fb.chroms) - n0, dtype=bool)
            length = np.full(len(usable), np.iinfo(np.int64).max, dtype=np.int64)
            for k, c in enumerate(fb.chroms[n0:]):
                if c in sizes:
                    length[k] = sizes[c]
                elif is_contig(c):
                    usable[k] = False
                else:
                    fb.fail_at(lambda f, bad=c: (f"chromosome {f[0]!r} is not in genome {self.g.name}", f[0])
                               if normalize_chrom(f[0]) == bad else None, error=GenomeMismatchError)
            self.usable = np.concatenate([self.usable, usable])
            self.length = np.concatenate([self.length, length])
        if (fb.ends > self.length[fb.chrom_codes]).any():
            fb.fail_at(lambda f: (f"end lies past the end of {normalize_chrom(f[0])} "
                                  f"({sizes[normalize_chrom(f[0])]} bp) in genome {self.g.name}", int(f[2]))
                       if normalize_chrom(f[0]) in sizes and int(f[2]) > sizes[normalize_chrom(f[0])] else None,
                       error=GenomeMismatchError)
        return self.usable[fb.chrom_codes]


def _line_spans(fb) -> tuple[np.ndarray, np.ndarray]:
    """Byte ``[start, end)`` (newline included) of each parsed line of a block: the parser
    keeps every non-blank line as one row, in order."""
    buf = np.frombuffer(fb.text, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    ls = np.zeros(len(nl), dtype=np.int64)
    ls[1:] = nl[:-1] + 1
    le = nl.astype(np.int64) + 1
    full = le - ls > 1
    if not full.all():
        ls, le = ls[full], le[full]
    if len(ls) != len(fb):  # the reader's invariant; never silently mix lines up
        raise AtacformerError(f"{fb.path}, line {fb.first_line}: block has {len(ls)} lines but {len(fb)} "
                              "parsed fragments")
    return ls, le


def _open_out(path: Path, compress: bool):
    if compress:
        from isal import igzip

        return igzip.open(path, "wb", compresslevel=1)
    return open(path, "wb")


def _pseudobulk(fragments, clusters, outdir, *, genome=None, compress=True, progress=None, only=None):
    """:func:`pseudobulk_fragments`, also returning per-label fragment and cell counts.

    ``only``: the labels to write (default all); every labelled barcode is still looked for
    in the file, so that labels naming none of its cells are an error."""
    from tqdm.auto import tqdm

    from atacformer.io._text import prefetch
    from atacformer.io.fragments import FragmentReader

    p = _require_file(fragments, "fragments")
    labels = _as_labels(clusters)
    source = labels.attrs.get("source")
    if not len(labels):
        raise InputFormatError(source, "no labelled cell (the clusters are empty)")
    cats = list(pd.unique(labels.to_numpy()))
    if only is not None:
        cats = [c for c in cats if c in set(only)]
    stems = _file_stems(cats)
    cell_code = pd.Index(cats).get_indexer(labels.to_numpy()).astype(np.int64)  # -1: not written
    cell_index = pd.Index(labels.index)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    suffix = ".fragments.tsv.gz" if compress else ".fragments.tsv"
    final = {lab: outdir / f"{stems[lab]}{suffix}" for lab in cats}
    tmp = Path(tempfile.mkdtemp(prefix=".pseudobulk-", dir=outdir))
    check = _GenomeCheck(genome) if genome is not None else None
    handles, bar = [], None
    try:
        handles = [_open_out(tmp / final[lab].name, compress) for lab in cats]
        reader = FragmentReader(p)
        lut = np.zeros(0, dtype=np.int64)  # file barcode id -> cluster code, -1 when unlabelled
        n_frag = np.zeros(len(cats), dtype=np.int64)
        n_lines = 0
        bar = tqdm(desc=f"pseudo-bulk {os.path.basename(p)}", unit=" fragments", unit_scale=True,
                   disable=(progress is False) if progress is not None else None, leave=False)
        for fb in prefetch(reader):
            if check is not None:
                check(fb)
            if len(lut) < reader.n_barcodes:
                rows = cell_index.get_indexer(reader.barcodes(len(lut)))
                lut = np.concatenate([lut, np.where(rows >= 0, cell_code[rows], -1)])
            code = lut[fb.barcode_codes]
            n_lines += len(fb)
            bar.update(len(fb))
            sel = np.flatnonzero(code >= 0)
            if not len(sel):
                continue
            ls, le = _line_spans(fb)
            order = sel[np.argsort(code[sel], kind="stable")]  # grouped by cluster, file order within
            c = code[order]
            lens = le[order] - ls[order]
            cum = np.cumsum(lens)
            idx = np.arange(cum[-1], dtype=np.int64) + np.repeat(ls[order] - (cum - lens), lens)
            out = np.frombuffer(fb.text, dtype=np.uint8)[idx]
            bounds = np.concatenate([[0], cum])[np.searchsorted(c, np.arange(len(cats) + 1))]
            for k in np.unique(c):
                handles[k].write(out[bounds[k]:bounds[k + 1]].data)
            n_frag += np.bincount(c, minlength=len(cats))
        bar.close()
        bar = None
        for h in handles:
            h.close()
        seen = cell_index.isin(reader.barcodes())
        if not seen.any():
            from atacformer.tokenizers.fragments import _suffix_hint

            file_bcs = reader.barcodes()[:1000]
            what = f"the label file {source}" if source else "the clusters"
            raise InputFormatError(source if source else p,
                                   f"none of the {len(labels):,} barcodes of {what} appears in the fragments file "
                                   f"{p} (label barcode e.g. {labels.index[0]!r}, file barcode e.g. "
                                   f"{file_bcs[0]!r}); {_suffix_hint(file_bcs, list(labels.index[:1000]))}")
        if not seen.all():
            log.warning("%s: %d of the %d labelled cells have no fragment in %s", source or "clusters",
                        int((~seen).sum()), len(labels), p)
        n_cells = np.bincount(cell_code[seen & (cell_code >= 0)], minlength=len(cats))
        for k, lab in enumerate(cats):
            os.replace(tmp / final[lab].name, final[lab])
            if n_frag[k] == 0:
                log.warning("%s: cluster %r has no fragment", p, lab)
        log.info("%s: %d of %d fragments pooled into %d pseudo-bulk files under %s", p, int(n_frag.sum()), n_lines,
                 len(cats), outdir)
        return (final, {lab: int(n_frag[k]) for k, lab in enumerate(cats)},
                {lab: int(n_cells[k]) for k, lab in enumerate(cats)})
    finally:
        if bar is not None:
            bar.close()
        for h in handles:
            h.close()
        shutil.rmtree(tmp, ignore_errors=True)


def pseudobulk_fragments(fragments, clusters: pd.Series, outdir, *, genome=None, compress: bool = True,
                         progress: bool | None = None) -> dict[str, Path]:
    """Pool each cluster's fragments into one fragments file, in one pass over the input.

    The file is streamed in blocks (:class:`atacformer.io.fragments.FragmentReader`), so
    memory is bounded by a block, not by the file. Each output line is the input line
    as it is (all its columns), in file order; only the labelled cells' fragments are
    written.

    Parameters
    ----------
    fragments
        10x fragments file (gz/bgz/plain).
    clusters
        Series barcode -> cluster label (e.g. from :func:`cluster_cells`); unlabelled
        (NaN) cells are left out.
    outdir
        Folder of the outputs ``<label>.fragments.tsv[.gz]`` (the label made file-name safe).
    genome
        When given, chromosomes and coordinates are checked against it (errors name the
        line); lines are copied whatever their chromosome.
    compress
        gzip the outputs (fast level); ``False`` writes plain text.
    progress
        Progress bar (``None``: only on a terminal).

    Returns
    -------
    dict
        Label -> path of its pseudo-bulk file (every label, empty files included; a
        cluster with no fragment is logged).

    Raises
    ------
    InputFormatError
        Missing or malformed fragments file, or none of the labelled barcodes in it.
    GenomeMismatchError
        With ``genome``: a chromosome it lacks, or an end past a chromosome's end.

    Examples
    --------
    >>> labels = read_cluster_labels("cell_labels.tsv")  # doctest: +SKIP
    >>> files = pseudobulk_fragments("fragments.tsv.gz", labels, "pseudobulk")  # doctest: +SKIP
    >>> sorted(files)  # doctest: +SKIP
    ['B_cell', 'Monocyte', 'T_cell']
    """
    paths, _, _ = _pseudobulk(fragments, clusters, outdir, genome=genome, compress=compress, progress=progress)
    return paths


# --------------------------------------------------------------------------- MACS3


def _macs3_executable() -> str:
    """The ``macs3`` console script next to the running Python, else on ``PATH``."""
    here = Path(sys.executable).parent / ("macs3.exe" if os.name == "nt" else "macs3")
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("macs3")
    if found:
        return found
    raise AtacformerError(f"MACS3 is not installed (no 'macs3' next to {sys.executable} or on PATH); "
                          f"install it with: {MACS3_HINT}")


def effective_genome_size(genome) -> str:
    """MACS3's ``-g``: ``hs`` for hg19/hg38, ``mm`` for mm10/mm39, else the sum of the
    chromosome lengths.

    Examples
    --------
    >>> effective_genome_size("hg38"), effective_genome_size("GRCm39")
    ('hs', 'mm')
    """
    from atacformer.genome import get_genome

    g = get_genome(genome)
    return _GSIZE.get(g.name) or str(sum(g.chrom_sizes.values()))


def _write_insertions(fragments: str, path: Path, genome) -> tuple[int, int]:
    """Both Tn5 insertions of every fragment on the genome's chromosomes, as stranded 1-bp
    BED records (gzip): ``[s, s+1) +`` and ``[e-1, e) -``. Returns (fragments read, written)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from atacformer.io._text import prefetch
    from atacformer.io.fragments import FragmentReader

    check = _GenomeCheck(genome)
    opts = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    dot = pa.array(["."])
    zero = pa.array(["0"])
    strands = pa.array(["+", "-"])
    n_in = n_out = 0
    with _open_out(path, True) as f:
        for fb in prefetch(FragmentReader(fragments)):
            ok = check(fb) & (fb.ends > fb.starts)
            n_in += len(fb)
            rows = np.flatnonzero(ok)
            n = len(rows)
            if not n:
                continue
            codes = fb.chrom_codes[rows].astype(np.int32)
            pos = np.concatenate([fb.starts[rows], fb.ends[rows] - 1])
            zeros = np.zeros(2 * n, dtype=np.int8)
            table = pa.table({
                "chrom": pa.DictionaryArray.from_arrays(np.concatenate([codes, codes]), pa.array(fb.chroms)),
                "start": pos, "end": pos + 1,
                "name": pa.DictionaryArray.from_arrays(zeros, dot),
                "score": pa.DictionaryArray.from_arrays(zeros, zero),
                "strand": pa.DictionaryArray.from_arrays(np.repeat(np.array([0, 1], np.int8), n), strands),
            })
            buf = io.BytesIO()
            pacsv.write_csv(table, buf, opts)
            f.write(buf.getbuffer())
            n_out += n
    return n_in, n_out


def _clip_peaks(path: Path, genome) -> int:
    """Clip narrowPeak intervals to their chromosome (MACS3 does not know its ends; a pileup
    near an end can pass it); the summit offset follows. Returns the number clipped."""
    from atacformer.genome import get_genome

    if path.stat().st_size == 0:
        return 0
    sizes = get_genome(genome).chrom_sizes
    df = pd.read_csv(path, sep="\t", header=None, dtype={0: str})
    length = df[0].map(sizes).fillna(np.iinfo(np.int64).max).astype(np.int64).to_numpy()
    s, e = df[1].to_numpy(np.int64), df[2].to_numpy(np.int64)
    bad = (s < 0) | (e > length)
    if not bad.any():
        return 0
    ns, ne = np.maximum(s, 0), np.minimum(e, length)
    if df.shape[1] >= 10:
        summit = np.where(df[9].to_numpy(np.int64) >= 0, s + df[9].to_numpy(np.int64), -1)
        df[9] = np.where(summit >= 0, np.clip(summit, ns, np.maximum(ne - 1, ns)) - ns, -1)
    df[1], df[2] = ns, ne
    df = df[ne > ns]
    tmp = path.with_name(path.name + ".clip")
    df.to_csv(tmp, sep="\t", header=False, index=False)
    os.replace(tmp, path)
    return int(bad.sum())


def call_peaks(pseudobulk_file, outdir, *, genome, name: str, qvalue: float = 0.01, shift: int = -100,
               extsize: int = 200, keep_dup: str = "all", extra_args=()) -> Path:
    """Call peaks on one pseudo-bulk fragments file with MACS3 (Zhang 2008 MACS).

    Runs the real ``macs3 callpeak`` (MACS3's own command, as a subprocess) on the Tn5
    insertions of the fragments, the ATAC-seq convention of ArchR (Granja 2021) and
    SnapATAC2 (Zhang 2024): each fragment ``[s, e)`` gives two insertions, written as
    1-bp BED reads ``[s, s+1)`` on ``+`` and ``[e-1, e)`` on ``-``, and MACS3 runs
    ``-f BED --nomodel --shift -100 --extsize 200 --keep-dup all``, so each cut site is
    smoothed over 200 bp centred on it (MACS3 takes a ``+`` read's 5' end at its start and
    a ``-`` read's at its end: the ``+`` pileup is ``[s-100, s+100)``, the ``-`` one
    ``[e-100, e+100)``).

    Why ``-f BED`` on insertions rather than ``-f FRAG`` or ``-f BEDPE`` on the fragments:
    MACS3's paired-end formats pile up whole fragments and set ``--shift`` to 0 (its
    option check "neutralizes" it), so the insertion model cannot be asked for with them;
    ``-f BED`` on the fragments file itself would read column 5 as a score and, with no
    strand column, keep only each fragment's left end. Each fragment counts once (the
    10x count column, the number of read pairs behind a fragment, is not used);
    ``--keep-dup all`` keeps insertions of different cells at the same base.
    Fragments on unplaced contigs the genome lacks are left out. MACS3 reads the tag size of
    these 1-bp reads as 1, so its default ``--max-gap`` is 1 bp and ``--min-length`` is
    ``extsize``, as with ArchR's insertion files; SnapATAC2 merges across 30 bp
    (``extra_args=["--max-gap", "30"]``).

    Parameters
    ----------
    pseudobulk_file
        Fragments file (e.g. from :func:`pseudobulk_fragments`).
    outdir
        Folder of the result ``<name>_peaks.narrowPeak``; MACS3's other outputs are not kept.
    genome
        Genome name or ``.chrom.sizes`` path: the fragments are checked against it, MACS3's
        ``-g`` is ``hs`` (hg19, hg38), ``mm`` (mm10, mm39) or the sum of its chromosome
        lengths, and peaks are clipped to the chromosome ends.
    name
        MACS3's ``-n`` (peak names are ``<name>_peak_<k>``); no path separator.
    qvalue, shift, extsize, keep_dup
        MACS3's ``-q``, ``--shift``, ``--extsize``, ``--keep-dup``.
    extra_args
        Further ``macs3 callpeak`` arguments (e.g. ``["--call-summits"]``).

    Returns
    -------
    Path
        The narrowPeak file (chrom, start, end, name, score, strand, fold change,
        -log10 p, -log10 q, summit offset). It may be empty: no peak passed the cutoff
        (logged as a warning).

    Raises
    ------
    AtacformerError
        MACS3 missing (install with ``pip install "atacformer[peaks]"``), or it failed (the
        message ends with its stderr).
    InputFormatError, GenomeMismatchError
        A missing or malformed file, or fragments that do not fit ``genome``.

    Examples
    --------
    >>> call_peaks("pseudobulk/B_cell.fragments.tsv.gz", "peaks", genome="hg19", name="B_cell")  # doctest: +SKIP
    PosixPath('peaks/B_cell_peaks.narrowPeak')
    """
    p = _require_file(pseudobulk_file, "pseudo-bulk fragments")
    if not name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"name must be a plain file-name stem, got {name!r}")
    exe = _macs3_executable()
    gsize = effective_genome_size(genome)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    final = outdir / f"{name}_peaks.narrowPeak"
    tmp = Path(tempfile.mkdtemp(prefix=".macs3-", dir=outdir))
    try:
        t0 = time.perf_counter()
        bed = tmp / f"{name}.insertions.bed.gz"
        n_frag, n_used = _write_insertions(p, bed, genome)
        if n_used == 0:
            raise InputFormatError(p, f"no fragment on the chromosomes of genome {genome} to call peaks on")
        cmd = [exe, "callpeak", "-t", str(bed), "-f", "BED", "-g", gsize, "-n", name, "--outdir", str(tmp),
               "-q", str(qvalue), "--nomodel", "--shift", str(shift), "--extsize", str(extsize),
               "--keep-dup", str(keep_dup), "--tempdir", str(tmp), *map(str, extra_args)]
        t1 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        produced = tmp / f"{name}_peaks.narrowPeak"
        if res.returncode != 0 or not produced.exists():
            tail = "\n".join(res.stderr.strip().splitlines()[-15:])
            why = f"exited with status {res.returncode}" if res.returncode else "wrote no narrowPeak file"
            raise AtacformerError(f"MACS3 callpeak on {p} {why}: {' '.join(cmd)}\n{tail}")
        log.debug("MACS3 on %s:\n%s", p, res.stderr)
        n_clip = _clip_peaks(produced, genome)
        if n_clip:
            log.info("%s: %d peaks clipped to their chromosome's ends", name, n_clip)
        os.replace(produced, final)
        with open(final, "rb") as f:
            n_peaks = sum(1 for _ in f)
        if n_peaks == 0:
            log.warning("MACS3 found no peak in %s (%d fragments, q <= %g): %s is empty", p, n_used, qvalue, final)
        log.info("%s: %d peaks from %d fragments (MACS3 %.1fs, insertions %.1fs)", name, n_peaks, n_used,
                 time.perf_counter() - t1, t1 - t0)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the chain


def _matrix_peak_sets(pm, labels: pd.Series, keep_peaks: np.ndarray, tmp: Path, stems, min_cell_fraction: float):
    """Per label: the peaks with a non-zero count in at least ``min_cell_fraction`` of its
    cells, as a sorted BED3 under ``tmp``."""
    X = pm.X.tocsr()
    open_ = X.copy()
    open_.data = (open_.data != 0).astype(np.int32)
    open_.eliminate_zeros()
    rows = pd.Index(pm.obs.index.astype(str)).get_indexer(labels.index)
    peaks = pm.peaks[["chrom", "start", "end"]].reset_index(drop=True)
    out = {}
    for lab, stem in stems.items():
        r = rows[(labels == lab).to_numpy()]
        count = np.asarray(open_[r].sum(axis=0)).ravel()
        frac = count / len(r)
        sel = peaks[(frac >= min_cell_fraction) & keep_peaks]
        sel = sel.drop_duplicates().sort_values(["chrom", "start", "end"], kind="stable")
        path = tmp / f"{stem}_peaks.bed"
        sel.to_csv(path, sep="\t", header=False, index=False)
        if not len(sel):
            log.warning("cluster %r: no peak open in %.3g of its %d cells; its BED is empty", lab,
                        min_cell_fraction, len(r))
        log.info("cluster %r: %d of %d peaks open in >= %.3g of its %d cells", lab, len(sel), len(peaks),
                 min_cell_fraction, len(r))
        out[lab] = path
    return out


def _write_clusters(labels: pd.Series, path: Path) -> None:
    pd.DataFrame({"barcode": labels.index, "cluster": labels.to_numpy()}).to_csv(path, sep="\t", index=False)


def cluster_peak_sets(data, outdir, *, genome, groupby=None, bin_size: int = 5000, n_clusters: int | None = None,
                      resolution: float = 1.0, min_fragments: int = MIN_FRAGMENTS, min_cells: int = MIN_CELLS,
                      min_cell_fraction: float = MIN_CELL_FRACTION, qvalue: float = 0.01, shift: int = -100,
                      extsize: int = 200, extra_args=(), keep_pseudobulk: bool = False, seed: int = 0,
                      overwrite: bool = False, progress: bool | None = None) -> dict[str, Path]:
    """One peak set per cell cluster: the first half of the consensus-universe recipe
    (LeRoy 2025): cells -> clusters -> pseudo-bulk per cluster -> peaks.

    Fragments route (a fragments file): :func:`cluster_cells` -> :func:`pseudobulk_fragments`
    -> :func:`call_peaks` on each cluster (MACS3, Zhang 2008 MACS, on Tn5 insertions).

    Matrix route (a peak matrix): there are no fragments, so MACS3 cannot run. A cluster's
    pseudo-bulk peak set is then the matrix peaks open (non-zero count) in at least
    ``min_cell_fraction`` of the cluster's cells (default 0.05: a peak seen in at least 1 cell
    of 20; on the Buenrostro 2018 bone-marrow matrix, 533 cells x 36k peaks, it keeps 8k to
    28k peaks per cell type), written as a BED3 sorted by chromosome name (as text), start
    and end, the order of ``sort -k1,1 -k2,2n``.

    Parameters
    ----------
    data
        Fragments file, or peak matrix (path or AnnData), as for :func:`cluster_cells`.
    outdir
        Output folder (made when missing): ``clusters.tsv`` (``barcode<TAB>cluster``, every
        labelled cell), one ``<label>_peaks.narrowPeak`` (fragments) or ``<label>_peaks.bed``
        (matrix) per cluster kept, and with ``keep_pseudobulk`` the ``pseudobulk/`` files.
        Other files in it are left alone.
    genome
        Genome name (``hg38``...) or ``.chrom.sizes`` path; inputs are checked against it.
    groupby, bin_size, n_clusters, resolution, min_fragments, seed
        How cells are labelled (:func:`cluster_cells`).
    min_cells
        Clusters with fewer cells (cells with at least one fragment, for fragments) get no
        peak set; they are logged.
    min_cell_fraction
        Matrix route: the fraction of a cluster's cells a peak must be open in.
    qvalue, shift, extsize, extra_args
        MACS3 settings (:func:`call_peaks`).
    keep_pseudobulk
        Keep the per-cluster fragments files (``outdir/pseudobulk/``).
    overwrite
        Replace output files that exist; otherwise they are an error (before any work).
    progress
        Progress bars (``None``: only on a terminal).

    Returns
    -------
    dict
        Cluster label -> its peak file, for the clusters kept, in label order.

    Raises
    ------
    AtacformerError
        MACS3 missing or failing (fragments route).
    InputFormatError
        Missing or malformed inputs, labels naming no cell of the data.
    GenomeMismatchError
        Data not of ``genome``.
    OutputError
        An output file exists and ``overwrite`` is false.

    Notes
    -----
    Everything is written in a temporary folder inside ``outdir`` and renamed into place
    at the end; on any error that folder is removed (and ``outdir`` too when this call made
    it), so nothing partial is left behind.

    Examples
    --------
    >>> peaks = cluster_peak_sets("fragments.tsv.gz", "peaksets", genome="hg38", n_clusters=10)  # doctest: +SKIP
    >>> peaks = cluster_peak_sets("frags.tsv.gz", "peaksets", genome="hg19",
    ...                           groupby="cell_labels.tsv")  # doctest: +SKIP
    >>> peaks = cluster_peak_sets("bm.h5ad", "peaksets", genome="hg19", groupby="cell_type")  # doctest: +SKIP
    """
    kind = _kind(data)
    if kind == "fragments":
        _macs3_executable()  # fail before the long work
        effective_genome_size(genome)
    outdir = Path(outdir)
    created = not outdir.exists()
    outdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".cluster-peaks-", dir=outdir))
    ok = False
    moved: list[Path] = []
    try:
        if kind == "matrix":
            pm, source = _read_matrix(data)
            keep_peaks = _check_peaks(pm, genome, source)
            labels = _cluster_matrix(pm, source, genome=None, groupby=groupby, n_clusters=n_clusters,
                                     resolution=resolution, seed=seed)
        else:
            source = os.fspath(data)
            labels = cluster_cells(data, genome=genome, groupby=groupby, bin_size=bin_size, n_clusters=n_clusters,
                                   resolution=resolution, min_fragments=min_fragments, seed=seed, progress=progress)
        labels = _as_labels(labels)
        if not len(labels):
            raise InputFormatError(source, "no labelled cell")
        cats = sorted(pd.unique(labels.to_numpy()), key=_natural)
        stems = _file_stems(cats)
        ext = "_peaks.narrowPeak" if kind == "fragments" else "_peaks.bed"
        targets = [outdir / _CLUSTERS_FILE] + [outdir / f"{stems[c]}{ext}" for c in cats]
        if keep_pseudobulk:
            targets.append(outdir / "pseudobulk")
        existing = [t for t in targets if t.exists()]
        if existing and not overwrite:
            raise OutputError(f"{existing[0]} exists; pass overwrite=True to replace it")
        _write_clusters(labels, tmp / _CLUSTERS_FILE)
        size = labels.value_counts()
        small = [c for c in cats if size[c] < min_cells]
        for c in small:
            log.warning("cluster %r has %d cells (< min_cells=%d): no peak set", c, size[c], min_cells)
        kept = [c for c in cats if c not in small]
        results: dict[str, Path] = {}
        if kind == "matrix":
            results = _matrix_peak_sets(pm, labels[labels.isin(kept)], keep_peaks, tmp,
                                        {c: stems[c] for c in kept}, min_cell_fraction)
        else:  # one pass even when no cluster is kept: labels naming no cell of the file are an error
            pbdir = tmp / "pseudobulk"
            files, n_frag, n_cells = _pseudobulk(source, labels, pbdir, genome=genome, progress=progress, only=kept)
            for c in kept:
                if n_cells[c] < min_cells:
                    log.warning("cluster %r has %d cells with fragments in %s (< min_cells=%d): no peak set", c,
                                n_cells[c], source, min_cells)
                    continue
                t = time.perf_counter()
                results[c] = call_peaks(files[c], tmp, genome=genome, name=stems[c], qvalue=qvalue, shift=shift,
                                        extsize=extsize, extra_args=extra_args)
                log.info("cluster %r: %d cells, %d fragments, peaks in %.1fs", c, n_cells[c], n_frag[c],
                         time.perf_counter() - t)
        if not results:
            log.warning("no cluster had %d cells or more: no peak set was made", min_cells)
        # all done: move into place (renames; undone if one fails)
        if keep_pseudobulk and kind == "fragments" and kept:
            if (outdir / "pseudobulk").exists():
                shutil.rmtree(outdir / "pseudobulk")
            os.replace(tmp / "pseudobulk", outdir / "pseudobulk")
            moved.append(outdir / "pseudobulk")
        final = {}
        for c, path in results.items():
            final[c] = outdir / path.name
            os.replace(path, final[c])
            moved.append(final[c])
        os.replace(tmp / _CLUSTERS_FILE, outdir / _CLUSTERS_FILE)
        ok = True
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            for m in moved:
                shutil.rmtree(m, ignore_errors=True) if m.is_dir() else m.unlink(missing_ok=True)
            if created:
                shutil.rmtree(outdir, ignore_errors=True)


def _natural(label: str):
    """Sort key: numeric labels by value ("2" before "10"), then the others by text."""
    return (0, int(label), "") if label.isdigit() else (1, 0, label)

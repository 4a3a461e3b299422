"""Region sets -> tokens: bulk BED files and peak-by-cell matrices in any coordinates."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import scipy.sparse as sp

from atacformer.errors import InputFormatError
from atacformer.genome import get_genome
from atacformer.tokenizers._cells import TokenizedCells, csr_from_pairs
from atacformer.vocab import Vocabulary

log = logging.getLogger(__name__)


def region_token_pairs(vocab: Vocabulary, chroms, starts, ends) -> tuple[np.ndarray, np.ndarray]:
    """All ``(region_index, token_id)`` overlap pairs of a region list with a vocabulary.

    Regions on chromosomes the vocabulary lacks give no pair.
    """
    chroms = np.asarray(chroms, dtype=object)
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    codes, uniq = pd.factorize(chroms)
    out_q, out_t = [], []
    for k, c in enumerate(uniq):
        sel = np.flatnonzero(codes == k)
        q, t = vocab.overlap_pairs(c, starts[sel], ends[sel])
        out_q.append(sel[q])
        out_t.append(t)
    if not out_q:
        e = np.empty(0, dtype=np.int64)
        return e, e.copy()
    return np.concatenate(out_q), np.concatenate(out_t)


def region_to_token_matrix(vocab: Vocabulary, chroms, starts, ends) -> sp.csr_matrix:
    """Binary (n_regions_in x vocab.n_regions) overlap matrix."""
    q, t = region_token_pairs(vocab, chroms, starts, ends)
    m = csr_from_pairs(q, t, len(starts), vocab.n_regions)
    m.data[:] = 1
    return m


def tokenize_bed(path, vocab: Vocabulary, genome=None) -> np.ndarray:
    """Token ids of a BED file (one "cell" per file, e.g. a bulk peak set): the sorted,
    unique ids of the vocabulary regions overlapped by any of its regions.

    Examples
    --------
    >>> ids = tokenize_bed("sample.narrowPeak.gz", Vocabulary.from_bins("hg38", 5000))  # doctest: +SKIP
    """
    from atacformer.io.bed import read_bed

    df = read_bed(path)
    g = get_genome(genome) if genome is not None else (get_genome(vocab.genome) if vocab.genome else None)
    if g is not None:
        _check_with_contigs(g, df["chrom"].to_numpy(), df["end"].to_numpy(), os.fspath(path))
    q, t = region_token_pairs(vocab, df["chrom"].to_numpy(), df["start"].to_numpy(), df["end"].to_numpy())
    _check_mapped(os.fspath(path), vocab, len(df), len(np.unique(q)), "region", df["chrom"].to_numpy())
    return np.unique(t)


def _check_mapped(source, vocab: Vocabulary, n_in: int, n_mapped: int, what: str, chroms) -> None:
    """Refuse an input none of whose regions (``what``) overlaps the vocabulary; warn when
    under 1 % of them do."""
    if n_in and n_mapped == 0:
        uniq = list(pd.unique(np.asarray(chroms, dtype=object)))
        seen = ", ".join(map(str, uniq[:5])) + (", ..." if len(uniq) > 5 else "")
        raise InputFormatError(
            source, f"no {what} overlaps any of the {vocab.n_regions:,} regions of the vocabulary "
            f"({vocab!r}); check that the vocabulary is of this input's genome (its chromosomes: {seen})")
    if n_mapped < 0.01 * n_in:
        log.warning("%s: only %.2f%% of the %ss (%d of %d) overlap a region of the vocabulary (%r); "
                    "is it of this input's genome?", source, 100.0 * n_mapped / n_in, what, n_mapped, n_in,
                    vocab)


def _check_with_contigs(genome, chroms, ends, source):
    from atacformer.genome import is_contig

    chroms = np.asarray(chroms, dtype=object)
    keep = np.array([c in genome.chrom_sizes or not is_contig(c) for c in chroms], dtype=bool)
    genome.check_intervals(chroms[keep], np.asarray(ends)[keep], source=source)


def tokenize_peak_matrix(matrix, vocab: Vocabulary, genome=None) -> TokenizedCells:
    """Re-express a peak-by-cell matrix in a vocabulary.

    Each cell's tokens are the vocabulary regions overlapped by its non-zero peaks, with the
    peaks' counts summed (``X_tokens = X_peaks @ M`` with ``M`` the binary peak x token
    overlap matrix), so e.g. hg19 500 bp peaks map onto hg19 5 kb bins.

    Parameters
    ----------
    matrix
        A path (``.h5ad``, 10x ``.h5``, Matrix Market folder) or a ``PeakMatrix`` from
        :func:`atacformer.io.matrix.read_peak_matrix`, or an AnnData with coordinates.
    vocab
        Target vocabulary.
    genome
        Checked against the peaks' coordinates (default ``vocab.genome``).
    """
    from atacformer.io.matrix import PeakMatrix, check_counts, read_peak_matrix

    if isinstance(matrix, (str, os.PathLike)):
        pm = read_peak_matrix(matrix)
    elif isinstance(matrix, PeakMatrix):
        pm = matrix
        check_counts(pm)
    else:  # AnnData
        from atacformer.io.matrix import peak_matrix_from_anndata

        pm = peak_matrix_from_anndata(matrix)
    g = get_genome(genome) if genome is not None else (get_genome(vocab.genome) if vocab.genome else None)
    src = os.fspath(pm.path) if pm.path is not None else None
    if g is not None:
        _check_with_contigs(g, pm.peaks["chrom"].to_numpy(), pm.peaks["end"].to_numpy(), src)
    M = region_to_token_matrix(vocab, pm.peaks["chrom"].to_numpy(), pm.peaks["start"].to_numpy(),
                               pm.peaks["end"].to_numpy())
    n_unmapped = int(np.count_nonzero(np.diff(M.indptr) == 0))
    if n_unmapped:
        log.info("%s: %d of %d peaks overlap no vocabulary region", src, n_unmapped, M.shape[0])
    _check_mapped(src, vocab, M.shape[0], M.shape[0] - n_unmapped, "peak", pm.peaks["chrom"].to_numpy())
    X = sp.csr_matrix(pm.X)
    if X.dtype.kind == "f":
        if not np.all(np.mod(X.data, 1) == 0):
            raise InputFormatError(src, "peak counts are not integers; tokenizing needs raw counts")
    X = (X.astype(np.int64) @ M.astype(np.int64)).tocsr()
    X.eliminate_zeros()
    X.sort_indices()
    if X.nnz == 0:
        raise InputFormatError(
            src, "no cell has a count on a peak that overlaps the vocabulary" if sp.csr_matrix(pm.X).count_nonzero()
            else "the matrix holds no non-zero count")
    obs = pm.obs.copy()
    return TokenizedCells(X=X.astype(np.int32), barcodes=np.asarray(pm.obs.index, dtype=object), vocab=vocab, obs=obs)

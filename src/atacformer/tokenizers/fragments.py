"""Fragments file -> cells x vocabulary counts.

Each fragment ``[s, e)`` adds 1 to every vocabulary region it overlaps (``mode="fragment"``),
or, with ``mode="insertion"``, each of its two Tn5 insertion sites (``s`` and ``e - 1``, the
SnapATAC2 convention) adds 1 to the region containing it. Work is compiled or vectorised per
block; the (cell, token) pairs are summed as they stream (:class:`atacformer._core.sums.PairSums`),
so memory tracks the output matrix, not the number of fragments.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from atacformer._core import sums as _sums
from atacformer._core.binning import bin_pairs
from atacformer._core.overlap import bin_span_pairs
from atacformer.errors import GenomeMismatchError, InputFormatError
from atacformer.genome import get_genome
from atacformer.io._text import DEFAULT_BLOCK_BYTES, prefetch
from atacformer.io.fragments import FragmentBlock, FragmentReader
from atacformer.tokenizers._cells import TokenizedCells
from atacformer.vocab import Vocabulary

log = logging.getLogger(__name__)
MODES = ("fragment", "insertion")
# counted blocks are merged once they hold this many entries and twice the merged size
MERGE_MIN_ENTRIES = _sums.MERGE_MIN_ENTRIES


def is_contig(chrom: str) -> bool:
    """Unplaced/alternative contigs and decoys that a primary-assembly genome leaves out."""
    c = chrom.removeprefix("chr")
    return ("_" in c or c.startswith(("Un", "GL", "KI", "JH", "GK", "EBV", "hs37d5"))
            or c.endswith(("random", "alt", "decoy")) or c in ("EBV", "M"))


def read_barcodes(path) -> list[str]:
    """One barcode per line (first tab-separated column; ``#`` lines and blanks skipped)."""
    p = os.fspath(path)
    out = []
    import gzip

    opener = gzip.open if p.endswith(".gz") else open
    with opener(p, "rt") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                out.append(line.split("\t")[0].strip())
    if not out:
        raise InputFormatError(p, "no barcodes found (empty file)")
    return out


class _BlockMapper:
    """Maps the reader's file-wide chromosome/barcode ids to vocabulary tokens and rows."""

    def __init__(self, vocab: Vocabulary, genome, whitelist, reader: FragmentReader):
        self.vocab = vocab
        self.genome = genome
        self.reader = reader
        self.offsets = vocab._chrom_offset()
        self.counts = vocab.chrom_region_counts()
        self._tables = None
        self.fixed = whitelist is not None
        if self.fixed:
            self.wl = pd.Index(list(whitelist), dtype=object)
            if not self.wl.is_unique:
                raise ValueError("the barcode whitelist has duplicates")
            self.lut = np.empty(0, dtype=np.int64)  # file barcode id -> whitelist row or -1

    @property
    def n_cells(self) -> int:
        return len(self.wl) if self.fixed else self.reader.n_barcodes

    def barcodes(self) -> np.ndarray:
        return np.asarray(list(self.wl) if self.fixed else self.reader.barcodes(), dtype=object)

    def cells(self, fb: FragmentBlock) -> np.ndarray:
        if not self.fixed:  # rows are the file's barcodes in first-appearance order
            return fb.barcode_codes.astype(np.int64, copy=False)
        if len(self.lut) < self.reader.n_barcodes:
            new = self.reader.barcodes(len(self.lut))
            self.lut = np.concatenate([self.lut, self.wl.get_indexer(new).astype(np.int64)])
        return self.lut[fb.barcode_codes]

    def _chrom_tables(self, fb: FragmentBlock):
        """Per file chromosome id: usable, length, vocabulary offset and bin count. Ids are
        file-wide and only grow, so this is recomputed only when a block brings a new one
        (the chromosome is validated then, on that block)."""
        if self._tables is not None and len(self._tables[0]) == len(fb.chroms):
            return self._tables
        usable = np.ones(len(fb.chroms), dtype=bool)
        length = np.full(len(fb.chroms), np.iinfo(np.int64).max, dtype=np.int64)
        if self.genome is not None:
            sizes = self.genome.chrom_sizes
            for k, c in enumerate(fb.chroms):
                if c in sizes:
                    length[k] = sizes[c]
                    continue
                if is_contig(c):
                    usable[k] = False
                    continue
                fb.fail_at(lambda f, bad=c: (f"chromosome {f[0]!r} is not in genome {self.genome.name}", f[0])
                           if _norm(f[0]) == bad else None, error=GenomeMismatchError)
        off = np.array([self.offsets.get(c, -1) if usable[k] else -1 for k, c in enumerate(fb.chroms)], np.int64)
        nb = np.array([self.counts.get(c, 0) for c in fb.chroms], np.int64)
        self._tables = (usable, length, off, nb)
        return self._tables

    def check_genome(self, fb: FragmentBlock) -> np.ndarray:
        """Validate chromosomes/coordinates; return a per-file-chrom 'usable' mask."""
        usable, length, _, _ = self._chrom_tables(fb)
        if self.genome is None:
            return usable
        over = fb.ends > length[fb.chrom_codes]
        if over.any():
            sizes = self.genome.chrom_sizes
            fb.fail_at(lambda f: (f"end lies past the end of {_norm(f[0])} ({sizes[_norm(f[0])]} bp) "
                                  f"in genome {self.genome.name}", int(f[2]))
                       if _norm(f[0]) in sizes and int(f[2]) > sizes[_norm(f[0])] else None,
                       error=GenomeMismatchError)
        return usable

    def bin_keys(self, fb: FragmentBlock, cell: np.ndarray, mode: str, n_frag: np.ndarray):
        """Fused (cell, token) keys for a bin vocabulary; ``None`` when they do not fit."""
        _, _, off, nb = self._chrom_tables(fb)
        keys = np.empty(2 * len(fb) + 16, np.int64)
        k = bin_pairs(fb.chrom_codes, fb.starts, fb.ends, cell, off, nb, self.vocab.bin_size,
                      mode == "insertion", self.vocab.n_regions, keys, n_frag)
        return None if k < 0 else keys[:k]

    def pairs(self, fb: FragmentBlock, usable: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
        """``(row_in_block, token_id)`` pairs of one block."""
        if mode == "insertion" and self.vocab.bin_size is not None:
            # both Tn5 sites as 1-bp intervals, the bins' arithmetic made direct
            keep = np.flatnonzero(fb.ends > fb.starts)
            rows = np.concatenate([keep, keep])
            s = np.concatenate([fb.starts[keep], fb.ends[keep] - 1])
            return self._overlap(fb, rows, s, s + 1, usable)
        if mode == "insertion":
            # two insertion sites per fragment, as 1-bp intervals
            n = len(fb)
            keep = fb.ends > fb.starts
            s = np.concatenate([fb.starts, fb.ends - 1])
            rows = np.concatenate([np.arange(n), np.arange(n)])
            sel = np.concatenate([keep, keep])
            return self._overlap(fb, rows[sel], s[sel], s[sel] + 1, usable)
        return self._overlap(fb, np.arange(len(fb)), fb.starts, fb.ends, usable)

    def _overlap(self, fb, rows, starts, ends, usable):
        codes = fb.chrom_codes[rows]
        v = self.vocab
        if v.bin_size is not None:
            _, _, off, nb = self._chrom_tables(fb)
            ok = off[codes] >= 0
            rows, starts, ends, codes = rows[ok], starts[ok], ends[ok], codes[ok]
            q, b = bin_span_pairs(starts, ends, v.bin_size)
            inside = b < nb[codes[q]]
            q, b = q[inside], b[inside]
            return rows[q], b + off[codes[q]]
        out_r, out_t = [], []
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(fb.chroms) + 1))
        for k, c in enumerate(fb.chroms):
            sel = order[bounds[k]:bounds[k + 1]]
            if not len(sel) or not usable[k] or c not in self.offsets:
                continue
            q, t = v.overlap_pairs(c, starts[sel], ends[sel])
            out_r.append(rows[sel[q]])
            out_t.append(t)
        if not out_r:
            e = np.empty(0, dtype=np.int64)
            return e, e.copy()
        return np.concatenate(out_r), np.concatenate(out_t)


def _norm(c: str) -> str:
    from atacformer.genome import normalize_chrom

    return normalize_chrom(c)


def tokenize_fragments(path, vocab: Vocabulary, *, genome=None, barcodes=None, min_fragments: int = 0,
                       mode: str = "fragment", block_bytes: int = DEFAULT_BLOCK_BYTES, threads: int = 1,
                       progress: bool | None = None) -> TokenizedCells:
    """Tokenize a fragments file into a cells x vocabulary count matrix.

    Parameters
    ----------
    path
        10x fragments file (gz/bgz/plain), sorted by position or by barcode.
    vocab
        Vocabulary (genome bins or any region set, overlapping regions allowed).
    genome
        Genome name or :class:`~atacformer.genome.Genome` to validate chromosomes and
        coordinates against (default: ``vocab.genome``). Unplaced contigs (``chrUn_*``,
        ``*_random``, ``KI270*``...) and chrM are skipped when the genome lacks them; any other
        unknown chromosome, or an end past a chromosome's end, is an error naming the line.
    barcodes
        Whitelist (list of barcodes or a file path, one per line); rows follow its order and
        cells absent from the file get empty rows. ``None`` keeps every barcode, in order of
        first appearance.
    min_fragments
        Drop cells with fewer fragments (lines in the file, whatever they overlap).
    mode
        ``"fragment"`` (each fragment counts once per overlapped region) or ``"insertion"``
        (both Tn5 insertion sites count, as SnapATAC2's tile matrix).

    Returns
    -------
    TokenizedCells
        ``obs["n_fragments"]`` holds each cell's fragment count.

    Examples
    --------
    >>> v = Vocabulary.from_bins("hg38", 5000)
    >>> cells = tokenize_fragments("fragments.tsv.gz", v, min_fragments=500)  # doctest: +SKIP
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    p = os.fspath(path)
    if isinstance(barcodes, (str, os.PathLike)):
        barcodes = read_barcodes(barcodes)
    g = get_genome(genome) if genome is not None else (get_genome(vocab.genome) if vocab.genome else None)
    reader = FragmentReader(p, block_bytes=block_bytes, threads=threads)
    m = _BlockMapper(vocab, g, barcodes, reader)
    sums = _sums.PairSums(vocab.n_regions, merge_min_entries=MERGE_MIN_ENTRIES)
    n_frag = np.zeros(0, dtype=np.int64)
    bar = tqdm(desc=f"tokenizing {os.path.basename(p)}", unit=" fragments", unit_scale=True, disable=progress is False
               if progress is not None else None, leave=False)
    for fb in prefetch(reader):
        usable = m.check_genome(fb)
        cell = m.cells(fb)
        n_cells_now = m.n_cells
        if len(n_frag) < n_cells_now:
            n_frag = np.concatenate([n_frag, np.zeros(max(n_cells_now - len(n_frag), len(n_frag)), np.int64)])
        keys = m.bin_keys(fb, cell, mode, n_frag) if vocab.bin_size is not None else None
        if keys is None:  # any universe, or a fragment spanning many bins
            known = cell >= 0
            n_frag[: n_cells_now] += np.bincount(cell[known], minlength=n_cells_now)
            r, t = m.pairs(fb, usable, mode)
            rc = cell[r]
            ok = rc >= 0
            sums.add(rc[ok], t[ok])
        else:
            sums.add_keys(keys)
        bar.update(len(fb))
    bar.close()
    n_cells = m.n_cells
    if len(n_frag) < n_cells:
        n_frag = np.concatenate([n_frag, np.zeros(n_cells - len(n_frag), np.int64)])
    n_frag = n_frag[:n_cells]
    X = sums.csr(n_cells)
    names = m.barcodes()
    keep = np.flatnonzero(n_frag >= min_fragments) if min_fragments > 0 else np.arange(n_cells)
    if len(keep) < n_cells:
        X, names, n_frag = X[keep], names[keep], n_frag[keep]
    cells = TokenizedCells(X=X.astype(np.int32), barcodes=names, vocab=vocab)
    cells.obs["n_fragments"] = n_frag
    log.info("%s: %d cells, %d fragments, %d tokens", p, cells.n_cells, int(n_frag.sum()), X.nnz)
    if cells.n_cells == 0:
        raise InputFormatError(p, f"no cell passed the filters (min_fragments={min_fragments}, "
                               f"whitelist={'yes' if barcodes is not None else 'no'})")
    return cells

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
import re

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from atacformer._core import sums as _sums
from atacformer._core.binning import bin_pairs, first_past_end
from atacformer._core.overlap import bin_span_pairs
from atacformer.genome import get_genome, is_contig
from atacformer.errors import GenomeMismatchError, InputFormatError
from atacformer.io._text import DEFAULT_BLOCK_BYTES, prefetch
from atacformer.io.fragments import FragmentBlock, FragmentReader
from atacformer.tokenizers._cells import TokenizedCells
from atacformer.vocab import Vocabulary

log = logging.getLogger(__name__)
MODES = ("fragment", "insertion")
# counted blocks are merged once they hold this many entries and twice the merged size
MERGE_MIN_ENTRIES = _sums.MERGE_MIN_ENTRIES


def read_barcodes(path) -> list[str]:
    """One barcode per line (first tab-separated column; ``#`` lines and blanks skipped)."""
    import gzip
    import zlib

    p = os.fspath(path)
    out = []
    opener = gzip.open if p.endswith(".gz") else open
    try:
        with opener(p, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    out.append(line.split("\t")[0].strip())
    except (UnicodeDecodeError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InputFormatError(p, f"cannot read as a barcode list, one barcode per line ({e})") from None
    if not out:
        raise InputFormatError(p, "no barcodes found (empty file)")
    return out


def _suffix_hint(file_bcs, wl_bcs) -> str:
    """Say how the two barcode sets differ when they differ only by a ``-N`` suffix."""
    strip = re.compile(r"-\d+$")
    f_suf = any(strip.search(b) for b in file_bcs)
    w_suf = any(strip.search(b) for b in wl_bcs)
    if w_suf and not f_suf:
        return "the whitelist's barcodes end in a suffix such as '-1' that the file's lack; strip it"
    if f_suf and not w_suf:
        return "the file's barcodes end in a suffix such as '-1' that the whitelist's lack; add it"
    return "check that both use the same barcode form (suffixes such as '-1', sample prefixes)"


class _BlockMapper:
    """Maps the reader's file-wide chromosome/barcode ids to vocabulary tokens and rows."""

    def __init__(self, vocab: Vocabulary, genome, whitelist, reader: FragmentReader, whitelist_path=None):
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
                dup = self.wl[self.wl.duplicated()][0]
                raise InputFormatError(whitelist_path, "the barcode whitelist has duplicates", value=dup)
            self.lut = np.empty(0, dtype=np.int64)  # file barcode id -> whitelist row or -1

    @property
    def n_cells(self) -> int:
        return len(self.wl) if self.fixed else self.reader.n_barcodes

    def barcodes(self) -> np.ndarray:
        return np.asarray(list(self.wl), dtype=object) if self.fixed else self.reader.barcodes_array()

    def cells(self, fb: FragmentBlock) -> np.ndarray:
        if not self.fixed:  # rows are the file's barcodes in first-appearance order
            return fb.barcode_codes.astype(np.int64, copy=False)
        self._extend_lut()
        return self.lut[fb.barcode_codes]

    def _extend_lut(self) -> None:
        if len(self.lut) < self.reader.n_barcodes:
            new = self.reader.barcodes(len(self.lut))
            self.lut = np.concatenate([self.lut, self.wl.get_indexer(new).astype(np.int64)])

    def check_whitelist(self, path: str, whitelist_path) -> None:
        """Refuse a whitelist none of whose barcodes is in the file (the output would be empty
        rows only); warn when some of them never appear."""
        if not self.fixed:
            return
        self._extend_lut()
        seen = np.unique(self.lut[self.lut >= 0])
        where = f"whitelist {os.fspath(whitelist_path)}" if whitelist_path is not None else "the barcode whitelist"
        if len(seen) == 0:
            file_bcs = self.reader.barcodes()[:1000]
            wl_bcs = list(self.wl[:1000])
            raise InputFormatError(
                path, f"none of the {len(self.wl):,} barcodes of {where} appears in the file "
                f"(file barcode e.g. {file_bcs[0]!r}, whitelist barcode e.g. {wl_bcs[0]!r}); "
                f"{_suffix_hint(file_bcs, wl_bcs)}")
        if len(seen) < len(self.wl):
            log.warning("%s: %d of the %d barcodes of %s never appear in the file; their rows are empty",
                        path, len(self.wl) - len(seen), len(self.wl), where)

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
        if first_past_end(fb.chrom_codes, fb.ends, length) >= 0:
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


def _check_landing(path: str, vocab: Vocabulary, n_lines: int, n_landed: int, nnz: int, chroms,
                   whitelisted: bool) -> None:
    """Refuse a vocabulary that no fragment overlaps; warn when under 1 % of them do.

    ``n_landed`` counts the fragments overlapping the vocabulary (for bins: those on its
    chromosomes, whatever the whitelist), ``nnz`` the tokens of the kept cells.
    """
    if nnz == 0:
        if n_landed == 0 or not whitelisted:
            seen = ", ".join(list(chroms)[:5]) + (", ..." if len(chroms) > 5 else "")
            raise InputFormatError(
                path, f"no fragment overlaps any of the {vocab.n_regions:,} regions of the vocabulary "
                f"({vocab!r}); check that the vocabulary is of this file's genome (the file's "
                f"chromosomes: {seen})")
        raise InputFormatError(
            path, f"no fragment of the whitelisted cells overlaps any of the {vocab.n_regions:,} regions "
            f"of the vocabulary ({vocab!r})")
    if n_lines and n_landed < 0.01 * n_lines:
        log.warning("%s: only %.2f%% of the fragments (%d of %d) overlap a region of the vocabulary (%r); "
                    "is it of this file's genome?", path, 100.0 * n_landed / n_lines, n_landed, n_lines, vocab)


def _norm(c: str) -> str:
    from atacformer.genome import normalize_chrom

    return normalize_chrom(c)


def tokenize_fragments(path, vocab: Vocabulary, *, genome=None, barcodes=None, min_fragments: int = 0,
                       mode: str = "fragment", block_bytes: int = DEFAULT_BLOCK_BYTES, threads: int = 1,
                       progress: bool | None = None, qc: bool = False, tss=None, min_tsse: float | None = None,
                       knee: bool = False, peaks=None) -> TokenizedCells:
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
    qc
        Compute cell QC metrics in the same pass (:mod:`atacformer.preprocessing._qc`):
        ``obs`` gets ``duplicate_rate`` and ``nucleosome_signal``, and with ``tss`` also
        ``tsse``, ``frac_tss`` and ``frac_promoter``; ``uns["qc"]`` the library-level fragment
        length histogram, TSS profile and barcode-rank curve (for :func:`atacformer.pl.qc`).
    tss
        GTF or TSS BED (see :func:`atacformer.pp.read_tss`); implies ``qc``.
    min_tsse
        Drop cells with a lower TSS enrichment (needs ``tss``).
    peaks
        BED / narrowPeak of peaks: ``obs["frip"]``, the fraction of each cell's fragments
        overlapping one (implies ``qc``).
    knee
        Drop the barcodes below the knee of the barcode-rank curve
        (:func:`atacformer.pp.knee_threshold`), on top of ``min_fragments``.

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
    if min_tsse is not None and tss is None:
        raise ValueError("min_tsse needs a TSS annotation: pass tss= (a GTF or a TSS BED)")
    p = os.fspath(path)
    whitelist_path = None
    if isinstance(barcodes, (str, os.PathLike)):
        whitelist_path = os.fspath(barcodes)
        barcodes = read_barcodes(barcodes)
    g = get_genome(genome) if genome is not None else (get_genome(vocab.genome) if vocab.genome else None)
    qcc = None
    if qc or tss is not None or peaks is not None:
        from atacformer.preprocessing._qc import QCCounters

        qcc = QCCounters(tss, genome=g, peaks=peaks)  # the TSS file is read (and checked) before the fragments
    reader = FragmentReader(p, block_bytes=block_bytes, threads=threads, counts=qcc is not None)
    m = _BlockMapper(vocab, g, barcodes, reader, whitelist_path)
    sums = _sums.PairSums(vocab.n_regions, merge_min_entries=MERGE_MIN_ENTRIES)
    n_frag = np.zeros(0, dtype=np.int64)
    n_lines = n_landed = 0
    chrom_lines = np.zeros(0, dtype=np.int64)
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
            if vocab.bin_size is None:
                hit = np.zeros(len(fb), dtype=bool)
                hit[r] = True
                n_landed += int(np.count_nonzero(hit))
        else:
            sums.add_keys(keys)
        if qcc is not None:
            qcc.add(fb, cell, n_cells_now)
        if vocab.bin_size is not None:  # bins tile their chromosomes: per-chromosome line counts
            per_chrom = np.bincount(fb.chrom_codes, minlength=len(fb.chroms))
            if len(per_chrom) > len(chrom_lines):
                chrom_lines = np.concatenate([chrom_lines, np.zeros(len(per_chrom) - len(chrom_lines), np.int64)])
            chrom_lines[:len(per_chrom)] += per_chrom
        n_lines += len(fb)
        bar.update(len(fb))
    bar.close()
    m.check_whitelist(p, whitelist_path)
    if vocab.bin_size is not None:
        _, _, off, _ = m._tables
        n_landed = int(chrom_lines[off[:len(chrom_lines)] >= 0].sum())
    n_cells = m.n_cells
    if len(n_frag) < n_cells:
        n_frag = np.concatenate([n_frag, np.zeros(n_cells - len(n_frag), np.int64)])
    n_frag = n_frag[:n_cells]
    X = sums.csr(n_cells)
    _check_landing(p, vocab, n_lines, n_landed, X.nnz, reader.chroms(), whitelisted=m.fixed)
    names = m.barcodes()
    uns = {}
    if qcc is not None:
        from atacformer.preprocessing._qc import call_cells, knee_threshold

        qcc.check(p)
        lib = qcc.library(n_frag)
        metrics = qcc.metrics(n_frag)
        keep_mask = call_cells(metrics, min_fragments=min_fragments, min_tsse=min_tsse, knee=knee)
        keep = np.flatnonzero(keep_mask)
        lib["knee"] = int(knee_threshold(n_frag)) if knee else -1
        lib["min_fragments"], lib["min_tsse"] = int(min_fragments), float(min_tsse if min_tsse is not None else np.nan)
        uns["qc"] = lib
    else:
        metrics = None
        if knee:
            from atacformer.preprocessing._qc import knee_threshold

            min_fragments = max(min_fragments, knee_threshold(n_frag))
        keep = np.flatnonzero(n_frag >= min_fragments) if min_fragments > 0 else np.arange(n_cells)
    if len(keep) < n_cells:
        X, names, n_frag = X[keep], names[keep], n_frag[keep]
        if metrics is not None:
            metrics = metrics.iloc[keep]
    cells = TokenizedCells(X=X.astype(np.int32), barcodes=names, vocab=vocab, uns=uns)
    cells.obs["n_fragments"] = n_frag
    if metrics is not None:
        for col in metrics.columns.drop("n_fragments"):
            cells.obs[col] = metrics[col].to_numpy()
    log.info("%s: %d cells, %d fragments, %d tokens", p, cells.n_cells, int(n_frag.sum()), X.nnz)
    if cells.n_cells == 0:
        raise InputFormatError(p, f"no cell passed the filters (min_fragments={min_fragments}, "
                               f"min_tsse={min_tsse}, knee={knee}, "
                               f"whitelist={'yes' if barcodes is not None else 'no'})")
    return cells

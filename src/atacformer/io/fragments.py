"""Streaming reader of 10x-style fragments files.

A fragments file has one fragment per line: ``chrom start end barcode [count ...]``
(0-based half-open, Tn5-shifted), gzip, bgzip or plain, optionally headed by ``#`` lines,
sorted by position or by barcode. The file is read in blocks of bounded size, so memory
does not grow with the file: each block is parsed in one pass by a
compiled parser (:mod:`atacformer._core.parse`, GIL released) while ISA-L decompresses the next
block in a background thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from atacformer._core.parse import FULL, GROW, OK, KeyTable, find_keys, insert_keys, parse_fragments
from atacformer.errors import InputFormatError
from atacformer.genome import normalize_chrom
from atacformer.io._text import DEFAULT_BLOCK_BYTES, check_interval_fields, iter_pieces, locate_bad_line, skip_header

_COLUMNS = "chrom start end barcode [count]"


@dataclass
class FragmentBlock:
    """One parsed block of a fragments file.

    ``chrom_codes`` index ``chroms`` (normalised names) and ``barcode_codes`` are the
    file-wide barcode ids of the reader (first-appearance order).
    """

    path: str
    first_line: int
    chroms: list[str]
    chrom_codes: np.ndarray  # (n,) int32, file-wide chromosome ids
    starts: np.ndarray  # (n,) int64
    ends: np.ndarray  # (n,) int64
    barcode_codes: np.ndarray  # (n,) int64, file-wide barcode ids
    text: bytes | memoryview  # the raw lines, kept for line-exact diagnostics
    counts: np.ndarray | None = None  # (n,) int64, the fifth (duplicate count) column, when read

    def __len__(self) -> int:
        return len(self.starts)

    def fail_at(self, check, error=InputFormatError) -> None:
        """Raise ``error`` at the first line where ``check(fields)`` returns (message, value)."""
        locate_bad_line(self.path, bytes(self.text), self.first_line, check, error=error)
        raise error(self.path, "invalid fragment block", line=self.first_line)


def _check_fragment(fields):
    # the compiled parser reads coordinates of at most 18 plain digits
    bad = check_interval_fields(fields, 4, _COLUMNS, max_digits=18)
    if bad is None and not fields[0]:
        return "chromosome is empty", "\t".join(fields)
    if bad is None and not fields[3]:
        return "barcode is empty", "\t".join(fields)
    return bad


class FragmentReader:
    """Iterate over a fragments file in parsed blocks, keeping file-wide chromosome and
    barcode ids (exact hash tables, see :mod:`atacformer._core.parse`).

    Parameters
    ----------
    path
        ``.tsv``, ``.tsv.gz`` or bgzipped fragments file.
    block_bytes
        Size of each text block (bounds the reader's memory).
    threads
        Decompression threads (ISA-L, in the background); 0 decompresses in the calling thread.
    counts
        Also read the optional fifth column (the number of read pairs behind each fragment,
        1 where absent) into :attr:`FragmentBlock.counts`; a fifth field that is not an
        unsigned integer is then an error.

    Raises
    ------
    InputFormatError
        Empty file, wrong column count, non-integer coordinate, start > end, negative start,
        truncated gzip; the message names the file, the line and the value.

    Examples
    --------
    >>> r = FragmentReader("fragments.tsv.gz")  # doctest: +SKIP
    >>> n = sum(len(b) for b in r); barcodes = r.barcodes()  # doctest: +SKIP
    """

    def __init__(self, path, block_bytes: int = DEFAULT_BLOCK_BYTES, threads: int = 1, counts: bool = False):
        self.path = os.fspath(path)
        self.read_counts = counts
        self.block_bytes = block_bytes
        self.threads = threads
        self._chroms = KeyTable(capacity=64, arena_bytes=1 << 12)
        self._barcodes = KeyTable()
        self._chrom_names: list[str] = []
        self._bytes_seen = self._lines_seen = 0
        self._bytes_per_line = 32.0

    @property
    def n_barcodes(self) -> int:
        return len(self._barcodes)

    def barcodes(self, start: int = 0) -> list[str]:
        """Barcodes seen so far with ids ``start..`` (all by default)."""
        return self._barcodes.keys(start)

    def barcodes_array(self) -> np.ndarray:
        """All barcodes seen so far as a numpy string array (the fast form of :meth:`barcodes`)."""
        arr = self._barcodes.keys_array()
        return arr if arr is not None else np.asarray(self._barcodes.keys(), dtype=object)

    def chroms(self) -> list[str]:
        """Chromosomes seen so far (normalised names), in order of first appearance."""
        return list(self._chrom_names)

    def _outputs(self, n: int):
        out = (np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n, np.int64),
               np.empty(n, np.int64), np.empty(n, np.int64))
        return out + (np.empty(n, np.int64),) if self.read_counts else out

    def _parse(self, piece, first_line: int) -> tuple[FragmentBlock, int]:
        """Parse one piece of whole lines; returns the block and the number of lines read."""
        buf = np.frombuffer(piece, dtype=np.uint8)
        # room for the expected number of lines (running mean line length), grown if short
        out = self._outputs(int(len(buf) / (0.8 * self._bytes_per_line)) + 64)
        pos = row = lines = 0
        while True:
            status, pos, row, lines = parse_fragments(buf, pos, row, lines, *out[:5], *self._chroms.arrays(),
                                                      *out[5:])
            if status == OK:
                break
            if status == GROW:
                self._chroms.grow()
            elif status == FULL:
                bigger = self._outputs(2 * len(out[0]))
                for old, new in zip(out, bigger):
                    new[:row] = old[:row]
                out = bigger
            else:
                self._fail(piece, first_line, pos, lines)
        codes, starts, ends, bc_a, bc_b = out[:5]
        bt = self._barcodes
        bcs = np.empty(row, np.int64)
        r = 0 if find_keys(buf, bc_a, bc_b, row, bt.rows, bt.off, bt.arena, bcs) else -1
        while r >= 0:
            r = insert_keys(buf, bc_a, bc_b, row, *bt.arrays(), bcs, r)
            if r >= 0:
                bt.grow()
        if len(self._chrom_names) < len(self._chroms):
            self._chrom_names += [normalize_chrom(c) for c in self._chroms.keys(len(self._chrom_names))]
        self._bytes_seen += len(buf)
        self._lines_seen += lines
        self._bytes_per_line = max(8.0, self._bytes_seen / max(self._lines_seen, 1))
        fb = FragmentBlock(path=self.path, first_line=first_line, chroms=list(self._chrom_names),
                           chrom_codes=codes[:row], starts=starts[:row], ends=ends[:row],
                           barcode_codes=bcs, text=piece, counts=out[5][:row] if self.read_counts else None)
        return fb, lines

    def _fail(self, piece, first_line: int, pos: int, lines: int):
        block = bytes(piece)
        end = block.find(b"\n", pos)
        text = block[pos:end if end >= 0 else len(block)].rstrip(b"\r").decode("utf-8", "replace")
        fields = text.split("\t")
        res = _check_fragment(fields)
        if res is None and self.read_counts and len(fields) > 4 and not (fields[4].isdigit() and len(fields[4]) <= 18):
            res = "the fifth column (duplicate count) is not an unsigned integer", fields[4]
        msg, value = res if res is not None else (f"malformed line; expected '{_COLUMNS}'", text)
        raise InputFormatError(self.path, msg, line=first_line + lines, value=value)

    def __iter__(self):
        started = False
        any_rows = False
        line = 1
        for piece in iter_pieces(self.path, block_bytes=self.block_bytes, threads=self.threads,
                                 lines_done=lambda: line - 1):
            if not started:
                piece, line = skip_header(bytes(piece), line)
                if not piece.strip():
                    line += piece.count(b"\n")
                    continue
                started = True
            fb, n = self._parse(piece, line)
            line += n
            if len(fb):
                any_rows = True
                yield fb
        if not any_rows:
            raise InputFormatError(self.path, f"no fragments found (empty file); expected lines '{_COLUMNS}'")


def iter_fragment_blocks(path, block_bytes: int = DEFAULT_BLOCK_BYTES, threads: int = 1):
    """Yield the :class:`FragmentBlock` s of a fragments file (see :class:`FragmentReader`)."""
    yield from FragmentReader(path, block_bytes=block_bytes, threads=threads)

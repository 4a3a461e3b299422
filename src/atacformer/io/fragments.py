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

from atacformer._core.parse import GROW, OK, KeyTable, find_keys, insert_keys, parse_fragments
from atacformer.errors import InputFormatError
from atacformer.genome import normalize_chrom
from atacformer.io._text import DEFAULT_BLOCK_BYTES, check_interval_fields, iter_blocks, locate_bad_line, skip_header

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
    text: bytes  # the raw block, kept for line-exact diagnostics

    def __len__(self) -> int:
        return len(self.starts)

    def fail_at(self, check, error=InputFormatError) -> None:
        """Raise ``error`` at the first line where ``check(fields)`` returns (message, value)."""
        locate_bad_line(self.path, self.text, self.first_line, check, error=error)
        raise error(self.path, "invalid fragment block", line=self.first_line)


def _check_fragment(fields):
    return check_interval_fields(fields, 4, _COLUMNS)


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

    def __init__(self, path, block_bytes: int = DEFAULT_BLOCK_BYTES, threads: int = 1):
        self.path = os.fspath(path)
        self.block_bytes = block_bytes
        self.threads = threads
        self._chroms = KeyTable(capacity=64, arena_bytes=1 << 12)
        self._barcodes = KeyTable()
        self._chrom_names: list[str] = []

    @property
    def n_barcodes(self) -> int:
        return len(self._barcodes)

    def barcodes(self, start: int = 0) -> list[str]:
        """Barcodes seen so far with ids ``start..`` (all by default)."""
        return self._barcodes.keys(start)

    def _parse(self, block: bytes, first_line: int, n_lines: int) -> FragmentBlock:
        buf = np.frombuffer(block, dtype=np.uint8)
        n = n_lines + 1
        codes, starts, ends = np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n, np.int64)
        bc_a, bc_b = np.empty(n, np.int64), np.empty(n, np.int64)
        pos = row = 0
        while True:
            status, pos, row = parse_fragments(buf, pos, row, codes, starts, ends, bc_a, bc_b, *self._chroms.arrays())
            if status == OK:
                break
            if status == GROW:
                self._chroms.grow()
                continue
            self._fail(block, first_line, pos)
        bt = self._barcodes
        bcs = np.empty(row, np.int64)
        r = 0 if find_keys(buf, bc_a, bc_b, row, bt.rows, bt.off, bt.arena, bcs) else -1
        while r >= 0:
            r = insert_keys(buf, bc_a, bc_b, row, *bt.arrays(), bcs, r)
            if r >= 0:
                bt.grow()
        if len(self._chrom_names) < len(self._chroms):
            self._chrom_names += [normalize_chrom(c) for c in self._chroms.keys(len(self._chrom_names))]
        return FragmentBlock(path=self.path, first_line=first_line, chroms=list(self._chrom_names),
                             chrom_codes=codes[:row], starts=starts[:row], ends=ends[:row],
                             barcode_codes=bcs, text=block)

    def _fail(self, block: bytes, first_line: int, pos: int):
        line_no = first_line + block.count(b"\n", 0, pos)
        end = block.find(b"\n", pos)
        text = block[pos:end if end >= 0 else len(block)].rstrip(b"\r").decode("utf-8", "replace")
        res = _check_fragment(text.split("\t"))
        msg, value = res if res is not None else (f"malformed line; expected '{_COLUMNS}'", text)
        raise InputFormatError(self.path, msg, line=line_no, value=value)

    def __iter__(self):
        started = False
        any_rows = False
        for block, line, n_lines in iter_blocks(self.path, block_bytes=self.block_bytes, threads=self.threads):
            if not started:
                block, line = skip_header(block, line)
                if not block.strip():
                    continue
                started = True
            fb = self._parse(block, line, n_lines)
            if len(fb):
                any_rows = True
                yield fb
        if not any_rows:
            raise InputFormatError(self.path, f"no fragments found (empty file); expected lines '{_COLUMNS}'")


def iter_fragment_blocks(path, block_bytes: int = DEFAULT_BLOCK_BYTES, threads: int = 1):
    """Yield the :class:`FragmentBlock` s of a fragments file (see :class:`FragmentReader`)."""
    yield from FragmentReader(path, block_bytes=block_bytes, threads=threads)

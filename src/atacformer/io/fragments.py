"""Streaming reader of 10x-style fragments files.

A fragments file has one fragment per line: ``chrom start end barcode [count ...]``
(0-based half-open, Tn5-shifted), gzip, bgzip or plain, optionally headed by ``#`` lines,
sorted by position or by barcode. The file is read in blocks of bounded size (default
32 MB of text), so memory does not grow with the file: each block is parsed by pyarrow's
multi-threaded CSV reader with chromosome and barcode dictionary-encoded, while ISA-L
decompresses the next block in a background thread.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from atacformer.errors import InputFormatError
from atacformer.genome import normalize_chrom
from atacformer.io._text import DEFAULT_BLOCK_BYTES, check_interval_fields, iter_blocks, locate_bad_line, skip_header

_COLUMNS = "chrom start end barcode [count]"


@dataclass
class FragmentBlock:
    """One parsed block of a fragments file.

    ``chrom_codes`` index ``chroms`` (normalised names) and ``barcode_codes`` index
    ``barcodes``; both dictionaries are local to the block.
    """

    path: str
    first_line: int
    chroms: list[str]
    chrom_codes: np.ndarray  # (n,) int32
    starts: np.ndarray  # (n,) int64
    ends: np.ndarray  # (n,) int64
    barcodes: np.ndarray  # (n_unique,) object
    barcode_codes: np.ndarray  # (n,) int32
    text: bytes  # the raw block, kept for line-exact diagnostics

    def __len__(self) -> int:
        return len(self.starts)

    def fail_at(self, check, error=InputFormatError) -> None:
        """Raise ``error`` at the first line where ``check(fields)`` returns (message, value)."""
        locate_bad_line(self.path, self.text, self.first_line, check, error=error)
        raise InputFormatError(self.path, "invalid fragment block", line=self.first_line)


def _check_fragment(fields):
    return check_interval_fields(fields, 4, _COLUMNS)


def _parse(path: str, block: bytes, first_line: int, ncols: int) -> FragmentBlock:
    names = ["chrom", "start", "end", "barcode"] + [f"c{j}" for j in range(4, ncols)]
    try:
        tab = pacsv.read_csv(
            io.BytesIO(block),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=True, block_size=4 << 20),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(
                include_columns=["chrom", "start", "end", "barcode"],
                column_types={"chrom": pa.dictionary(pa.int32(), pa.string()), "start": pa.int64(),
                              "end": pa.int64(), "barcode": pa.dictionary(pa.int32(), pa.string())},
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        locate_bad_line(path, block, first_line, lambda f: check_interval_fields(f, 4, _COLUMNS, n_exact=ncols))
        raise InputFormatError(path, "could not be parsed as a fragments file", line=first_line) from None
    tab = tab.unify_dictionaries()
    chrom = tab.column("chrom").combine_chunks()
    bc = tab.column("barcode").combine_chunks()
    out = FragmentBlock(
        path=path, first_line=first_line,
        chroms=[normalize_chrom(c) for c in chrom.dictionary.to_pylist()],
        chrom_codes=chrom.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False),
        starts=tab.column("start").to_numpy(), ends=tab.column("end").to_numpy(),
        barcodes=np.asarray(bc.dictionary.to_pylist(), dtype=object),
        barcode_codes=bc.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False),
        text=block,
    )
    if len(out) and ((out.starts < 0).any() or (out.starts > out.ends).any()):
        out.fail_at(_check_fragment)
    return out


def iter_fragment_blocks(path, block_bytes: int = DEFAULT_BLOCK_BYTES, threads: int = 1):
    """Yield :class:`FragmentBlock` s of a fragments file, in file order.

    Parameters
    ----------
    path
        ``.tsv``, ``.tsv.gz`` or bgzipped fragments file.
    block_bytes
        Size of each text block (bounds the reader's memory).
    threads
        Decompression threads (ISA-L); 0 decompresses in the calling thread.

    Raises
    ------
    InputFormatError
        Empty file, wrong column count, non-integer coordinate, start > end, negative start,
        truncated gzip; the message names the file, the line and the value.

    Examples
    --------
    >>> n = sum(len(b) for b in iter_fragment_blocks("fragments.tsv.gz"))  # doctest: +SKIP
    """
    p = os.fspath(path)
    ncols = None
    any_rows = False
    for block, line in iter_blocks(p, block_bytes=block_bytes, threads=threads):
        if ncols is None:
            block, line = skip_header(block, line)
            if not block.strip():
                continue
            first = block[: block.find(b"\n")]
            ncols = len(first.split(b"\t"))
            if ncols < 4:
                locate_bad_line(p, block, line, _check_fragment)
        fb = _parse(p, block, line, ncols)
        if len(fb):
            any_rows = True
            yield fb
    if not any_rows:
        raise InputFormatError(p, f"no fragments found (empty file); expected lines '{_COLUMNS}'")

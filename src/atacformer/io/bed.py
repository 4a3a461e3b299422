"""BED / narrowPeak readers (gz or plain).

Only the first three columns are used (0-based half-open ``chrom start end``); any further
columns (name, score, narrowPeak fields, gtars/geniml universe extras) are accepted and
ignored. ``track``/``browser``/``#`` header lines are skipped.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from atacformer.errors import InputFormatError
from atacformer.genome import normalize_chroms
from atacformer.io._text import check_interval_fields, iter_blocks, locate_bad_line, skip_header

_HEADER = (b"#", b"track", b"browser")


def _parse_block(path, block: bytes, first_line: int) -> pd.DataFrame:
    ncols = len(block[: block.find(b"\n")].split(b"\t"))
    if ncols < 3:
        locate_bad_line(path, block, first_line, lambda f: check_interval_fields(f, 3, "chrom start end"))
    names = ["chrom", "start", "end"] + [f"c{j}" for j in range(3, ncols)]
    try:
        tab = pacsv.read_csv(
            io.BytesIO(block),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=True),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(
                include_columns=["chrom", "start", "end"],
                column_types={"chrom": pa.string(), "start": pa.int64(), "end": pa.int64()},
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        locate_bad_line(path, block, first_line,
                        lambda f: check_interval_fields(f, 3, "chrom start end", n_exact=ncols))
        # what Python's int() takes but pyarrow does not ('+5', '1_000', non-ASCII digits)
        locate_bad_line(path, block, first_line,
                        lambda f: check_interval_fields([v.strip(" ") for v in f], 3, "chrom start end",
                                                        n_exact=ncols, max_digits=19))
        raise InputFormatError(path, "could not be parsed as BED") from None
    s = tab.column("start").to_numpy()
    e = tab.column("end").to_numpy()
    if (s < 0).any() or (s > e).any():
        locate_bad_line(path, block, first_line, lambda f: check_interval_fields(f, 3, "chrom start end"))
    return pd.DataFrame({"chrom": tab.column("chrom").to_numpy(zero_copy_only=False), "start": s, "end": e})


def read_bed(path) -> pd.DataFrame:
    """Read a BED-like file into a DataFrame with ``chrom`` (normalised), ``start``, ``end``.

    Parameters
    ----------
    path
        BED, narrowPeak or any 3+ column tab-separated region file, gz/bgz or plain.

    Raises
    ------
    InputFormatError
        Empty file, too few columns, non-integer or negative coordinates, start > end, or a
        truncated gzip stream; the message names the file, line and value.

    Examples
    --------
    >>> df = read_bed("peaks.narrowPeak.gz")  # doctest: +SKIP
    >>> df.columns.tolist()
    ['chrom', 'start', 'end']
    """
    p = os.fspath(path)
    parts = []
    first = True
    for block, line, _ in iter_blocks(p, block_bytes=32 << 20):  # pyarrow parses large blocks best
        if first:
            block, line = skip_header(block, line, _HEADER)
            first = False
        if block.strip():
            parts.append(_parse_block(p, block, line))
    if not parts:
        raise InputFormatError(p, "no regions found (empty file)")
    df = pd.concat(parts, ignore_index=True)
    df["chrom"] = normalize_chroms(df["chrom"].to_numpy())
    return df


def read_bed_regions(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(chroms, starts, ends)`` arrays of a BED file (see :func:`read_bed`)."""
    df = read_bed(path)
    return df["chrom"].to_numpy(), df["start"].to_numpy(), df["end"].to_numpy()

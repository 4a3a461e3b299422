"""Property tests of the input parsers: whatever a fragments or BED file holds (bad integers,
start > end, missing columns, unknown chromosomes, random bytes, a truncated gzip stream),
tokenizing it either succeeds or raises the project's own error naming the file, never a raw
IndexError/ValueError from numpy or the parsers; and no output is left behind when it fails."""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atacformer.errors import AtacformerError
from atacformer.tokenizers import tokenize_bed, tokenize_fragments
from atacformer.vocab import Vocabulary

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    derandomize=True)

BINS = Vocabulary.from_bins("hg38", 5000, chroms=["chr1", "chr2", "chr22", "chrX"])
UNIVERSE = Vocabulary(["chr1", "chr1", "chr2", "chr22"], [100, 5000, 0, 1_000_000],
                      [900, 9000, 50_000, 1_001_000], genome="hg38")

CHROMS = st.sampled_from(["chr1", "chr2", "chr22", "chrX", "1", "22", "chrZZ", "chrUn_KI270742v1", "chrM",
                          "chr1_KI270706v1_random", "", "chr 1", "chr1\x00"])
GOOD_INT = st.integers(min_value=0, max_value=50_000_000)
BAD_INT = st.sampled_from(["", "5x", "1e3", "-", "+5", " 12", "0x10", "12.0", "٣", "NaN", "-7",
                           "99999999999999999999999", "9223372036854775808", "-9223372036854775809",
                           "248956422", "248956423", "1" * 40])
INT_FIELD = st.one_of(GOOD_INT.map(str), GOOD_INT.map(str), BAD_INT)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\t"), max_size=12)
BARCODE = st.one_of(st.sampled_from(["AAAC-1", "CCGT-1", "GGTA", "B.3"]), TEXT)


def _fields(chrom, start, end, barcode, extra):
    return [chrom, start, end, barcode, *extra]


FRAGMENT_FIELDS = st.builds(_fields, CHROMS, INT_FIELD, INT_FIELD, BARCODE,
                            st.lists(st.one_of(st.integers(0, 9).map(str), TEXT), max_size=2))


@st.composite
def fragment_lines(draw):
    fields = draw(FRAGMENT_FIELDS)
    cut = draw(st.integers(min_value=1, max_value=len(fields)))
    if draw(st.booleans()):  # sometimes drop trailing columns
        fields = fields[:cut]
    sep = draw(st.sampled_from(["\t", "\t", "\t", " ", "\t\t"]))
    end = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    return sep.join(fields) + end


VALID_LINE = st.builds(lambda c, s, n, b: f"{c}\t{s}\t{s + n}\t{b}\t1\n", st.sampled_from(["chr1", "chr2", "chr22"]),
                       st.integers(0, 1_000_000), st.integers(1, 2000), st.sampled_from(["AAAC-1", "CCGT-1"]))


@st.composite
def fragment_files(draw):
    """(bytes of the file, whether it is gzip): mostly valid lines with malformed ones mixed
    in, or random bytes, or a gzip stream cut short."""
    kind = draw(st.sampled_from(["mixed", "mixed", "mixed", "bytes", "truncated-gzip", "header"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400)), False
    lines = draw(st.lists(st.one_of(VALID_LINE, VALID_LINE, fragment_lines()), min_size=0, max_size=30))
    text = "".join(lines)
    if kind == "header":
        text = "# comment\n" + text
    data = text.encode("utf-8")
    if kind == "truncated-gzip":
        z = gzip.compress(data + b"chr1\t1\t100\tAAAC-1\t1\n" * 50)
        return z[: draw(st.integers(min_value=0, max_value=len(z) - 1))], True
    if draw(st.booleans()):
        return gzip.compress(data), True
    return data, False


def _check_failure(e: BaseException, path: Path) -> None:
    assert isinstance(e, AtacformerError), f"{type(e).__name__}: {e}"
    assert str(path) in str(e), str(e)


@SETTINGS
@given(fragment_files(), st.sampled_from([BINS, UNIVERSE]), st.sampled_from(["fragment", "insertion"]))
def test_fragments_parse_or_raise_our_error(file, vocab, mode):
    data, gz = file
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        src = d / ("in.tsv.gz" if gz else "in.tsv")
        src.write_bytes(data)
        out = d / "out"
        out.mkdir()
        try:
            cells = tokenize_fragments(src, vocab, mode=mode, progress=False, block_bytes=256)
        except Exception as e:  # noqa: BLE001 - the property is about which exceptions escape
            _check_failure(e, src)
            assert os.listdir(out) == []
            return
        assert cells.X.nnz > 0 and cells.X.shape[1] == vocab.n_regions
        cells.write_h5ad(out / "cells.h5ad")
        assert os.listdir(out) == ["cells.h5ad"]


@SETTINGS
@given(fragment_files(), st.lists(BARCODE, min_size=1, max_size=4, unique=True))
def test_fragments_with_a_whitelist_parse_or_raise_our_error(file, whitelist):
    data, gz = file
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / ("in.tsv.gz" if gz else "in.tsv")
        src.write_bytes(data)
        try:
            cells = tokenize_fragments(src, BINS, barcodes=whitelist, progress=False)
        except Exception as e:  # noqa: BLE001
            _check_failure(e, src)
            return
        assert cells.n_cells == len(whitelist)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(fragment_files())
def test_cli_tokenize_returns_an_error_code_and_leaves_nothing(file):
    from atacformer.cli import main

    data, gz = file
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        src = d / ("in.tsv.gz" if gz else "in.tsv")
        src.write_bytes(data)
        out = d / "out"
        out.mkdir()
        rc = main(["tokenize", str(src), "--input-type", "fragments", "-o", str(out / "corpus")])
        assert rc in (0, 2)
        assert os.listdir(out) == ([] if rc == 2 else ["corpus"])


@st.composite
def bed_files(draw):
    kind = draw(st.sampled_from(["mixed", "mixed", "mixed", "bytes", "truncated-gzip"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400)), False
    rows = draw(st.lists(st.one_of(
        st.builds(lambda c, s, n: f"{c}\t{s}\t{s + n}\n", st.sampled_from(["chr1", "chr2", "chr22"]),
                  st.integers(0, 1_000_000), st.integers(1, 5000)),
        st.builds(lambda f, sep: sep.join(f[:3] + f[4:]) + "\n", FRAGMENT_FIELDS, st.sampled_from(["\t", " "])),
        st.sampled_from(["track name=x\n", "browser position chr1\n", "#c\n", "\n"])), max_size=25))
    data = "".join(rows).encode()
    if kind == "truncated-gzip":
        z = gzip.compress(data + b"chr1\t1\t100\n" * 50)
        return z[: draw(st.integers(min_value=0, max_value=len(z) - 1))], True
    return (gzip.compress(data), True) if draw(st.booleans()) else (data, False)


@SETTINGS
@given(bed_files(), st.sampled_from([BINS, UNIVERSE]))
def test_bed_parse_or_raise_our_error(file, vocab):
    data, gz = file
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / ("in.bed.gz" if gz else "in.bed")
        src.write_bytes(data)
        try:
            ids = tokenize_bed(src, vocab)
        except Exception as e:  # noqa: BLE001
            _check_failure(e, src)
            return
        assert len(ids) > 0 and ids.max() < vocab.n_regions


@pytest.mark.parametrize("gz", [False, True])
def test_a_fixed_example_of_each_kind_is_refused(tmp_path, gz):
    """The strategies above do reach the refusals (not only successes)."""
    cases = [("chr1\t5x\t9\tA\t1\n", "start is not an integer"), ("chr1\t9\t5\tA\t1\n", "start > end"),
             ("chr1\t5\n", "columns"), ("chrZZ\t5\t9\tA\t1\n", "not in genome"),
             ("chr1\t5\t99999999999999999999999\tA\t1\n", "end is too large"),
             ("chr1\t+5\t9\tA\t1\n", "start is not an integer"), ("chr1\t5\t9\t\t1\n", "barcode is empty"),
             ("\t5\t9\tA\t1\n", "chromosome is empty"), ("chr1\t5\t5\tA\t1\n", "no fragment overlaps")]
    for text, words in cases:
        p = tmp_path / ("f.tsv.gz" if gz else "f.tsv")
        p.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
        with pytest.raises(AtacformerError) as e:
            tokenize_fragments(p, BINS, progress=False)
        assert str(p) in str(e.value) and words in str(e.value), str(e.value)
    for text, words in [("chr1\t+5\t9\n", "line 1: start is not an integer"),
                        ("chr1\t5\t99999999999999999999999\n", "line 1: end is too large"),
                        ("chr1\t5\t9\nchr1\t5\n", "line 2: expected 3")]:
        p = tmp_path / ("f.bed.gz" if gz else "f.bed")
        p.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
        with pytest.raises(AtacformerError) as e:
            tokenize_bed(p, BINS)
        assert str(p) in str(e.value) and words in str(e.value), str(e.value)

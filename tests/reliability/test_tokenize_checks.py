"""Tokenizer inputs that can only give empty or meaningless output are refused: a barcode
whitelist none of whose barcodes is in the file, a vocabulary that no fragment, region or
peak overlaps, a peak matrix with negative or non-finite counts or without cells or peaks."""

from __future__ import annotations

import logging
import os

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from _cases import CASES, DATA, MACS3, MACS3_BARCODES, NARROWPEAK, SCHEP, run_case

from atacformer.cli import main
from atacformer.errors import InputFormatError
from atacformer.io.matrix import PeakMatrix, check_counts, peaks_from_names, read_peak_matrix
from atacformer.tokenizers import tokenize_bed, tokenize_fragments, tokenize_peak_matrix
from atacformer.vocab import Vocabulary

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} is absent")


@pytest.fixture(scope="module")
def bins():
    return Vocabulary.from_bins("hg38", 5000)


# -- 1. whitelist ------------------------------------------------------------------------
def test_whitelist_with_suffixes_the_file_lacks_is_refused(tmp_path):
    err = run_case(CASES["whitelist-no-barcode-matches"], tmp_path)
    msg = str(err)
    first_file = MACS3_BARCODES.read_text().split()[0]
    assert "'AAACGAAAGACTCGGA'" in msg  # the file's first barcode
    assert f"'{first_file}-1'" in msg  # the whitelist's first
    assert "strip it" in msg


def test_whitelist_without_the_files_suffix_is_refused(tmp_path, bins):
    frag = DATA / "muon_pbmc_multiome_fragments_hg38" / "test_rna_atac_fragments.tsv.gz"  # ...-1 barcodes
    wl = tmp_path / "wl.txt"
    wl.write_text("TTATCCGTCTTCAATC\nACTTGTAAGCAACATC\n")
    with pytest.raises(InputFormatError, match=r"file's barcodes end in a suffix such as '-1'.*add it") as e:
        tokenize_fragments(frag, bins, barcodes=wl, progress=False)
    assert str(frag) in str(e.value) and str(wl) in str(e.value)


def test_whitelist_as_a_list_names_the_whitelist(tmp_path, bins):
    with pytest.raises(InputFormatError, match="the barcode whitelist appears in the file"):
        tokenize_fragments(MACS3, bins, barcodes=["NOPE", "NEITHER"], progress=False)


def test_cli_refuses_the_whitelist_and_writes_nothing(tmp_path, capsys):
    wl = tmp_path / "wl.txt"
    wl.write_text("".join(f"{b}-1\n" for b in MACS3_BARCODES.read_text().split()))
    out = tmp_path / "out"
    out.mkdir()
    for target in ("cells.h5ad", "corpus"):
        assert main(["tokenize", str(MACS3), "--barcodes", str(wl), "-o", str(out / target)]) == 2
        assert "suffix" in capsys.readouterr().err
        assert os.listdir(out) == []


def test_partial_whitelist_warns_with_the_count(tmp_path, bins, caplog):
    wl = tmp_path / "wl.txt"
    real = MACS3_BARCODES.read_text().split()
    wl.write_text("\n".join(real + [f"ABSENT{i}" for i in range(5)]) + "\n")
    with caplog.at_level(logging.WARNING, logger="atacformer"):
        cells = tokenize_fragments(MACS3, bins, barcodes=wl, progress=False)
    assert cells.n_cells == len(real) + 5  # rows follow the whitelist, absent cells empty
    assert cells.X[len(real):].nnz == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"5 of the {len(real) + 5} barcodes of whitelist {wl}" in m for m in warned), warned


def test_duplicate_whitelist_barcode_names_the_file(tmp_path, bins):
    wl = tmp_path / "wl.txt"
    wl.write_text("AAACGAAAGACTCGGA\nAAACGAAAGACTCGGA\n")
    with pytest.raises(InputFormatError, match=r"wl.txt: the barcode whitelist has duplicates \(got 'AAACGAAAGACTCGGA'\)"):
        tokenize_fragments(MACS3, bins, barcodes=wl, progress=False)


# -- 2. vocabulary overlap ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["fragments-vs-bins-no-overlap", "fragments-vs-universe-no-overlap"])
def test_vocabulary_no_fragment_overlaps_is_refused(tmp_path, name):
    run_case(CASES[name], tmp_path)


@pytest.mark.parametrize("mode", ["fragment", "insertion"])
def test_vocabulary_that_few_fragments_overlap_warns_with_the_percentage(caplog, mode):
    n = sum(1 for _ in __import__("gzip").open(MACS3, "rt"))
    # five 200 bp regions on chr22: a small share of the fragments
    starts = np.array([10_768_800, 20_000_000, 30_000_000, 40_000_000, 50_000_000])
    vocab = Vocabulary(["chr22"] * 5, starts, starts + 200, genome="hg38")
    with caplog.at_level(logging.WARNING, logger="atacformer"):
        cells = tokenize_fragments(MACS3, vocab, mode=mode, progress=False)
    assert cells.X.nnz > 0
    warned = [r.getMessage() for r in caplog.records if "of the fragments" in r.getMessage()]
    assert len(warned) == 1 and "%" in warned[0] and f"of {n})" in warned[0], warned


def test_bins_of_other_chromosomes_warn_when_most_fragments_miss(tmp_path, caplog):
    frag = tmp_path / "f.tsv"
    lines = [f"chr22\t{1000 * i + 20_000_000}\t{1000 * i + 20_000_100}\tAAA\t1\n" for i in range(500)]
    lines.append("chr1\t10000\t10100\tAAA\t1\n")
    frag.write_text("".join(lines))
    with caplog.at_level(logging.WARNING, logger="atacformer"):
        cells = tokenize_fragments(frag, Vocabulary.from_bins("hg38", 5000, chroms=["chr1"]), progress=False)
    assert cells.X.sum() == 1
    assert any("only 0.20% of the fragments (1 of 501)" in r.getMessage() for r in caplog.records)


def test_a_usual_vocabulary_does_not_warn(caplog, bins):
    with caplog.at_level(logging.WARNING, logger="atacformer"):
        tokenize_fragments(MACS3, bins, progress=False)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_bed_no_overlap_and_low_overlap(tmp_path, caplog):
    run_case(CASES["bed-no-overlap"], tmp_path)
    n = len(__import__("atacformer.io.bed", fromlist=["read_bed"]).read_bed(NARROWPEAK))
    vocab = Vocabulary(["chrY"], [9_141_800], [9_142_000], genome="hg38")  # one peak of the file
    with caplog.at_level(logging.WARNING, logger="atacformer"):
        ids = tokenize_bed(NARROWPEAK, vocab)
    assert ids.tolist() == [0]
    assert any(f"(1 of {n})" in r.getMessage() and "of the regions" in r.getMessage() for r in caplog.records)


def test_peak_matrix_no_overlap_and_low_overlap(tmp_path, caplog):
    run_case(CASES["peak-matrix-no-overlap"], tmp_path)
    a = ad.read_h5ad(SCHEP)
    v = a.var.iloc[0]
    vocab = Vocabulary([v["chrom"]], [int(v["start"])], [int(v["end"])])  # one peak of 5,036
    with caplog.at_level(logging.WARNING, logger="atacformer"):
        cells = tokenize_peak_matrix(SCHEP, vocab)
    assert cells.X.shape == (a.n_obs, 1)
    assert any(f"(1 of {a.n_vars})" in r.getMessage() for r in caplog.records)


def test_peak_matrix_whose_counts_all_miss_the_vocabulary(tmp_path):
    X = sp.csr_matrix(np.array([[0, 2], [0, 1]]))
    pm = PeakMatrix(X, peaks_from_names(["chr1:100-200", "chr2:100-200"]), pd.DataFrame(index=["a", "b"]), "m.h5ad")
    with pytest.raises(InputFormatError, match="m.h5ad: no cell has a count on a peak that overlaps"):
        tokenize_peak_matrix(pm, Vocabulary(["chr1"], [0], [1000]))


# -- 3. peak matrix values ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["peak-matrix-negative-count", "peak-matrix-nan", "peak-matrix-inf",
                                  "peak-matrix-no-cells", "peak-matrix-no-peaks"])
def test_peak_matrix_values_are_refused(tmp_path, name):
    run_case(CASES[name], tmp_path)


def _mtx_dir(tmp_path, X, peaks, barcodes):
    d = tmp_path / "mtx"
    d.mkdir()
    scipy.io.mmwrite(str(d / "matrix.mtx"), sp.coo_matrix(X).T)  # features x barcodes, as 10x writes
    (d / "peaks.bed").write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in peaks))
    (d / "barcodes.tsv").write_text("".join(f"{b}\n" for b in barcodes))
    return d


def test_negative_count_in_a_matrix_market_folder(tmp_path):
    X = np.array([[1, 0, 2], [0, -4, 1]])
    d = _mtx_dir(tmp_path, X, [("chr1", 0, 100), ("chr1", 200, 300), ("chr2", 5, 50)], ["AA", "CC"])
    with pytest.raises(InputFormatError) as e:
        read_peak_matrix(d)
    assert str(e.value) == f"{d}: negative count at cell 1 ('CC'), peak 1 ('chr1:200-300') (got -4)"


def test_nan_in_an_in_memory_anndata():
    X = np.array([[1.0, np.nan], [0.0, 1.0]], dtype=np.float32)
    a = ad.AnnData(X, var=pd.DataFrame(index=["chr1:1-10", "chr1:20-30"]), obs=pd.DataFrame(index=["x", "y"]))
    with pytest.raises(InputFormatError, match=r"<input>: non-finite count .* at cell 0 \('x'\), peak 1 \('chr1:20-30'\)"):
        tokenize_peak_matrix(a, Vocabulary(["chr1"], [0], [100]))


def test_check_counts_accepts_real_data():
    pm = read_peak_matrix(SCHEP)
    assert check_counts(pm) is pm

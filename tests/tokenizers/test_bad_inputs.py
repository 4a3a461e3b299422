"""Bad inputs: clear errors naming file, line and value; no partial output left behind."""

import gzip
import os

import pytest

from atacformer.cli import main
from atacformer.errors import GenomeMismatchError, InputFormatError
from atacformer.io.bed import read_bed
from atacformer.tokenizers import tokenize_fragments, tokenize_peak_matrix
from atacformer.vocab import Vocabulary

GOOD = "chr1\t100\t200\tAAA\t1\nchr1\t150\t400\tCCC\t2\n"


def write(tmp_path, text, name="f.tsv.gz"):
    p = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(p, "wt") as f:
            f.write(text)
    else:
        p.write_text(text)
    return p


CASES = [
    ("wrong column count", GOOD + "chr1\t5\t9\n", InputFormatError, ["line 3", "columns"]),
    ("non-integer coordinate", GOOD + "chr1\t5x\t9\tGGG\t1\n", InputFormatError, ["line 3", "'5x'", "start"]),
    ("start > end", GOOD + "chr1\t500\t90\tGGG\t1\n", InputFormatError, ["line 3", "start > end"]),
    ("negative start", GOOD + "chr1\t-5\t90\tGGG\t1\n", InputFormatError, ["line 3", "negative", "-5"]),
    ("unknown chromosome", GOOD + "chrZZ\t5\t90\tGGG\t1\n", GenomeMismatchError, ["line 3", "chrZZ", "hg38"]),
    ("beyond the genome", GOOD + "chr21\t46709980\t46709990\tGGG\t1\n", GenomeMismatchError,
     ["line 3", "46709990", "chr21"]),
    ("empty file", "", InputFormatError, ["empty"]),
    ("header only", "# just a header\n", InputFormatError, ["empty"]),
]


@pytest.mark.parametrize("name,text,err,words", CASES, ids=[c[0] for c in CASES])
def test_fragment_errors(tmp_path, name, text, err, words):
    p = write(tmp_path, text)
    with pytest.raises(err) as e:
        tokenize_fragments(p, Vocabulary.from_bins("hg38", 5000), progress=False)
    msg = str(e.value)
    assert str(p) in msg
    for w in words:
        assert w in msg, (w, msg)


def test_line_numbers_count_header_lines(tmp_path):
    p = write(tmp_path, "# h1\n# h2\n" + GOOD + "chr1\t1\t0\tX\t1\n")
    with pytest.raises(InputFormatError, match="line 5"):
        tokenize_fragments(p, Vocabulary.from_bins("hg38", 5000), progress=False)


def test_error_deep_in_a_large_file_names_its_line(tmp_path):
    lines = [f"chr1\t{i * 10}\t{i * 10 + 50}\tBC{i % 7}\t1\n" for i in range(200_000)]
    lines[150_000] = "chr1\t10\tabc\tBC1\t1\n"
    p = write(tmp_path, "".join(lines))
    with pytest.raises(InputFormatError, match="line 150001.*'abc'"):
        tokenize_fragments(p, Vocabulary.from_bins("hg38", 5000), block_bytes=1 << 20, progress=False)


def test_truncated_gzip(tmp_path, data_dir):
    src = data_dir / "muon_pbmc_multiome_fragments_hg38/test_rna_atac_fragments.tsv.gz"
    p = tmp_path / "trunc.tsv.gz"
    data = src.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFormatError, match="truncated or corrupt"):
        tokenize_fragments(p, Vocabulary.from_bins("hg38", 5000), progress=False)


def test_genome_mismatch_hg19_data_with_mm10(data_dir):
    p = data_dir / "archr_pbsmall_fragments_labeled/PBSmall.tsv.gz"  # hg19 chr5/chr11
    with pytest.raises(GenomeMismatchError, match="past its end|past the end|not in genome"):
        tokenize_fragments(p, Vocabulary.from_bins("mm10", 5000), progress=False)
    m = data_dir / "buenrostro2018_BM0828_ra3/buenrostro2018_BM0828_533cells.h5ad"  # has chr20-22
    with pytest.raises(GenomeMismatchError, match="hg19|hg38"):
        tokenize_peak_matrix(m, Vocabulary.from_bins("mm10", 5000))


def test_peak_matrix_without_coordinates(data_dir):
    m = data_dir / "preissl2018_forebrain_ra3_nocoords/preissl2018_forebrain_1043cells_nocoords.h5ad"
    with pytest.raises(InputFormatError, match="peak0"):
        tokenize_peak_matrix(m, Vocabulary.from_bins("mm10", 5000))


def test_bed_errors(tmp_path):
    p = write(tmp_path, "track name=x\nchr1\t1\t5\nchr1\t9\t3\n", "u.bed")
    with pytest.raises(InputFormatError, match=r"line 3.*start > end"):
        read_bed(p)
    with pytest.raises(InputFormatError, match="empty"):
        read_bed(write(tmp_path, "", "e.bed"))


@pytest.mark.parametrize("out", ["cells.h5ad", "corpus"])
def test_cli_first_input_bad_leaves_nothing(tmp_path, out, capsys):
    bad = write(tmp_path, GOOD + "chr1\t9\t3\tX\t1\n", "bad.tsv.gz")
    target = tmp_path / "out" / out
    target.parent.mkdir()
    assert main(["tokenize", str(bad), "--genome", "hg38", "-o", str(target)]) == 2
    assert "line 3" in capsys.readouterr().err
    assert os.listdir(target.parent) == []


@pytest.mark.parametrize("out", ["cells.h5ad", "corpus"])
def test_cli_leaves_nothing_on_error(tmp_path, out, capsys):
    good = write(tmp_path, GOOD, "good.tsv.gz")
    bad = write(tmp_path, GOOD + "chr1\t9\t3\tX\t1\n", "bad.tsv.gz")
    target = tmp_path / "out" / out
    target.parent.mkdir()
    rc = main(["tokenize", str(good), str(bad), "--genome", "hg38", "-o", str(target)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "bad.tsv.gz" in err and "line 3" in err
    # nothing of the run stays: no .h5ad, and no corpus folder (the inputs are one run: a rerun
    # after fixing the bad file adds both, see tests/corpus/test_parallel.py)
    assert os.listdir(target.parent) == []

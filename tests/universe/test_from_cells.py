"""Cells -> clusters -> pseudo-bulk -> MACS3 peaks (atacformer.vocab.universe.cells), on real data.

References are independent of the code under test: plain pandas reads of the inputs, the
``macs3 callpeak`` command line run here, and a brute-force numpy count for the matrix route.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from atacformer.errors import AtacformerError, GenomeMismatchError, InputFormatError
from atacformer.vocab.universe import cells as uc

PB = "archr_pbsmall_fragments_labeled"
MUON = "muon_pbmc_multiome_fragments_hg38/test_rna_atac_fragments.tsv.gz"
BM = "buenrostro2018_BM0828_ra3/buenrostro2018_BM0828_533cells.h5ad"
LOGGER = "atacformer.vocab.universe.cells"


def _macs3():
    here = Path(sys.executable).parent / "macs3"
    return str(here) if here.exists() else shutil.which("macs3")


needs_macs3 = pytest.mark.skipif(_macs3() is None, reason='MACS3 not installed (pip install "atacformer[peaks]")')


def _lines(path) -> list[str]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return f.read().splitlines()


def _sizes(data_dir, build) -> dict:
    t = pd.read_csv(data_dir / "genome_annotations" / build / f"chrom_{build}.main.sizes", sep="\t", header=None)
    return dict(zip(t[0], t[1]))


def _check_narrowpeak(path, sizes) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", header=None)
    assert len(df) > 0 and df.shape[1] == 10
    assert (df[1] >= 0).all() and (df[2] > df[1]).all()
    assert (df[2] <= df[0].map(sizes)).all(), "a peak lies past its chromosome's end"
    assert ((df[9] >= 0) & (df[9] < df[2] - df[1])).all(), "summit outside its peak"
    return df


@pytest.fixture(scope="module")
def pbsmall(data_dir):
    return data_dir / PB / "PBSmall.tsv.gz", data_dir / PB / "cell_labels.tsv"


@pytest.fixture(scope="module")
def pseudobulk(pbsmall, tmp_path_factory):
    frag, lab = pbsmall
    out = tmp_path_factory.mktemp("pseudobulk")
    return uc.pseudobulk_fragments(frag, uc.read_cluster_labels(lab), out, genome="hg19", progress=False), out


@pytest.fixture(scope="module")
def b_cell_peaks(pseudobulk, tmp_path_factory):
    if _macs3() is None:
        pytest.skip("MACS3 not installed")
    out = tmp_path_factory.mktemp("peaks")
    return uc.call_peaks(pseudobulk[0]["B_cell"], out, genome="hg19", name="B_cell"), out


def test_pseudobulk_equals_input_lines_of_each_cluster(pbsmall, pseudobulk):
    frag, lab = pbsmall
    files, out = pseudobulk
    labels = pd.read_csv(lab, sep="\t", index_col=0)["cell_type"]
    raw = pd.read_csv(frag, sep="\t", header=None, dtype=str, comment="#")
    text = raw.apply("\t".join, axis=1)
    assert sorted(files) == sorted(labels.unique())
    union = []
    for label, path in files.items():
        assert path == out / f"{label}.fragments.tsv.gz"
        got = _lines(path)
        assert got == text[raw[3].isin(labels.index[labels == label])].tolist()  # same lines, file order
        union += got
    assert Counter(union) == Counter(text[raw[3].isin(labels.index)].tolist())
    assert sorted(os.listdir(out)) == sorted(p.name for p in files.values())  # no temporary left


def test_pseudobulk_subset_plain(pbsmall, tmp_path):
    frag, _ = pbsmall
    raw = pd.read_csv(frag, sep="\t", header=None, dtype=str)
    clusters = pd.Series({"B.1": "a b", "B.2": "a b", "T.3": "t/3", "M.4": None, "nope": "x"})
    files = uc.pseudobulk_fragments(frag, clusters, tmp_path, compress=False, progress=False)
    assert {k: p.name for k, p in files.items()} == {"a b": "a_b.fragments.tsv", "t/3": "t_3.fragments.tsv",
                                                     "x": "x.fragments.tsv"}
    text = raw.apply("\t".join, axis=1)
    assert _lines(files["a b"]) == text[raw[3].isin(["B.1", "B.2"])].tolist()
    assert _lines(files["t/3"]) == text[raw[3] == "T.3"].tolist()
    assert _lines(files["x"]) == []  # a barcode not in the file: an empty pseudo-bulk


@needs_macs3
def test_call_peaks_equals_macs3_command_line(b_cell_peaks, pseudobulk, data_dir, tmp_path):
    peaks, out = b_cell_peaks
    src = pseudobulk[0]["B_cell"]
    assert peaks == out / "B_cell_peaks.narrowPeak"
    assert os.listdir(out) == [peaks.name]
    df = _check_narrowpeak(peaks, _sizes(data_dir, "hg19"))
    assert set(df[0]) <= {"chr5", "chr11"} and df[3].str.startswith("B_cell_peak_").all()
    # reference: both Tn5 insertions of each fragment written by pandas, MACS3 run from its command line
    fr = pd.read_csv(src, sep="\t", header=None)
    fr = fr[fr[2] > fr[1]]
    plus = pd.DataFrame({"c": fr[0], "s": fr[1], "e": fr[1] + 1, "n": ".", "v": 0, "t": "+"})
    minus = pd.DataFrame({"c": fr[0], "s": fr[2] - 1, "e": fr[2], "n": ".", "v": 0, "t": "-"})
    bed = tmp_path / "insertions.bed"
    pd.concat([minus, plus]).to_csv(bed, sep="\t", header=False, index=False)
    cmd = [_macs3(), "callpeak", "-t", str(bed), "-f", "BED", "-g", "hs", "-n", "B_cell", "--outdir",
           str(tmp_path / "cli"), "-q", "0.01", "--nomodel", "--shift", "-100", "--extsize", "200",
           "--keep-dup", "all"]
    subprocess.run(cmd, check=True, capture_output=True)
    assert peaks.read_bytes() == (tmp_path / "cli" / "B_cell_peaks.narrowPeak").read_bytes()


@needs_macs3
def test_cluster_peak_sets_with_labels(pbsmall, b_cell_peaks, data_dir, tmp_path, caplog):
    frag, lab = pbsmall
    out = tmp_path / "out"
    res = uc.cluster_peak_sets(frag, out, genome="hg19", groupby=lab, progress=False)
    assert list(res) == ["B_cell", "Monocyte", "T_cell"]
    sizes = _sizes(data_dir, "hg19")
    for label, path in res.items():
        assert path == out / f"{label}_peaks.narrowPeak"
        assert _check_narrowpeak(path, sizes)[3].str.startswith(f"{label}_peak_").all()
    assert res["B_cell"].read_bytes() == b_cell_peaks[0].read_bytes()  # the chain = its pieces
    clusters = pd.read_csv(out / "clusters.tsv", sep="\t", index_col=0)["cluster"]
    want = pd.read_csv(lab, sep="\t", index_col=0)["cell_type"]
    assert clusters.to_dict() == want.to_dict()
    assert sorted(os.listdir(out)) == sorted(["clusters.tsv"] + [p.name for p in res.values()])
    with pytest.raises(uc.OutputError, match="exists"):
        uc.cluster_peak_sets(frag, out, genome="hg19", groupby=lab, progress=False)
    # clusters under min_cells get no peak set, and say so
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert uc.cluster_peak_sets(frag, tmp_path / "few", genome="hg19", groupby=lab, min_cells=51) == {}
    assert "'Monocyte' has 50 cells (< min_cells=51)" in caplog.text
    assert os.listdir(tmp_path / "few") == ["clusters.tsv"]


@needs_macs3
def test_cluster_peak_sets_clustering_muon(data_dir, tmp_path, caplog):
    frag = data_dir / MUON
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        res = uc.cluster_peak_sets(frag, out, genome="hg38", n_clusters=3, min_fragments=200, keep_pseudobulk=True,
                                   progress=False)
    clusters = pd.read_csv(out / "clusters.tsv", sep="\t", index_col=0, dtype=str)["cluster"]
    lines = [ln for ln in _lines(frag) if ln and not ln.startswith("#")]
    barcode = pd.Series([ln.split("\t")[3] for ln in lines])
    n_frag = barcode.value_counts()
    assert set(clusters.index) == set(n_frag.index[n_frag >= 200])  # the cells clustered: min_fragments
    size = clusters.value_counts()
    assert len(size) == 3
    assert set(res) == set(size.index[size >= uc.MIN_CELLS]) and res
    for c in set(size.index) - set(res):
        assert f"cluster {c!r} has {size[c]} cells" in caplog.text
    for c, path in res.items():
        assert path == out / f"{c}_peaks.narrowPeak"
        _check_narrowpeak(path, _sizes(data_dir, "hg38"))
        # kept pseudo-bulk (an 18 MB text: many blocks of the reader) = the cluster's input lines
        cells = clusters.index[clusters == c]
        want = [ln for ln, keep in zip(lines, barcode.isin(cells)) if keep]
        assert _lines(out / "pseudobulk" / f"{c}.fragments.tsv.gz") == want


def test_cluster_cells_on_a_peak_matrix(data_dir):
    import anndata as ad

    # after the muon test the clustering stack is warm: this one takes about a second
    labels = uc.cluster_cells(data_dir / BM, n_clusters=7)
    a = ad.read_h5ad(data_dir / BM, backed="r")
    assert list(labels.index) == list(a.obs_names) and labels.nunique() == 7
    assert uc.cluster_cells(data_dir / BM, groupby="cell_type").to_dict() == a.obs["cell_type"].astype(str).to_dict()


def test_matrix_route_is_the_fraction_rule(data_dir, tmp_path):
    import anndata as ad

    h5 = data_dir / BM
    out = tmp_path / "out"
    res = uc.cluster_peak_sets(h5, out, genome="hg19", groupby="cell_type")
    a = ad.read_h5ad(h5)
    X = a.X.toarray() > 0
    types = a.obs["cell_type"].astype(str)
    assert sorted(res) == sorted(types.unique())
    for ct, path in res.items():
        assert path == out / f"{ct}_peaks.bed"
        keep = X[(types == ct).to_numpy()].mean(axis=0) >= 0.05
        want = a.var.loc[keep, ["chrom", "start", "end"]].astype({"chrom": str})
        want = sorted(map(tuple, want.itertuples(index=False)))
        got = pd.read_csv(path, sep="\t", header=None, dtype={0: str})
        assert list(map(tuple, got.itertuples(index=False))) == want  # sorted BED3 = brute force
    # an AnnData in memory, other thresholds
    res2 = uc.cluster_peak_sets(a, tmp_path / "b", genome="hg19", groupby="cell_type", min_cells=80,
                                min_cell_fraction=0.2)
    big = types.value_counts()
    assert sorted(res2) == sorted(big.index[big >= 80])
    for ct, path in res2.items():
        keep = X[(types == ct).to_numpy()].mean(axis=0) >= 0.2
        assert len(_lines(path)) == len(a.var.loc[keep, ["chrom", "start", "end"]].drop_duplicates())


def test_pseudobulk_odd_but_valid_file(tmp_path):
    frag = tmp_path / "odd.tsv"
    frag.write_text("# header\n#another\n\nchr1\t10\t50\tA\t1\n\nchr1\t20\t60\tB\n1\t30\t90\tA\t2\textra\n"
                    "chr2\t5\t5\tB\t1\n")
    files = uc.pseudobulk_fragments(frag, pd.Series({"A": "a", "B": "b"}), tmp_path / "pb", compress=False)
    assert _lines(files["a"]) == ["chr1\t10\t50\tA\t1", "1\t30\t90\tA\t2\textra"]  # lines as they are
    assert _lines(files["b"]) == ["chr1\t20\t60\tB", "chr2\t5\t5\tB\t1"]


@needs_macs3
def test_call_peaks_no_peak_is_reported(tmp_path, caplog):
    frag = tmp_path / "few.tsv"
    frag.write_text("chr1\t1000000\t1000150\tA\t1\n2\t5000000\t5000300\tA\t1\nchrUn_gl000220\t100\t200\tA\t1\n")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        peaks = uc.call_peaks(frag, tmp_path / "p", genome="hg19", name="few")
    assert peaks.exists() and peaks.stat().st_size == 0
    assert "MACS3 found no peak" in caplog.text and str(frag) in caplog.text


def test_clip_peaks_to_chromosome_ends(tmp_path):
    np_ = tmp_path / "x.narrowPeak"
    n = 48129895  # hg19 chr21
    np_.write_text(f"chr21\t{n - 100}\t{n + 80}\tx_peak_1\t50\t.\t3.1\t5.2\t2.5\t150\n"
                   "chr21\t100\t300\tx_peak_2\t50\t.\t3.1\t5.2\t2.5\t20\n")
    assert uc._clip_peaks(np_, "hg19") == 1
    rows = [r.split("\t") for r in _lines(np_)]
    assert rows[0][:3] == ["chr21", str(n - 100), str(n)] and rows[0][9] == "99"  # summit kept inside
    assert rows[1] == ["chr21", "100", "300", "x_peak_2", "50", ".", "3.1", "5.2", "2.5", "20"]


# ----------------------------------------------------------------------------- errors


def test_macs3_missing(pbsmall, pseudobulk, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "nobin" / "python"))
    monkeypatch.setattr(uc.shutil, "which", lambda name: None)
    with pytest.raises(AtacformerError, match=r'pip install "atacformer\[peaks\]"'):
        uc.call_peaks(pseudobulk[0]["T_cell"], tmp_path / "p", genome="hg19", name="T_cell")
    with pytest.raises(AtacformerError, match="MACS3 is not installed"):
        uc.cluster_peak_sets(pbsmall[0], tmp_path / "out", genome="hg19", groupby=pbsmall[1])
    assert not (tmp_path / "out").exists() and not (tmp_path / "p").exists()


def test_unknown_barcodes_in_label_file(pbsmall, tmp_path):
    labels = tmp_path / "labels.tsv"
    labels.write_text("barcode\tcell_type\nAAAC-1\tx\nAAAG-1\ty\n")
    with pytest.raises(InputFormatError, match="none of the 2 barcodes") as e:
        uc.cluster_peak_sets(pbsmall[0], tmp_path / "out", genome="hg19", groupby=labels, progress=False)
    assert str(labels) in str(e.value) and "'AAAC-1'" in str(e.value)
    assert not (tmp_path / "out").exists()
    # a matrix: checked against its cells at once
    with pytest.raises(InputFormatError, match="none of its 2 barcodes"):
        uc.cluster_cells(pbsmall[0].parent.parent / BM, groupby=labels)


@needs_macs3
def test_failure_leaves_nothing_partial(pbsmall, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    with pytest.raises(AtacformerError, match="unrecognized arguments: --no-such-option"):
        uc.cluster_peak_sets(pbsmall[0], out, genome="hg19", groupby=pbsmall[1], extra_args=["--no-such-option"],
                             keep_pseudobulk=True, progress=False)
    assert os.listdir(out) == ["mine.txt"]


def test_genome_mismatch(pbsmall, data_dir, tmp_path):
    sizes = tmp_path / "chr5only.chrom.sizes"
    sizes.write_text("chr5\t180915260\n")
    with pytest.raises(GenomeMismatchError, match="'chr11' is not in genome") as e:
        uc.pseudobulk_fragments(pbsmall[0], uc.read_cluster_labels(pbsmall[1]), tmp_path / "pb", genome=sizes)
    assert str(pbsmall[0]) in str(e.value) and "line" in str(e.value)
    assert os.listdir(tmp_path / "pb") == []
    with pytest.raises(GenomeMismatchError, match="'chr20'.* not in genome mm10; the input looks like hg"):
        uc.cluster_peak_sets(data_dir / BM, tmp_path / "out", genome="mm10", groupby="cell_type")
    assert not (tmp_path / "out").exists()


def test_bad_inputs(pbsmall, tmp_path):
    missing = tmp_path / "nope.tsv.gz"
    with pytest.raises(InputFormatError, match="does not exist") as e:
        uc.cluster_peak_sets(missing, tmp_path / "out", genome="hg19", groupby=pbsmall[1])
    assert isinstance(e.value, FileNotFoundError) and str(missing) in str(e.value)
    with pytest.raises(FileNotFoundError, match="nolabels.tsv"):
        uc.cluster_cells(pbsmall[0], groupby=tmp_path / "nolabels.tsv")
    dup = tmp_path / "dup.tsv"
    dup.write_text("B.1\tB\nB.2\tB\nB.1\tT\n")
    with pytest.raises(InputFormatError, match="line 3.*twice with different labels.*'B.1'"):
        uc.read_cluster_labels(dup)
    with pytest.raises(ValueError, match="genome is needed"):
        uc.cluster_cells(pbsmall[0])

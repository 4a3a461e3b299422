"""Peak-matrix readers on the real files in ../shared/data, and 10x/MTX files written from them."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from atacformer.errors import GenomeMismatchError, InputFormatError
from atacformer.genome import get_genome
from atacformer.io.matrix import PeakMatrix, peak_matrix_from_anndata, peaks_from_names, read_peak_matrix

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

LABELLED = {
    "buenrostro": ("buenrostro2018_BM0828_ra3/buenrostro2018_BM0828_533cells.h5ad", "hg19"),
    "schep": ("schep2017_celllines_atacCoGAPS/schep2017_celllines_600.h5ad", "hg19"),
    "chromvar": ("chromvar_example_gm12878_h1/chromvar_gm12878_h1_50.h5ad", "hg19"),
    "geniml": ("geniml_pbmc_hg38_tiny/pbmc_hg38.h5ad", "hg38"),
    "signac": ("signac_pbmc_small/signac_pbmc_atac_small_100.h5ad", "hg19"),
}
NOCOORDS = "preissl2018_forebrain_ra3_nocoords/preissl2018_forebrain_1043cells_nocoords.h5ad"


def _data(rel: str) -> Path:
    p = DATA / rel
    if not p.exists():
        pytest.skip(f"real test data not found: {p} (the shared data folder ../shared/data is absent)")
    return p


def _brute_parse(name: str):
    """Independent parser in plain Python: the two right-most separators."""
    i = max(name.rfind("-"), name.rfind("_"))
    head, end = name[:i], name[i + 1:]
    j = max(head.rfind(":"), head.rfind("-"), head.rfind("_"))
    return head[:j], int(head[j + 1:]), int(end)


def _source(key: str):
    path = _data(LABELLED[key][0])
    return path, ad.read_h5ad(path)


def _var_coords(adata) -> pd.DataFrame:
    cc = "chr" if "chr" in adata.var else "chrom"
    return pd.DataFrame(
        {"chrom": adata.var[cc].astype(str).to_numpy(), "start": adata.var["start"].to_numpy(),
         "end": adata.var["end"].to_numpy()}
    )


def _assert_same(pm: PeakMatrix, adata, barcodes=None):
    assert isinstance(pm.X, sp.csr_matrix)
    assert pm.X.shape == adata.shape
    ref = sp.csr_matrix(adata.X)
    assert pm.X.dtype.kind == ref.dtype.kind
    assert (pm.X != ref).nnz == 0
    want = _var_coords(adata)
    got = pm.peaks[["chrom", "start", "end"]].reset_index(drop=True)
    assert got["start"].dtype == np.int64 and got["end"].dtype == np.int64
    assert all(type(c) is str for c in got["chrom"][:10])
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert list(pm.obs.index) == list(adata.obs_names if barcodes is None else barcodes)


# --- h5ad ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(LABELLED))
def test_labelled_h5ad_reads_like_anndata(key):
    path, adata = _source(key)
    pm = read_peak_matrix(path, genome=LABELLED[key][1])
    _assert_same(pm, adata)
    assert pm.path == str(path)
    assert "cell_type" in pm.obs.columns
    pd.testing.assert_series_equal(pm.obs["cell_type"], adata.obs["cell_type"])
    assert pm.to_anndata().shape == adata.shape


@pytest.mark.parametrize("key", ["buenrostro", "schep", "chromvar", "signac"])
def test_var_names_agree_with_var_columns(key):
    """Coordinates parsed from names (independently, in plain Python) match the columns."""
    _, adata = _source(key)
    want = _var_coords(adata)
    brute = pd.DataFrame([_brute_parse(n) for n in adata.var_names], columns=["chrom", "start", "end"])
    pd.testing.assert_frame_equal(brute, want, check_dtype=False)
    parsed = peaks_from_names(adata.var_names).reset_index(drop=True)
    pd.testing.assert_frame_equal(parsed, want, check_dtype=False)


@pytest.mark.parametrize("key,offset", [("schep", 1), ("signac", 1), ("buenrostro", 0)])
def test_peak_id_is_parsed_as_written(key, offset):
    """Schep/Signac peak_ids are 1-based (chr1-1051395-1051894): the parser does not 'fix' them."""
    _, adata = _source(key)
    parsed = peaks_from_names(adata.var["peak_id"])
    np.testing.assert_array_equal(parsed["start"].to_numpy(), adata.var["start"].to_numpy() + offset)
    np.testing.assert_array_equal(parsed["end"].to_numpy(), adata.var["end"].to_numpy())


def test_nocoords_h5ad_raises_clear_error():
    path = _data(NOCOORDS)
    with pytest.raises(InputFormatError) as exc:
        read_peak_matrix(path)
    msg = str(exc.value)
    assert str(path) in msg and "'peak0'" in msg and "chr1:100-200" in msg and "chrom" in msg


def test_h5ad_csc_dense_and_other_column_names(tmp_path):
    path, adata = _source("signac")
    for i, (X, cols) in enumerate([
        (sp.csc_matrix(adata.X), ("seqnames", "start", "end")),
        (adata.X.toarray(), ("chromosome", "start", "end")),
        (adata.X, ("Chr", "Start", "End")),
    ]):
        var = pd.DataFrame(
            {cols[0]: adata.var["chrom"].astype(str).str.removeprefix("chr").to_numpy(),
             cols[1]: adata.var["start"].to_numpy(), cols[2]: adata.var["end"].to_numpy()},
            index=[f"p{j}" for j in range(adata.n_vars)],
        )
        out = tmp_path / f"v{i}.h5ad"
        ad.AnnData(X=X, obs=adata.obs, var=var).write_h5ad(out)
        pm = read_peak_matrix(out, genome=get_genome("hg19"))
        _assert_same(pm, adata)  # "1" -> "chr1" normalised


def test_h5ad_names_only(tmp_path):
    _, adata = _source("buenrostro")
    small = ad.AnnData(X=adata.X[:, :50], obs=adata.obs, var=pd.DataFrame(index=adata.var["peak_id"][:50].to_numpy()))
    small.write_h5ad(tmp_path / "n.h5ad")
    pm = read_peak_matrix(tmp_path / "n.h5ad")
    _assert_same(pm, adata[:, :50])


def test_transposed_h5ad_is_not_guessed(tmp_path):
    _, adata = _source("signac")
    t = ad.AnnData(X=sp.csr_matrix(adata.X.T), obs=pd.DataFrame(index=adata.var_names),
                   var=pd.DataFrame(index=adata.obs_names))
    t.write_h5ad(tmp_path / "t.h5ad")
    with pytest.raises(InputFormatError, match="transpose"):
        read_peak_matrix(tmp_path / "t.h5ad")


def test_genome_mismatch(tmp_path):
    path, _ = _source("signac")
    (tmp_path / "tiny.chrom.sizes").write_text("chr2\t1000\n")
    with pytest.raises(GenomeMismatchError, match="chr1"):
        read_peak_matrix(path, genome=tmp_path / "tiny.chrom.sizes")
    (tmp_path / "short.chrom.sizes").write_text("chr1\t1000\n")
    with pytest.raises(GenomeMismatchError, match="past its end"):
        read_peak_matrix(path, genome=tmp_path / "short.chrom.sizes")


# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name,want", [
    ("chr1:100-200", ("chr1", 100, 200)),
    ("chr1-100-200", ("chr1", 100, 200)),
    ("chr1_100_200", ("chr1", 100, 200)),
    ("1:100-200", ("chr1", 100, 200)),
    ("X-100-200", ("chrX", 100, 200)),
    ("chrUn_KI270742v1_100_200", ("chrUn_KI270742v1", 100, 200)),
    ("chrUn_KI270742v1:100-200", ("chrUn_KI270742v1", 100, 200)),
    ("chr1_KI270706v1_random-100-200", ("chr1_KI270706v1_random", 100, 200)),
    ("chr1_KI270706v1_random_100_200", ("chr1_KI270706v1_random", 100, 200)),
    ("HLA-A:100-200", ("HLA-A", 100, 200)),
])
def test_name_forms(name, want):
    got = peaks_from_names([name])
    assert tuple(got.iloc[0][["chrom", "start", "end"]]) == want
    assert got.index[0] == name


@pytest.mark.parametrize("name,fragment", [
    ("peak0", "not a peak coordinate"),
    ("chr1:200-100", "greater than its end"),
    ("chr1:-5-100", "negative peak start"),
    ("chr1:100", "not a peak coordinate"),
])
def test_bad_names(name, fragment):
    with pytest.raises(InputFormatError) as exc:
        peaks_from_names(["chr1:1-2", name], path="some/file.h5")
    assert fragment in str(exc.value) and "some/file.h5" in str(exc.value)
    assert name.split(":")[0] in str(exc.value)


# --- bad var columns ------------------------------------------------------------------------


@pytest.mark.parametrize("col,value,fragment", [
    ("start", 300, "greater than its end"),
    ("start", -5, "negative peak start"),
    ("start", 12.5, "non-integer"),
    ("end", "abc", "non-integer"),
])
def test_bad_var_columns(tmp_path, col, value, fragment):
    _, adata = _source("signac")
    var = adata.var[["chrom", "start", "end"]].copy()
    vals = var[col].to_list()
    vals[3] = value
    if value == 300:  # start 300 > end 200
        var["end"] = [200 if i == 3 else e for i, e in enumerate(var["end"])]
    var[col] = pd.Series(vals, index=var.index, dtype=type(value) if not isinstance(value, str) else str)
    out = tmp_path / "bad.h5ad"
    ad.AnnData(X=adata.X, obs=adata.obs, var=var).write_h5ad(out)
    with pytest.raises(InputFormatError) as exc:
        read_peak_matrix(out)
    msg = str(exc.value)
    assert str(out) in msg and fragment in msg and adata.var_names[3] in msg
    if fragment == "non-integer":
        assert f"'{col}'" in msg and repr(value) in msg and "row 3" in msg


def test_corrupt_and_unknown_files(tmp_path):
    for name in ("broken.h5ad", "broken.h5"):
        (tmp_path / name).write_bytes(b"\x89HDF\r\n not really hdf5" * 10)
        with pytest.raises(InputFormatError, match=re.escape(str(tmp_path / name))):
            read_peak_matrix(tmp_path / name)
    (tmp_path / "m.csv").write_text("a,b\n")
    with pytest.raises(InputFormatError, match="unknown matrix format"):
        read_peak_matrix(tmp_path / "m.csv")
    with pytest.raises(InputFormatError, match="no such file"):
        read_peak_matrix(tmp_path / "absent.h5ad")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["foo"] = np.arange(3)
    with pytest.raises(InputFormatError, match="not a 10x"):
        read_peak_matrix(tmp_path / "other.h5")


# --- 10x h5 ---------------------------------------------------------------------------------


def _write_10x_h5(out: Path, adata, legacy: bool = False, n_genes: int = 2, shape=None):
    """CellRanger HDF5 layout: features x barcodes CSC, peaks named chr1:100-200."""
    v = _var_coords(adata)
    ids = [f"{c}:{s}-{e}" for c, s, e in v.itertuples(index=False)]
    X = sp.csc_matrix(adata.X.T)  # (peaks, cells)
    types = ["Peaks"] * len(ids)
    if n_genes:  # gene rows at the top and in the middle, with counts, that must be dropped
        rng = np.random.default_rng(0)
        genes = sp.csc_matrix(rng.poisson(2.0, size=(n_genes, adata.n_obs)))
        mid = len(ids) // 2
        X = sp.vstack([genes[:1], X[:mid], genes[1:], X[mid:]]).tocsc()
        ids = ["ENSG00000000001"] + ids[:mid] + [f"ENSG0000000000{k}" for k in range(2, n_genes + 1)] + ids[mid:]
        types = ["Gene Expression"] + types[:mid] + ["Gene Expression"] * (n_genes - 1) + types[mid:]
    X = X.astype(np.int32)
    with h5py.File(out, "w") as f:
        g = f.create_group("hg19" if legacy else "matrix")
        g["data"], g["indices"], g["indptr"] = X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64)
        g["shape"] = np.array(shape or X.shape, dtype=np.int32)
        g["barcodes"] = np.array(adata.obs_names, dtype="S")
        if legacy:
            g["genes"] = np.array(ids, dtype="S")
            g["gene_names"] = np.array(ids, dtype="S")
        else:
            ft = g.create_group("features")
            ft["id"] = np.array(ids, dtype="S")
            ft["name"] = np.array(ids, dtype="S")
            ft["feature_type"] = np.array(types, dtype="S")
            ft["genome"] = np.array(["hg19"] * len(ids), dtype="S")
            ft["_all_tag_keys"] = np.array([b"genome"])


def test_10x_h5_roundtrip(tmp_path):
    path, adata = _source("schep")
    out = tmp_path / "filtered_feature_bc_matrix.h5"
    _write_10x_h5(out, adata, n_genes=3)
    with h5py.File(out) as f:  # the written file really holds the gene rows
        assert f["matrix/shape"][0] == adata.n_vars + 3
    pm = read_peak_matrix(out, genome="hg19")
    _assert_same(pm, adata)


def test_10x_h5_legacy_layout(tmp_path):
    _, adata = _source("signac")
    out = tmp_path / "legacy.h5"
    _write_10x_h5(out, adata, legacy=True, n_genes=0)
    _assert_same(read_peak_matrix(out), adata)


def test_10x_h5_mismatched_shape(tmp_path):
    _, adata = _source("signac")
    out = tmp_path / "bad.h5"
    _write_10x_h5(out, adata, n_genes=0, shape=(adata.n_vars + 1, adata.n_obs))
    with pytest.raises(InputFormatError) as exc:
        read_peak_matrix(out)
    assert str(out) in str(exc.value) and f"{adata.n_vars} features" in str(exc.value)


# --- Matrix Market -------------------------------------------------------------------------


def _gzip(path: Path) -> Path:
    with open(path, "rb") as a, gzip.open(str(path) + ".gz", "wb") as b:
        shutil.copyfileobj(a, b)
    path.unlink()
    return Path(str(path) + ".gz")


def _write_mtx(d: Path, adata, transpose=True, features=False, gz=True):
    d.mkdir()
    X = sp.csr_matrix(adata.X)
    scipy.io.mmwrite(d / "matrix.mtx", (X.T if transpose else X).astype(np.int64))
    v = _var_coords(adata)
    if features:
        ids = [f"{c}:{s}-{e}" for c, s, e in v.itertuples(index=False)]
        pd.DataFrame({"id": ids, "name": ids, "type": "Peaks"}).to_csv(d / "features.tsv", sep="\t", header=False, index=False)
    else:
        v.to_csv(d / "peaks.bed", sep="\t", header=False, index=False)
    pd.Series(adata.obs_names).to_csv(d / "barcodes.tsv", sep="\t", header=False, index=False)
    if gz:
        for f in list(d.iterdir()):
            _gzip(f)
    return d


def test_mtx_roundtrip_gzipped_peaks_bed(tmp_path):
    _, adata = _source("schep")
    d = _write_mtx(tmp_path / "filtered_peak_bc_matrix", adata)
    assert (d / "matrix.mtx.gz").exists() and (d / "peaks.bed.gz").exists()
    pm = read_peak_matrix(d, genome="hg19")
    _assert_same(pm, adata)
    assert list(pm.peaks.index[:1]) == ["chr1:1051394-1051894"]
    _assert_same(read_peak_matrix(d / "matrix.mtx.gz"), adata)  # the .mtx file itself


def test_mtx_cells_by_peaks_and_features_tsv(tmp_path):
    _, adata = _source("signac")
    d = _write_mtx(tmp_path / "m", adata, transpose=False, features=True, gz=False)
    _assert_same(read_peak_matrix(d), adata)


def test_mtx_features_tsv_drops_genes(tmp_path):
    _, adata = _source("signac")
    d = _write_mtx(tmp_path / "arc", adata, features=True, gz=False)
    feats = pd.read_csv(d / "features.tsv", sep="\t", header=None)
    gene = pd.DataFrame([["ENSG1", "GENE1", "Gene Expression"]])
    pd.concat([gene, feats]).to_csv(d / "features.tsv", sep="\t", header=False, index=False)
    X = sp.vstack([sp.csr_matrix(np.full((1, adata.n_obs), 7)), sp.csr_matrix(adata.X.T)])
    scipy.io.mmwrite(d / "matrix.mtx", X.astype(np.int64))
    _assert_same(read_peak_matrix(d), adata)


def test_mtx_errors(tmp_path):
    _, adata = _source("signac")
    d = _write_mtx(tmp_path / "m", adata, gz=False)
    (d / "barcodes.tsv").rename(d / "cells.tsv")
    with pytest.raises(InputFormatError) as exc:
        read_peak_matrix(d)
    assert str(d) in str(exc.value) and "barcodes.tsv" in str(exc.value)
    pd.Series(adata.obs_names[:-1]).to_csv(d / "barcodes.tsv", sep="\t", header=False, index=False)
    with pytest.raises(InputFormatError) as exc:
        read_peak_matrix(d)
    assert f"{adata.n_obs - 1} barcodes" in str(exc.value) and "matrix.mtx" in str(exc.value)
    (d / "matrix.mtx").write_text("%%MatrixMarket garbage\n1 2\n")
    with pytest.raises(InputFormatError, match="Matrix Market"):
        read_peak_matrix(d)


def test_mtx_square_is_ambiguous(tmp_path):
    d = tmp_path / "sq"
    d.mkdir()
    scipy.io.mmwrite(d / "matrix.mtx", sp.csr_matrix(np.eye(2, dtype=np.int64)))
    (d / "peaks.bed").write_text("chr1\t10\t20\nchr1\t30\t40\n")
    (d / "barcodes.tsv").write_text("A\nB\n")
    with pytest.raises(InputFormatError, match="cannot tell cells from peaks"):
        read_peak_matrix(d)


def test_mtx_bad_bed_coordinate(tmp_path):
    d = tmp_path / "bb"
    d.mkdir()
    scipy.io.mmwrite(d / "matrix.mtx", sp.csr_matrix(np.ones((2, 3), dtype=np.int64)))
    (d / "peaks.bed").write_text("chr1\t10\t20\nchr1\t3O\t40\n")
    (d / "barcodes.tsv").write_text("A\nB\nC\n")
    with pytest.raises(InputFormatError) as exc:
        read_peak_matrix(d)
    msg = str(exc.value)
    assert "peaks.bed" in msg and "'3O'" in msg and "line 2" in msg and "'start'" in msg


def test_peak_matrix_from_anndata_in_memory():
    _, adata = _source("geniml")
    pm = peak_matrix_from_anndata(adata)
    _assert_same(pm, adata)
    assert pm.path is None
    with pytest.raises(InputFormatError, match="peak0"):
        peak_matrix_from_anndata(ad.AnnData(np.ones((2, 1)), var=pd.DataFrame(index=["peak0"])))

"""Import from and export to .h5ad, checked against the file as anndata reads it."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atacformer.corpus import Corpus
from atacformer.errors import VocabularyMismatchError


def assert_csr_equal(a, b):
    a, b = sp.csr_matrix(a), sp.csr_matrix(b)
    assert a.shape == b.shape and (a != b).nnz == 0


def test_h5ad_import_export_round_trip(tmp_path, schep, schep_path):
    c = Corpus.from_anndata(schep_path, tmp_path / "c", chunk_cells=128)  # streamed, backed
    assert c.datasets == [schep_path.stem] and len(c) == schep.n_obs
    assert_csr_equal(c[0:len(c)], schep.X)
    np.testing.assert_array_equal(c.vocab.starts, schep.var["start"].to_numpy())

    out = c.write_h5ad(tmp_path / "out.h5ad", chunk_cells=100)
    back = ad.read_h5ad(out)
    assert_csr_equal(back.X, schep.X)
    assert np.issubdtype(back.X.dtype, np.integer)
    assert list(back.obs_names) == list(schep.obs_names)
    assert list(back.obs["cell_type"].astype(str)) == list(schep.obs["cell_type"].astype(str))
    assert (back.obs["dataset"] == schep_path.stem).all()
    assert list(back.var.columns[:3]) == ["chrom", "start", "end"]
    assert list(back.var_names) == [f"{a}:{s}-{e}" for a, s, e in
                                    zip(schep.var["chrom"], schep.var["start"], schep.var["end"])]
    assert list(back.uns["atacformer_vocab"]["special_tokens"]) == c.vocab.special_tokens

    again = Corpus.from_anndata(out, tmp_path / "again")
    assert_csr_equal(again[0:len(again)], schep.X)
    pd.testing.assert_frame_equal(again.obs, c.obs)
    assert again.vocab == c.vocab


def test_in_memory_anndata_and_several_datasets(tmp_path, vocab, make_counts, make_obs):
    parts = []
    for k, n in enumerate((6, 4, 9)):
        obs = make_obs(n, f"b{k}-", seed=k)
        obs["dataset"] = f"ds{k}"
        parts.append(ad.AnnData(X=make_counts(n, vocab.n_regions, seed=k), obs=obs, var=vocab.to_dataframe()))
    c = Corpus.create(tmp_path / "c", vocab)
    c.append_anndata(parts[0], dataset="first")
    c.append_anndata(ad.concat(parts[1:]))  # runs of obs['dataset'] become one shard each
    assert c.datasets == ["first", "ds1", "ds2"]
    assert_csr_equal(c[0:len(c)], sp.vstack([p.X for p in parts]))
    path = tmp_path / "all.h5ad"
    c.write_h5ad(path)
    rebuilt = Corpus.from_anndata(path, tmp_path / "rebuilt")
    assert rebuilt.datasets == c.datasets
    pd.testing.assert_frame_equal(rebuilt.obs, c.obs)
    assert_csr_equal(c.to_anndata().X, rebuilt[0:len(rebuilt)])


def test_dataset_column_must_be_contiguous(tmp_path, vocab, make_counts):
    a = ad.AnnData(X=make_counts(3, vocab.n_regions), var=vocab.to_dataframe(),
                   obs=pd.DataFrame({"dataset": ["x", "y", "x"]}, index=list("abc")))
    with pytest.raises(ValueError, match="must be contiguous"):
        Corpus.from_anndata(a, tmp_path / "c")
    with pytest.raises(ValueError, match="pass dataset="):
        Corpus.from_anndata(ad.AnnData(X=make_counts(3, vocab.n_regions), var=vocab.to_dataframe()),
                            tmp_path / "c")
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_var_names_without_coordinate_columns(tmp_path, vocab, make_counts):
    a = ad.AnnData(X=make_counts(3, vocab.n_regions), var=pd.DataFrame(index=vocab.region_names()))
    c = Corpus.from_anndata(a, tmp_path / "c", dataset="named")
    assert c.vocab.region_hash() == vocab.region_hash()


@pytest.mark.parametrize("change", ["shift", "order", "fewer"])
def test_vocabulary_mismatch_is_refused(tmp_path, schep, schep_vocab, change):
    var = schep.var[["chrom", "start", "end"]].copy()
    X = schep.X
    if change == "shift":
        var.iloc[10, var.columns.get_loc("start")] += 1
    elif change == "order":
        var, X = var.iloc[::-1], X[:, ::-1]
    else:
        var, X = var.iloc[:-1], X[:, :-1]
    bad = ad.AnnData(X=X, obs=schep.obs, var=var)
    c = Corpus.create(tmp_path / "c", schep_vocab)
    with pytest.raises(VocabularyMismatchError, match="another vocabulary"):
        c.append_anndata(bad, dataset="bad")
    assert len(Corpus.open(c.path)) == 0
    with pytest.raises(VocabularyMismatchError):
        Corpus.from_anndata(bad, tmp_path / "new", vocab=schep_vocab, dataset="bad")
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_failed_import_leaves_nothing(tmp_path, vocab):
    X = sp.csr_matrix(np.array([[1.5] + [0] * (vocab.n_regions - 1)]))
    a = ad.AnnData(X=X, var=vocab.to_dataframe())
    with pytest.raises(ValueError, match="whole numbers"):
        Corpus.from_anndata(a, tmp_path / "c", dataset="d")
    assert not list(tmp_path.iterdir())


def test_float_stored_integer_counts_are_accepted(tmp_path, schep, schep_vocab):
    a = ad.AnnData(X=schep.X.astype(np.float32), obs=schep.obs, var=schep.var)
    path = tmp_path / "float.h5ad"
    a.write_h5ad(path)
    c = Corpus.from_anndata(path, tmp_path / "c", vocab=schep_vocab)
    assert_csr_equal(c[0:len(c)], schep.X)
    assert c.shards[0].counts_dtype == "uint8"

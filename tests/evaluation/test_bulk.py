"""Bulk region sets as documents (atacformer.evaluation.bulk): pseudo-bulk sets, BED sets,
cross-validated XGBoost classification and a tiny end-to-end benchmark."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atacformer.evaluation.bulk import (bed_region_sets, classify_region_sets, pseudobulk_region_sets,
                                        region_set_folds, run_bulk_benchmark)

SCHEP = ("schep2017_celllines_atacCoGAPS", "schep2017_celllines_600.h5ad")


@pytest.fixture(scope="module")
def schep(data_dir):
    import anndata as ad

    return ad.read_h5ad(data_dir.joinpath(*SCHEP))


def test_pseudobulk_sets_are_the_union_of_their_cells(schep):
    sets, labels, groups = pseudobulk_region_sets(schep, "cell_type", sets_per_type=4, min_cells=10, max_cells=50,
                                                  seed=3, return_groups=True)
    cell_types = schep.obs["cell_type"].astype(str).to_numpy()
    n_types = len(np.unique(cell_types))
    assert sets.shape == (4 * n_types, schep.n_vars) and len(labels) == len(groups) == sets.shape[0]
    assert set(np.unique(sets.data)) == {1.0}
    X = sp.csr_matrix(schep.X).toarray()
    for row, lab, g in zip(sets.toarray(), labels, groups):
        assert 10 <= g.size <= 50 and np.unique(g).size == g.size
        assert (cell_types[g] == lab).all()
        np.testing.assert_array_equal(row, (X[g] != 0).any(axis=0).astype(np.float32))
    again, labels2, groups2 = pseudobulk_region_sets(schep, sets_per_type=4, seed=3, return_groups=True)
    assert (again != sets).nnz == 0 and (labels2 == labels).all()
    assert all(np.array_equal(a, b) for a, b in zip(groups, groups2))
    other = pseudobulk_region_sets(schep, sets_per_type=4, seed=4, return_groups=True)[2]
    assert not all(np.array_equal(a, b) for a, b in zip(groups, other))


def test_pseudobulk_small_types_and_bounds():
    import anndata as ad

    x = sp.random(30, 20, density=0.2, format="csr", random_state=0)
    a = ad.AnnData(x, obs=pd.DataFrame({"cell_type": ["big"] * 24 + ["tiny"] * 6}, index=[f"c{i}" for i in range(30)]))
    sets, labels, groups = pseudobulk_region_sets(a, sets_per_type=5, min_cells=8, max_cells=50, return_groups=True)
    assert labels.tolist() == ["big"] * 5  # "tiny" has fewer than min_cells cells
    assert all(8 <= g.size <= 24 for g in groups)  # capped by the type's size
    with pytest.raises(ValueError, match="min_cells"):
        pseudobulk_region_sets(a, min_cells=5, max_cells=2)


def test_bed_region_sets_match_tokenize_bed(data_dir):
    from atacformer.errors import GenomeMismatchError
    from atacformer.tokenizers.regions import tokenize_bed
    from atacformer.vocab import Vocabulary

    folder = data_dir / "bulk_peaks_encode_roadmap_hg38"
    paths = [folder / f for f in ("test_ataqc_full_chr_ppr.naive_overlap.filt.narrowPeak.gz",
                                  "test_ataqc_full_chr_ppr.IDR0.05.filt.narrowPeak.gz",
                                  "reg2map_honeybadger2_dnase_prom_p2.hg19_to_hg38.bed.gz")]
    vocab = Vocabulary.from_bins("hg38", 5000)
    sets = bed_region_sets(paths, vocab)
    assert sets.shape == (len(paths), vocab.n_regions)
    for row, p in zip(sets, paths):
        np.testing.assert_array_equal(row.indices, tokenize_bed(p, vocab))
        assert (row.data == 1).all()
    assert sets[1].nnz < sets[0].nnz  # the 571 IDR peaks are a subset-sized set
    # the folder's single-end ENCODE file (chr19 only) runs past hg38 chr19 (it looks like
    # mm10): refused as tokenize_bed refuses it, not silently clipped
    with pytest.raises(GenomeMismatchError):
        bed_region_sets([paths[0], folder / "ppr.overlap.bfilt.narrowPeak.gz"], vocab)


def test_classify_separable_scores_one_and_shuffled_near_chance():
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c", "d"], 30)
    centers = rng.normal(size=(4, 6)) * 8
    x = centers[np.searchsorted(["a", "b", "c", "d"], y)] + rng.normal(size=(120, 6))
    noise = rng.normal(size=(120, 6))
    fast = {"n_estimators": 15}
    t = classify_region_sets({"separable": x, "noise": noise}, y, folds=3, xgb_params=fast)
    sep = t.set_index("embedding").loc["separable"]
    assert sep["accuracy"] > 0.97 and sep["macro_f1"] > 0.97
    shuffled = classify_region_sets({"separable": x}, rng.permutation(y), folds=3, xgb_params=fast)
    assert shuffled.loc[0, "accuracy"] < 0.45  # chance is 0.25
    assert t.set_index("embedding").loc["noise", "accuracy"] < 0.45
    assert set(t.columns) >= {"embedding", "dims", "accuracy", "accuracy_sd", "macro_f1", "macro_f1_sd"}


def test_classify_uses_the_same_folds_for_every_embedding():
    rng = np.random.default_rng(1)
    y = np.repeat(["a", "b", "c"], 15)
    x = rng.normal(size=(45, 4)) + np.searchsorted(["a", "b", "c"], y)[:, None]
    fast = {"n_estimators": 10}
    both = classify_region_sets({"one": x, "copy": x.copy(), "other": rng.normal(size=(45, 3))}, y, folds=3,
                                seed=5, xgb_params=fast)
    np.testing.assert_array_equal(both.attrs["fold"], region_set_folds(y, 3, 5))
    a, b = both.set_index("embedding").loc[["one", "copy"]].to_numpy()
    np.testing.assert_array_equal(a, b)  # same folds, same seed: the same scores
    alone = classify_region_sets({"one": x}, y, folds=3, seed=5, xgb_params=fast)
    np.testing.assert_array_equal(alone.iloc[0, 1:].to_numpy(), both.iloc[0, 1:].to_numpy())
    counts = pd.crosstab(y, both.attrs["fold"]).to_numpy()
    assert (counts == 5).all()  # stratified
    with pytest.raises(ValueError, match="at least folds"):
        classify_region_sets({"one": x}, y, folds=20)


def test_run_bulk_benchmark_tiny(data_dir, tmp_path):
    table = run_bulk_benchmark("Schep600", data_dir=data_dir, out_dir=tmp_path, max_cells=96, sets_per_type=3,
                               min_cells=3, max_cells_per_set=6, folds=3, pretrain_steps=2, scembed_epochs=1,
                               n_components=8, xgb_params={"n_estimators": 5}, say=lambda m: None)
    assert table["embedding"].tolist() == ["atacformer", "atacformer untrained", "LSI", "scEmbed"]
    assert (table["dataset"] == "Schep600").all() and (table["n_sets"] == 36).all() and (table["n_types"] == 12).all()
    for col in ("accuracy", "macro_f1", "seconds"):
        assert np.isfinite(table[col]).all()
    assert table["accuracy"].between(0, 1).all()
    assert table.set_index("embedding").loc["LSI", "dims"] == 7  # first component dropped

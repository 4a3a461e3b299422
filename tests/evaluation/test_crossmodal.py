"""Cross-modal metrics against brute-force double loops and scipy.stats.pearsonr."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from atacformer.metrics import (
    foscttm,
    pearson_per_cell,
    pearson_per_gene,
    pearson_summary,
    retrieval_recall,
)


def _distance(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    """One pair's distance, written out; undefined distances are infinite."""
    if metric == "euclidean":
        return float(np.sqrt(((a - b) ** 2).sum()))
    if metric == "correlation":
        if a.max() == a.min() or b.max() == b.min():
            return np.inf
        return 1.0 - float(np.corrcoef(a, b)[0, 1])
    na, nb = np.sqrt((a * a).sum()), np.sqrt((b * b).sum())
    if na == 0 or nb == 0:
        return np.inf
    return 1.0 - float((a * b).sum()) / (na * nb)


def _brute_counts(q: np.ndarray, t: np.ndarray, metric: str):
    """For each query row: targets strictly closer than its partner, and targets tied with it."""
    n = q.shape[0]
    closer, tied = np.zeros(n), np.zeros(n)
    for i in range(n):
        own = _distance(q[i], t[i], metric)
        for j in range(n):
            if j == i:
                continue
            d = _distance(q[i], t[j], metric)
            if d == own or np.isclose(d, own, rtol=1e-9, atol=1e-12):
                tied[i] += 1
            elif d < own:
                closer[i] += 1
    return closer, tied


def _brute_foscttm(x, y, metric):
    n = x.shape[0]
    fx = [(c + 0.5 * t) / (n - 1) for c, t in zip(*_brute_counts(x, y, metric))]
    fy = [(c + 0.5 * t) / (n - 1) for c, t in zip(*_brute_counts(y, x, metric))]
    return (np.mean(fx) + np.mean(fy)) / 2, np.array(fx), np.array(fy)


def _brute_recall(q, t, k, metric):
    closer, tied = _brute_counts(q, t, metric)
    hits = [min(1.0, max(0.0, (k - c) / (s + 1))) for c, s in zip(closer, tied)]
    return float(np.mean(hits))


METRICS = ("euclidean", "cosine", "correlation")


@pytest.mark.parametrize("metric", METRICS)
def test_foscttm_and_recall_match_brute_force_on_continuous_data(metric):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6))
    y = x + rng.normal(scale=0.8, size=x.shape)
    mean, fx, fy = foscttm(x, y, metric, per_cell=True)
    b_mean, b_fx, b_fy = _brute_foscttm(x, y, metric)
    assert mean == pytest.approx(b_mean, abs=1e-12)
    np.testing.assert_allclose(fx, b_fx, atol=1e-12)
    np.testing.assert_allclose(fy, b_fy, atol=1e-12)
    assert 0.0 < mean < 0.4
    # no ties: the strict count of the usual definition (SCOT), from a full distance matrix
    from scipy.spatial.distance import cdist

    d = cdist(x, y, "sqeuclidean" if metric == "euclidean" else metric)
    strict_x = (d < np.diag(d)[:, None]).sum(1) / (len(x) - 1)
    strict_y = (d < np.diag(d)[None, :]).sum(0) / (len(x) - 1)
    assert mean == pytest.approx((strict_x.mean() + strict_y.mean()) / 2, abs=1e-12)
    rec = retrieval_recall(x, y, ks=(1, 5, 10), metric=metric)
    rank = (d < np.diag(d)[:, None]).sum(1)  # argsort rank of the partner, no ties
    for k in (1, 5, 10):
        assert rec[f"recall@{k}"] == pytest.approx(_brute_recall(x, y, k, metric), abs=1e-12)
        assert rec[f"recall@{k}"] == pytest.approx((rank < k).mean(), abs=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_ties_and_undefined_distances_match_brute_force(metric):
    """Small integers: duplicated rows, all-zero rows (cosine undefined), constant rows
    (correlation undefined) and many equal distances."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, size=(30, 3)).astype(float)
    y = x.copy()
    y[rng.random(30) < 0.5] = rng.integers(0, 3, size=3)
    x[3] = 0.0
    y[7] = 0.0
    x[11] = 2.0
    y[5] = y[6]
    mean, fx, fy = foscttm(x, y, metric, per_cell=True)
    b_mean, b_fx, b_fy = _brute_foscttm(x, y, metric)
    np.testing.assert_allclose(fx, b_fx, atol=1e-12)
    np.testing.assert_allclose(fy, b_fy, atol=1e-12)
    assert mean == pytest.approx(b_mean, abs=1e-12)
    rec = retrieval_recall(x, y, ks=(1, 3, 10), metric=metric)
    for k in (1, 3, 10):
        assert rec[f"recall@{k}"] == pytest.approx(_brute_recall(x, y, k, metric), abs=1e-12)


def test_ties_are_the_expectation_of_random_tie_breaking():
    """A cell tied with every target scores what a random order of the ties scores on average."""
    rng = np.random.default_rng(3)
    n, k = 12, 3
    x = rng.normal(size=(n, 2))
    y = np.ones((n, 2))  # every target identical: all tied
    _, fx, _ = foscttm(x, y, per_cell=True)
    np.testing.assert_allclose(fx, 0.5)
    # random tie-breaking, simulated: the partner's rank among n equally distant targets is uniform
    ranks = rng.integers(0, n, size=200_000)
    assert retrieval_recall(x, y, ks=(k,), metric="euclidean")[f"recall@{k}"] == pytest.approx(
        (ranks < k).mean(), abs=0.01)
    assert retrieval_recall(x, y, ks=(k,), metric="euclidean")[f"recall@{k}"] == pytest.approx(k / n)


@pytest.mark.parametrize("metric", METRICS)
def test_blocks_and_sparse_inputs_give_the_same_answer(metric):
    x = sp.random(50, 20, density=0.3, random_state=5, format="csr")
    y = x + sp.random(50, 20, density=0.1, random_state=6, format="csr")
    dense = foscttm(x.toarray(), y.toarray(), metric)
    assert foscttm(x, y, metric) == pytest.approx(dense, abs=1e-12)
    assert foscttm(x.toarray(), y.toarray(), metric, block_entries=7) == pytest.approx(dense, abs=1e-12)
    r = retrieval_recall(x.toarray(), y.toarray(), metric=metric)
    assert retrieval_recall(x, y, metric=metric, block_entries=60) == pytest.approx(r, abs=1e-12)


def test_random_pairing_is_near_one_half():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 8))
    y = rng.normal(size=(300, 8))
    assert foscttm(x, y) == pytest.approx(0.5, abs=0.03)
    assert retrieval_recall(x, y, ks=(10,))["recall@10"] == pytest.approx(10 / 300, abs=0.03)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="same cells"):
        foscttm(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="metric"):
        retrieval_recall(np.zeros((3, 2)), np.zeros((3, 2)), metric="manhattan")
    with pytest.raises(ValueError, match="same cells and genes"):
        pearson_per_gene(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="positive"):
        retrieval_recall(np.eye(3), np.eye(3), ks=(0,))


def _scipy_pearson(a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: scipy warns and returns NaN
        return float(stats.pearsonr(a, b)[0])


def test_pearson_matches_scipy_on_random_inputs_dense_and_sparse():
    rng = np.random.default_rng(6)
    true = rng.poisson(1.0, size=(25, 15)).astype(float)
    pred = true * rng.random(true.shape) + rng.random(true.shape)
    true[:, 4] = 3.0  # a constant gene
    true[9] = 3.0  # a constant cell (and gene 4 stays constant)
    pred[:, 7] = 0.0
    per_gene = [_scipy_pearson(true[:, j], pred[:, j]) for j in range(15)]
    per_cell = [_scipy_pearson(true[i], pred[i]) for i in range(25)]
    for t, p in ((true, pred), (sp.csr_matrix(true), sp.csr_matrix(pred)), (sp.csr_matrix(true), pred)):
        np.testing.assert_allclose(pearson_per_gene(t, p), per_gene, atol=1e-12)
        np.testing.assert_allclose(pearson_per_cell(t, p), per_cell, atol=1e-12)
        np.testing.assert_allclose(pearson_per_gene(t, p, block_entries=20), per_gene, atol=1e-12)
        np.testing.assert_allclose(pearson_per_cell(t, p, block_entries=20), per_cell, atol=1e-12)
    assert np.isnan(pearson_per_gene(true, pred)[[4, 7]]).all()
    assert np.isnan(pearson_per_cell(true, pred)[9])


def test_pearson_summary_counts_nans():
    s = pearson_summary([0.2, np.nan, 0.4, 0.9, np.nan])
    assert s["mean"] == pytest.approx(0.5) and s["median"] == pytest.approx(0.4)
    assert (s["n_finite"], s["n_nan"]) == (3, 2)
    assert np.isnan(pearson_summary([np.nan])["mean"])


def _scicar_rna(data_dir, n=200):
    import anndata as ad
    import scanpy as sc

    rna = ad.read_h5ad(data_dir / "scicar2018_a549_multiome" / "scicar_a549_rna.h5ad")[:n].copy()
    sc.pp.normalize_total(rna, target_sum=1e4)
    sc.pp.log1p(rna)
    return rna


def test_pearson_on_real_scicar_rna(data_dir):
    rna = _scicar_rna(data_dir, n=150)
    x = sp.csr_matrix(rna.X)
    silent = np.flatnonzero(x.getnnz(0) == 0)[:20]  # genes no cell of the slice expresses
    true = x[:, np.r_[np.arange(300), silent]]
    rng = np.random.default_rng(7)
    noisy = true.toarray() + rng.normal(scale=0.5, size=true.shape)
    dense = true.toarray()
    per_gene = pearson_per_gene(true, noisy)
    ref = np.array([_scipy_pearson(dense[:, j], noisy[:, j]) for j in range(dense.shape[1])])
    np.testing.assert_allclose(per_gene, ref, atol=1e-10)
    assert np.isnan(per_gene).sum() == (dense.max(0) == dense.min(0)).sum() > 0  # unexpressed genes
    per_cell = pearson_per_cell(true, noisy)
    np.testing.assert_allclose(per_cell, [_scipy_pearson(dense[i], noisy[i]) for i in range(len(dense))],
                               atol=1e-10)
    s = pearson_summary(per_gene)
    assert s["n_nan"] == np.isnan(ref).sum() and s["mean"] == pytest.approx(np.nanmean(ref))


def test_foscttm_on_real_scicar_rna(data_dir):
    """Two noisy copies of the same real cells' PCA: brute force agrees, and the metric sees the pairing."""
    import scanpy as sc

    rna = _scicar_rna(data_dir, n=120)
    sc.pp.pca(rna, n_comps=10, random_state=0)
    z = rna.obsm["X_pca"].astype(np.float64)
    rng = np.random.default_rng(8)
    x = z + rng.normal(scale=z.std() * 0.5, size=z.shape)
    y = z + rng.normal(scale=z.std() * 0.5, size=z.shape)
    for metric in ("euclidean", "cosine"):
        got = foscttm(x, y, metric)
        assert got == pytest.approx(_brute_foscttm(x, y, metric)[0], abs=1e-12)
        assert got < 0.3
        rec = retrieval_recall(x, y, ks=(1, 5), metric=metric)
        assert rec["recall@5"] == pytest.approx(_brute_recall(x, y, 5, metric), abs=1e-12)

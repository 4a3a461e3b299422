"""Metrics against scikit-learn, scib-metrics (when installed) and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import cdist
from sklearn import metrics as skm

from atacformer import metrics as M


@pytest.fixture()
def partitions():
    rng = np.random.default_rng(3)
    labels = rng.choice(["t1", "t2", "t3", "t4"], size=300)
    clusters = np.where(rng.random(300) < 0.7, labels, rng.choice(["t1", "t2", "t3"], 300))
    return labels, np.char.add("c", clusters)


def test_supervised_scores_agree_with_sklearn(partitions):
    y, c = partitions
    s = M.clustering_scores(y, c)
    assert s["ari"] == pytest.approx(skm.adjusted_rand_score(y, c))
    assert s["ami"] == pytest.approx(skm.adjusted_mutual_info_score(y, c))
    assert s["nmi"] == pytest.approx(skm.normalized_mutual_info_score(y, c))
    assert s["homogeneity"] == pytest.approx(skm.homogeneity_score(y, c))
    assert s["n_clusters"] == 4


def _brute_f1(y, c):
    """Best macro F1 over every one-to-one relabelling of clusters to (integer) labels."""
    labs, clus = np.unique(y), np.unique(c)
    best = 0.0
    slots = list(clus) + [None] * len(labs)  # a label may get no cluster
    for perm in itertools.permutations(slots, len(labs)):
        if len({p for p in perm if p is not None}) != sum(p is not None for p in perm):
            continue
        mapping = {cl: lab for lab, cl in zip(labs, perm) if cl is not None}
        pred = np.array([mapping.get(v, -1) for v in c])  # -1: no label
        best = max(best, skm.f1_score(y, pred, labels=labs, average="macro", zero_division=0))
    return best


@pytest.mark.parametrize("n_clusters", [2, 3, 4])
def test_f1_matches_brute_force(n_clusters):
    rng = np.random.default_rng(n_clusters)
    for _ in range(5):
        y = rng.integers(0, 3, 40)
        c = rng.integers(0, n_clusters, 40) * 10
        assert M.f1(y, c) == pytest.approx(_brute_f1(y, c))


def test_f1_perfect_and_relabelled():
    y = np.array(list("aabbcc"))
    assert M.f1(y, [2, 2, 0, 0, 1, 1]) == pytest.approx(1.0)
    assert M.match_clusters(y, [2, 2, 0, 0, 1, 1]) == {2: "a", 0: "b", 1: "c"}


def test_accepts_pandas_categoricals(partitions):
    import pandas as pd

    y, c = partitions
    ys, cs = pd.Series(pd.Categorical(y)), pd.Series(pd.Categorical(c))
    assert M.clustering_scores(ys, cs) == M.clustering_scores(y, c)
    assert M.match_clusters(ys, cs) == M.match_clusters(y, c)


def test_gini_matches_mean_absolute_difference():
    rng = np.random.default_rng(0)
    x = rng.gamma(1.0, size=(20, 9))
    pairs = np.abs(x[:, :, None] - x[:, None, :]).sum(axis=(1, 2))
    brute = pairs / (2 * 9**2 * x.mean(axis=1))
    np.testing.assert_allclose(M.gini(x, axis=1), brute)
    assert M.gini(np.zeros(5)) == 0.0


def test_ragi_by_hand():
    rng = np.random.default_rng(1)
    clusters = np.repeat([0, 1, 2], 30)
    marker = np.where(clusters == 1, 3.0, 0.1) + rng.random(90) * 0.1
    housekeeping = 2.0 + rng.random((90, 2))
    x = np.column_stack([marker, housekeeping])
    names = ["M", "H1", "H2"]

    def gini_loop(v):
        n = len(v)
        return sum(abs(a - b) for a in v for b in v) / (2 * n * n * np.mean(v))

    means = [[x[clusters == k, j].mean() for k in range(3)] for j in range(3)]
    expected = gini_loop(means[0]) - (gini_loop(means[1]) + gini_loop(means[2])) / 2
    got = M.ragi(x, clusters, ["M", "absent"], ["H1", "H2"], gene_names=names)
    assert got == pytest.approx(expected)
    assert expected > 0.4


def test_silhouette_batch_by_hand():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 4))
    batch = rng.integers(0, 2, 120)
    labels = np.repeat([0, 1, 2], 40)
    x[batch == 1] += 1.5
    per_label = []
    for lab in range(3):
        m = labels == lab
        per_label.append(np.mean(1 - np.abs(skm.silhouette_samples(x[m], batch[m]))))
    assert M.silhouette_batch(x, batch, labels) == pytest.approx(np.mean(per_label))


def _brute_lisi(x, labels, perplexity=30.0, tol=1e-5):
    """Harmony's compute_lisi, one cell at a time from the full distance matrix."""
    d_all = cdist(x, x)
    k = int(3 * perplexity)
    out = []
    for i in range(len(x)):
        order = np.argsort(d_all[i], kind="stable")[:k]
        order = order[order != i]
        d = d_all[i, order]
        beta, lo, hi = 1.0, -np.inf, np.inf

        def h_p(beta):
            p = np.exp(-d * beta)
            s = p.sum()
            return np.log(s) + beta * (d * p).sum() / s, p / s

        h, p = h_p(beta)
        for _ in range(50):
            if abs(h - np.log(perplexity)) <= tol:
                break
            if h > np.log(perplexity):
                lo, beta = beta, beta * 2 if np.isinf(hi) else (beta + hi) / 2
            else:
                hi, beta = beta, beta / 2 if np.isinf(lo) else (beta + lo) / 2
            h, p = h_p(beta)
        simpson = sum(p[labels[order] == b].sum() ** 2 for b in np.unique(labels))
        out.append(1 / simpson)
    return np.array(out)


@pytest.mark.parametrize("shift", [0.0, 1.0, 4.0])
def test_lisi_matches_brute_force(shift):
    rng = np.random.default_rng(4)
    batch = rng.integers(0, 3, 250)
    x = rng.normal(size=(250, 6)) + shift * np.eye(6)[batch]
    np.testing.assert_allclose(M.lisi(x, batch), _brute_lisi(x, batch), rtol=1e-6)
    ilisi = M.ilisi(x, batch)
    assert ilisi == pytest.approx(np.median(_brute_lisi(x, batch)))
    assert M.ilisi(x, batch, scale=True) == pytest.approx((ilisi - 1) / 2)


def test_kbet_matches_scipy_chisquare():
    rng = np.random.default_rng(5)
    batch = rng.choice(["p", "q", "r"], 200, p=[0.5, 0.3, 0.2])
    x = rng.normal(size=(200, 5)) + 1.0 * (batch == "p")[:, None]
    rate, pvalues = M.kbet(x, batch, n_neighbors=25, return_pvalues=True)
    d = cdist(x, x)
    names = np.unique(batch)
    freq = np.array([(batch == b).mean() for b in names])
    brute = []
    for i in range(200):
        nbrs = np.argsort(d[i], kind="stable")[1:26]
        counts = np.array([(batch[nbrs] == b).sum() for b in names])
        brute.append(stats.chisquare(counts, 25 * freq).pvalue)
    np.testing.assert_allclose(pvalues, brute, rtol=1e-8)
    assert rate == pytest.approx(np.mean(np.array(brute) >= 0.05))


def test_batch_metrics_rank_mixed_above_separated():
    rng = np.random.default_rng(6)
    batch = np.arange(400) % 2
    labels = np.zeros(400)
    mixed = rng.normal(size=(400, 5))
    split = mixed + 6.0 * batch[:, None]
    assert M.ilisi(mixed, batch) > 1.8 > 1.1 > M.ilisi(split, batch)
    assert M.kbet(mixed, batch) > 0.8 > 0.05 > M.kbet(split, batch)
    assert M.silhouette_batch(mixed, batch, labels) > 0.9 > M.silhouette_batch(split, batch, labels)


def test_against_scib_metrics_when_installed():
    sm = pytest.importorskip("scib_metrics", reason="scib-metrics not installed (optional peer)")
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(7)
    batch = rng.integers(0, 3, 300)
    labels = rng.integers(0, 2, 300)
    x = rng.normal(size=(300, 8)) + 0.8 * np.eye(8)[batch]
    d, i = NearestNeighbors(n_neighbors=90).fit(x).kneighbors(x)
    ours = M.ilisi(x, batch, scale=False)
    theirs = sm.ilisi_knn(NeighborsResults(indices=i, distances=d), batch, perplexity=30,
                          scale=False)
    assert ours == pytest.approx(float(theirs), rel=1e-4)
    d, i = NearestNeighbors(n_neighbors=21).fit(x).kneighbors(x)
    rate = sm.kbet(NeighborsResults(indices=i[:, 1:], distances=d[:, 1:]), batch)[0]
    assert M.kbet(x, batch, n_neighbors=20) == pytest.approx(float(rate))
    assert M.silhouette_batch(x, batch, labels) == pytest.approx(
        float(sm.silhouette_batch(x, labels, batch)), rel=1e-5)


def test_input_errors():
    with pytest.raises(ValueError):
        M.ari([0, 1], [0])
    with pytest.raises(ValueError):
        M.kbet(np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(ValueError):
        M.ilisi(np.full((5, 2), np.nan), np.arange(5))
    with pytest.raises(ValueError):
        M.ragi(np.ones((4, 2)), [0, 0, 1, 1], ["X"], ["H"], gene_names=["M", "H"])

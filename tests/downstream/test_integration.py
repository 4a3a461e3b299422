"""Batch-integration scores and the Harmony peer on real cells (Schep 600 LSI) with batches of
known construction, checked against scib-metrics, scikit-learn and scipy.

Constructions: ``random`` assigns each cell to batch A or B by a coin flip (batch independent
of the cells: mixed); ``split`` adds 5 units along a random direction to the B cells. LSI
rows have unit length, so every within-batch distance is at most 2 and every cross-batch
distance at least 5 - 2 = 3: each cell's nearest neighbours (up to its batch's size) are all
of its own batch, a perfectly unmixed case with known iLISI 0 and kBET acceptance 0.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.metrics import silhouette_samples, silhouette_score
from sklearn.neighbors import NearestNeighbors

from atacformer import metrics as M

SPLIT, SHIFT = 5.0, 1.0


@pytest.fixture(scope="module")
def scib():
    return pytest.importorskip("scib_metrics", reason="scib-metrics not installed (pip install "
                               "'atacformer[integration]')")


@pytest.fixture(scope="module")
def batched(schep_lsi):
    a = schep_lsi.copy()
    rng = np.random.default_rng(0)
    is_b = rng.random(a.n_obs) < 0.5
    a.obs["batch"] = np.where(is_b, "B", "A")
    x = np.asarray(a.obsm["X_lsi"], dtype=np.float64)
    v = rng.normal(size=x.shape[1])
    v /= np.linalg.norm(v)
    a.obsm["X_split"] = (x + SPLIT * is_b[:, None] * v).astype(np.float32)
    a.obsm["X_shift"] = (x + SHIFT * is_b[:, None] * v).astype(np.float32)
    return a


@pytest.fixture(scope="module")
def scores(batched, scib):
    """integration_scores with scib-metrics and with the package's own metrics."""
    return {(rep, backend): M.integration_scores(batched, rep, "batch", "cell_type", backend=backend)
            for rep in ("X_lsi", "X_split") for backend in ("scib", "atacformer")}


def _graph_connectivity(x, labels, k=15):
    """Brute force: per label, the largest connected share of its subgraph of the kNN graph."""
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    nbrs = np.argsort(d, axis=1, kind="stable")[:, :k]
    adj = np.zeros_like(d, dtype=bool)
    adj[np.repeat(np.arange(len(x)), k), nbrs.ravel()] = True
    shares = []
    for lab in np.unique(labels):
        m = labels == lab
        _, comp = connected_components(csr_matrix(adj[m][:, m]), connection="strong")
        shares.append(np.bincount(comp).max() / m.sum())
    return float(np.mean(shares))


def test_batch_columns_high_when_mixed_low_when_split(batched, scores):
    mixed, split = scores[("X_lsi", "scib")], scores[("X_split", "scib")]
    assert mixed["ilisi"] > 0.85 and mixed["kbet"] > 0.85 and mixed["batch_asw"] > 0.9
    # the known unmixed case: every neighbourhood holds one batch
    assert split["ilisi"] == pytest.approx(0.0, abs=1e-6)
    assert split["kbet"] == pytest.approx(0.0, abs=1e-6)
    assert split["batch_asw"] < mixed["batch_asw"] - 0.2
    assert split["graph_connectivity"] < mixed["graph_connectivity"]
    # the split cuts every label in two: at most its larger batch stays connected
    labels = batched.obs["cell_type"].to_numpy()
    is_b = batched.obs["batch"].to_numpy() == "B"
    larger = np.mean([max(is_b[labels == c].mean(), 1 - is_b[labels == c].mean())
                      for c in np.unique(labels)])
    assert split["graph_connectivity"] <= larger + 1e-9
    assert split["batch_correction"] < 0.4 < 0.8 < mixed["batch_correction"]


@pytest.mark.parametrize("rep", ["X_lsi", "X_split"])
def test_columns_match_independent_computations(batched, scores, rep):
    s = scores[(rep, "scib")]
    x = np.asarray(batched.obsm[rep], dtype=np.float64)
    labels = batched.obs["cell_type"].to_numpy()
    batch = batched.obs["batch"].to_numpy()
    assert s["label_asw"] == pytest.approx((silhouette_score(x, labels) + 1) / 2, abs=1e-5)
    per_label = [np.mean(1 - np.abs(silhouette_samples(x[labels == c], batch[labels == c])))
                 for c in np.unique(labels)]
    assert s["batch_asw"] == pytest.approx(np.mean(per_label), abs=1e-5)
    assert s["graph_connectivity"] == pytest.approx(_graph_connectivity(x, labels), abs=1e-9)
    n_labels = np.unique(labels).size
    clisi = np.median(M.lisi(x, labels))  # checked against Harmony's algorithm in test_metrics
    assert s["clisi"] == pytest.approx((n_labels - clisi) / (n_labels - 1), abs=1e-4)
    ev = M.evaluate_embedding(batched, rep, "cell_type")  # the one clustering protocol
    assert (s["ari"], s["nmi"]) == pytest.approx((ev["leiden_ari"], ev["leiden_nmi"]))
    bio = np.mean([s["ari"], s["nmi"], s["label_asw"], s["clisi"]])
    assert s["bio_conservation"] == pytest.approx(bio)
    assert s["total"] == pytest.approx(0.4 * s["batch_correction"] + 0.6 * bio)


@pytest.mark.parametrize("rep", ["X_lsi", "X_shift", "X_split"])
def test_own_ilisi_kbet_agree_with_scib_on_same_neighbours(batched, scib, rep):
    """Same cells, same exact neighbours: per-cell LISI within 1e-4 relative (measured <= 1e-5:
    scib-metrics computes in float32), kBET p-values within 1e-5 (measured <= 1e-6) and the
    same acceptance decisions."""
    from scib_metrics.nearest_neighbors import NeighborsResults

    x = np.asarray(batched.obsm[rep], dtype=np.float64)
    batch = batched.obs["batch"].to_numpy()
    d, i = NearestNeighbors(n_neighbors=90).fit(x).kneighbors(x)
    nn = NeighborsResults(indices=i, distances=d)
    np.testing.assert_allclose(M.lisi(x, batch), scib.lisi_knn(nn, batch, perplexity=30), rtol=1e-4)
    assert M.ilisi(x, batch, scale=True) == pytest.approx(
        float(scib.ilisi_knn(nn, batch, perplexity=30, scale=True)), abs=1e-5)
    for k in (10, 25, 50):
        rate, p = M.kbet(x, batch, n_neighbors=k, return_pvalues=True)
        theirs = scib.kbet(NeighborsResults(indices=i[:, 1:k + 1], distances=d[:, 1:k + 1]), batch)
        np.testing.assert_allclose(p, theirs[2], atol=1e-5)
        assert rate == pytest.approx(float(theirs[0]), abs=1 / len(x))


def test_fallback_table_agrees_with_scib(scores):
    """The stand-in table: the same definitions agree to float32 rounding; kBET per label runs
    on Euclidean neighbours within the label instead of diffusion distances, and agrees at the
    extremes (measured: 0.967 vs 0.967 mixed, 0.0 vs 0.0 split; in between, e.g. a shift of 0.5,
    0.53 vs 0.26)."""
    for rep in ("X_lsi", "X_split"):
        ours, theirs = scores[(rep, "atacformer")], scores[(rep, "scib")]
        for col in ("ilisi", "batch_asw", "graph_connectivity", "label_asw", "clisi", "ari", "nmi"):
            assert ours[col] == pytest.approx(theirs[col], abs=1e-4), col
        assert ours["kbet"] == pytest.approx(theirs["kbet"], abs=0.05)


def test_harmony_mixes_a_shifted_batch(batched, scib):
    from scib_metrics.nearest_neighbors import NeighborsResults

    from atacformer.evaluation import harmony

    a = batched.copy()
    harmony(a, "X_shift", "batch")
    assert a.obsm["X_shift_harmony"].shape == a.obsm["X_shift"].shape
    batch = a.obs["batch"].to_numpy()

    def ilisi(rep):  # scib-metrics' iLISI on exact neighbours (self included)
        x = np.asarray(a.obsm[rep], dtype=np.float64)
        d, i = NearestNeighbors(n_neighbors=90).fit(x).kneighbors(x)
        return float(scib.ilisi_knn(NeighborsResults(indices=i, distances=d), batch, perplexity=30))

    before, after, unshifted = ilisi("X_shift"), ilisi("X_shift_harmony"), ilisi("X_lsi")
    assert before < 0.2 and after > 0.8
    assert after == pytest.approx(unshifted, abs=0.1)
    harmony(a, "X_shift", "batch", key_added="X_h")
    np.testing.assert_allclose(a.obsm["X_h"], a.obsm["X_shift_harmony"])  # seeded
    with pytest.raises(ValueError, match="at least 2"):
        a.obs["one"] = "x"
        harmony(a, "X_shift", "one")


def test_cells_without_label_or_batch_are_left_out(batched):
    a = batched.copy()
    a.obs["cell_type"] = a.obs["cell_type"].astype(object)
    a.obs.iloc[:7, a.obs.columns.get_loc("cell_type")] = np.nan
    a.obs["batch"] = a.obs["batch"].astype(object)
    a.obs.iloc[7:10, a.obs.columns.get_loc("batch")] = None
    a.obsm["X_lsi"] = np.array(a.obsm["X_lsi"])
    a.obsm["X_lsi"][10:12] = np.nan
    got = M.integration_scores(a, "X_lsi", "batch", "cell_type", backend="atacformer")
    want = M.integration_scores(batched[12:].copy(), "X_lsi", "batch", "cell_type", backend="atacformer")
    assert got == pytest.approx(want)


def test_input_errors(batched):
    a = batched.copy()
    with pytest.raises(KeyError, match="nope"):
        M.integration_scores(a, "X_lsi", "nope", "cell_type")
    with pytest.raises(KeyError, match="X_none"):
        M.integration_scores(a, "X_none", "batch", "cell_type")
    a.obs["one"] = "x"
    with pytest.raises(ValueError, match="at least 2"):
        M.integration_scores(a, "X_lsi", "one", "cell_type")
    with pytest.raises(ValueError, match="at least 2"):
        M.integration_scores(a, "X_lsi", "batch", "one")
    with pytest.raises(ValueError, match="backend"):
        M.integration_scores(a, "X_lsi", "batch", "cell_type", backend="scanpy")


def test_falls_back_with_a_warning_without_scib(batched, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "scib_metrics", None)  # import now raises ImportError
    with caplog.at_level(logging.WARNING, logger="atacformer.metrics._integration"):
        s = M.integration_scores(batched, "X_split", "batch", "cell_type")
    assert "falling back" in caplog.text and "scib-metrics is not installed" in caplog.text
    assert s["ilisi"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ImportError):
        M.integration_scores(batched, "X_split", "batch", "cell_type", backend="scib")

"""Label transfer and UMAP reference projection on a half/half split of real data."""

from __future__ import annotations

from collections import Counter

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import NearestNeighbors

from atacformer import tools as tl


@pytest.fixture(scope="module")
def split(schep_lsi):
    """Stratified half/half split of Schep 600 (25 cells per label on each side)."""
    rng = np.random.default_rng(0)
    y = schep_lsi.obs["cell_type"].to_numpy()
    ref_idx = np.concatenate([rng.permutation(np.flatnonzero(y == v))[:25] for v in np.unique(y)])
    is_ref = np.zeros(len(y), dtype=bool)
    is_ref[ref_idx] = True
    return schep_lsi[is_ref].copy(), schep_lsi[~is_ref].copy()


def _brute_vote(labels_in_order):
    """Majority; ties to the tied label whose first neighbour comes first."""
    counts = Counter(labels_in_order)
    top = max(counts.values())
    return next(v for v in labels_in_order if counts[v] == top), top / len(labels_in_order)


def test_transfer_beats_majority_baseline(split, record_property):
    ref, query = split
    tl.transfer_labels(ref, query, "X_lsi", "cell_type", k=15)
    truth = query.obs["cell_type"].astype(str).to_numpy()
    pred = query.obs["cell_type_transferred"].astype(str).to_numpy()
    accuracy = float(np.mean(pred == truth))
    baseline = pd.Series(ref.obs["cell_type"]).value_counts(normalize=True).iloc[0]
    record_property("transfer_accuracy_schep", accuracy)
    assert accuracy > baseline + 0.4  # baseline 1/12
    conf = query.obs["cell_type_transferred_confidence"]
    assert conf.between(1 / 15, 1).all()
    assert conf[pred == truth].mean() > conf[pred != truth].mean()


def test_vote_matches_brute_force(split):
    ref, query = split
    tl.transfer_labels(ref, query, "X_lsi", "cell_type", k=6, key_added="t6")
    idx = NearestNeighbors(n_neighbors=6).fit(ref.obsm["X_lsi"]).kneighbors(
        query.obsm["X_lsi"], return_distance=False)
    ref_labels = ref.obs["cell_type"].astype(str).to_numpy()
    for i in range(query.n_obs):
        label, conf = _brute_vote(list(ref_labels[idx[i]]))
        assert query.obs["t6"].iloc[i] == label
        assert query.obs["t6_confidence"].iloc[i] == pytest.approx(conf)


def test_transfer_skips_missing_reference_labels():
    ref = ad.AnnData(np.zeros((4, 1)), obs=pd.DataFrame(
        {"t": pd.Categorical(["a", None, "b", "b"])}, index=list("wxyz")))
    ref.obsm["X_e"] = np.array([[0.0], [0.01], [5.0], [5.1]])
    q = ad.AnnData(np.zeros((1, 1)), obs=pd.DataFrame(index=["q"]))
    q.obsm["X_e"] = np.array([[0.0]])
    tl.transfer_labels(ref, q, "X_e", "t", k=1)
    assert q.obs["t_transferred"].iloc[0] == "a"
    with pytest.raises(ValueError, match="label_key"):
        tl.transfer_labels(ref, q, "X_e", "nope")


def test_projection_places_query_near_same_label(split, record_property):
    ref, query = split
    reducer = tl.project_umap(ref, query, "X_lsi", seed=0)
    assert ref.obsm["X_umap"].shape == (300, 2) and query.obsm["X_umap"].shape == (300, 2)
    assert np.isfinite(query.obsm["X_umap"]).all()
    assert query.uns["X_umap"]["params"]["role"] == "query"
    again = reducer.transform(query.obsm["X_lsi"])
    assert again.shape == (300, 2)
    idx = NearestNeighbors(n_neighbors=15).fit(ref.obsm["X_umap"]).kneighbors(
        query.obsm["X_umap"], return_distance=False)
    ref_labels = ref.obs["cell_type"].astype(str).to_numpy()
    pred = np.array([_brute_vote(list(ref_labels[row]))[0] for row in idx])
    accuracy = float(np.mean(pred == query.obs["cell_type"].astype(str).to_numpy()))
    record_property("umap_projection_knn_accuracy_schep", accuracy)
    assert accuracy > 0.5

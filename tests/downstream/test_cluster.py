"""Clustering: resolution search, sklearn methods, fallbacks."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering

from atacformer import metrics as M
from atacformer import tools as tl


@pytest.mark.parametrize("method", ["leiden", "louvain"])
def test_resolution_search_hits_k_on_real_data(schep_lsi, method, record_property):
    a = schep_lsi.copy()
    tl.cluster(a, "X_lsi", method, n_clusters=12, key_added="cl")
    info = a.uns["cl"]
    assert info["n_clusters"] == 12 == a.obs["cl"].nunique()
    assert info["exact"] and info["target_n_clusters"] == 12
    assert 0 < info["resolution"] <= 3
    assert info["search_n_clusters"][-1] == 12
    ari = M.ari(a.obs["cell_type"], a.obs["cl"])
    record_property(f"ari_lsi_{method}_schep", ari)
    assert ari > 0.4
    # The found resolution reproduces the clustering when run directly.
    tl.cluster(a, "X_lsi", method, resolution=info["resolution"], key_added="again")
    assert M.ari(a.obs["cl"], a.obs["again"]) == pytest.approx(1.0)


def test_leiden_at_fixed_resolution_and_labels(blobs):
    tl.cluster(blobs, "X_emb", "leiden", key_added="ld")
    assert blobs.uns["ld"]["resolution"] == 1.0
    counts = blobs.obs["ld"].value_counts()
    assert list(blobs.obs["ld"].cat.categories) == [str(i) for i in range(len(counts))]
    assert counts.is_monotonic_decreasing or counts.loc["0"] == counts.max()
    assert "neighbors_X_emb" in blobs.uns


def test_graph_reused_only_for_same_embedding(blobs):
    from atacformer.tools import neighbors

    key = neighbors(blobs, "X_emb")
    conn = blobs.obsp[f"{key}_connectivities"]
    assert neighbors(blobs, "X_emb") == key
    assert blobs.obsp[f"{key}_connectivities"] is conn
    blobs.obsm["X_emb"] = blobs.obsm["X_emb"][::-1].copy()
    neighbors(blobs, "X_emb")
    assert blobs.obsp[f"{key}_connectivities"] is not conn
    neighbors(blobs, "X_emb", n_neighbors=10)
    assert blobs.uns[key]["params"]["n_neighbors"] == 10


def test_unreachable_k_falls_back_with_warning(blobs, caplog):
    with caplog.at_level(logging.WARNING, logger="atacformer.tools._cluster"):
        tl.cluster(blobs, "X_emb", "leiden", n_clusters=150, key_added="ld", max_iter=8)
    info = blobs.uns["ld"]
    assert not info["exact"]
    assert info["n_clusters"] == max(info["search_n_clusters"])
    assert "closest" in caplog.text


def test_kmeans_and_hierarchical(blobs):
    tl.cluster(blobs, "X_emb", "kmeans", n_clusters=3, key_added="km")
    tl.cluster(blobs, "X_emb", "hierarchical", n_clusters=3, key_added="hc")
    truth = blobs.obs["label"]
    assert M.ari(truth, blobs.obs["km"]) == pytest.approx(1.0)
    ward = AgglomerativeClustering(3, linkage="ward").fit_predict(blobs.obsm["X_emb"])
    assert M.ari(ward, blobs.obs["hc"]) == pytest.approx(1.0)
    sizes = blobs.obs["hc"].value_counts()
    assert sizes.loc["0"] == sizes.max()


def test_cluster_errors(blobs):
    with pytest.raises(ValueError, match="method"):
        tl.cluster(blobs, "X_emb", "dbscan")
    with pytest.raises(ValueError, match="n_clusters"):
        tl.cluster(blobs, "X_emb", "kmeans")
    with pytest.raises(ValueError, match="not both"):
        tl.cluster(blobs, "X_emb", "leiden", n_clusters=3, resolution=1.0)
    with pytest.raises(ValueError, match="X_missing"):
        tl.cluster(blobs, "X_missing", "leiden")


def test_copy_leaves_input_untouched(blobs):
    out = tl.cluster(blobs, "X_emb", "kmeans", n_clusters=3, copy=True)
    assert "kmeans_X_emb" in out.obs and "kmeans_X_emb" not in blobs.obs
    assert np.array_equal(out.obsm["X_emb"], blobs.obsm["X_emb"])


def test_results_survive_h5ad(blobs, tmp_path):
    tl.cluster(blobs, "X_emb", "leiden", n_clusters=3, key_added="ld")
    tl.cluster(blobs, "X_emb", "louvain", resolution=0.5, key_added="lv")
    tl.cluster(blobs, "X_emb", "kmeans", n_clusters=3, key_added="km")
    blobs.write_h5ad(tmp_path / "c.h5ad")
    back = ad.read_h5ad(tmp_path / "c.h5ad")
    for key in ("ld", "lv", "km"):
        assert back.obs[key].tolist() == blobs.obs[key].tolist()
        assert back.uns[key]["n_clusters"] == blobs.uns[key]["n_clusters"]
    np.testing.assert_array_equal(back.uns["ld"]["search_resolutions"],
                                  blobs.uns["ld"]["search_resolutions"])

"""scEmbed / Region2Vec baseline: training, cell = mean of region vectors, projection."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("gensim", reason="gensim is needed for scEmbed")

from gensim.models import Word2Vec  # noqa: E402

from atacformer import metrics as M  # noqa: E402
from atacformer import tools as tl  # noqa: E402
from atacformer.tools._scembed import ScEmbedModel, _epoch_documents  # noqa: E402


@pytest.fixture()
def small():
    rng = np.random.default_rng(0)
    x = (rng.random((60, 150)) < 0.15).astype(np.float32)
    x[:, 140:] = 0
    x[:2, 140:] = 1  # regions 140..149 open in 2 cells only
    a = ad.AnnData(sp.csr_matrix(x))
    a.var_names = [f"r{j}" for j in range(150)]
    a.obs_names = [f"c{i}" for i in range(60)]
    return a


def test_cell_is_mean_of_its_region_vectors(small):
    tl.scembed(small, dim=16, epochs=3, min_count=3)
    seen = small.var["X_scembed_seen"].to_numpy()
    n_cells = np.asarray((small.X > 0).sum(axis=0)).ravel()
    np.testing.assert_array_equal(seen, n_cells >= 3)
    assert not seen[140:].any()
    vec = small.varm["X_scembed"]
    assert np.all(vec[~seen] == 0)
    x = small.X.toarray() > 0
    for i in [0, 1, 7, 30]:
        cols = np.flatnonzero(x[i] & seen)
        np.testing.assert_allclose(small.obsm["X_scembed"][i], vec[cols].mean(0), rtol=1e-5,
                                   atol=1e-6)


def test_reproducible_with_one_worker(small):
    a, b = small.copy(), small.copy()
    tl.scembed(a, dim=8, epochs=2, seed=3)
    tl.scembed(b, dim=8, epochs=2, seed=3)
    np.testing.assert_array_equal(a.obsm["X_scembed"], b.obsm["X_scembed"])
    tl.scembed(b, dim=8, epochs=2, seed=4)
    assert not np.array_equal(a.obsm["X_scembed"], b.obsm["X_scembed"])


def test_learning_rate_decays_exponentially(small, monkeypatch):
    calls = []
    original = Word2Vec.train

    def spy(self, *args, **kwargs):
        calls.append((kwargs["start_alpha"], kwargs["end_alpha"], kwargs["epochs"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Word2Vec, "train", spy)
    tl.scembed(small, dim=8, epochs=4, alpha=0.1, min_alpha=1e-4)
    expected = 0.1 * (1e-3) ** (np.arange(5) / 4)
    assert len(calls) == 4 and all(c[2] == 1 for c in calls)
    np.testing.assert_allclose([c[0] for c in calls], expected[:4])
    np.testing.assert_allclose([c[1] for c in calls], expected[1:])


def test_epoch_documents_shuffle_and_split():
    rng = np.random.default_rng(0)
    docs = [np.arange(25_000), np.array([3, 1, 2])]
    out = _epoch_documents(docs, rng)
    assert [len(d) for d in out] == [10_000, 10_000, 5_000, 3]
    assert sorted(int(w) for d in out[:3] for w in d) == list(range(25_000))
    assert out[0][:20] != [str(i) for i in range(20)]


def test_projection_matches_training_and_aligns_by_name(small, tmp_path, caplog):
    tl.scembed(small, dim=8, epochs=2)
    q = small.copy()
    del q.obsm["X_scembed"]
    tl.scembed_project(q, small)
    np.testing.assert_allclose(q.obsm["X_scembed"], small.obsm["X_scembed"], rtol=1e-6)
    perm = np.random.default_rng(1).permutation(150)
    shuffled = small[:, perm].copy()
    with caplog.at_level(logging.WARNING):
        tl.scembed_project(shuffled, small, key_added="proj")
    np.testing.assert_allclose(shuffled.obsm["proj"], small.obsm["X_scembed"], rtol=1e-5,
                               atol=1e-7)
    model = ScEmbedModel.from_adata(small)
    model.save(tmp_path / "m.npz")
    back = ScEmbedModel.load(tmp_path / "m.npz")
    assert back.params == model.params
    np.testing.assert_array_equal(back.embed(small.X)[0], small.obsm["X_scembed"])
    small.write_h5ad(tmp_path / "s.h5ad")
    reread = ScEmbedModel.from_adata(ad.read_h5ad(tmp_path / "s.h5ad"))
    assert reread.params == model.params
    np.testing.assert_array_equal(reread.vectors, model.vectors)


def test_unseen_only_cell_gets_zero_vector(small, caplog):
    tl.scembed(small, dim=8, epochs=2, min_count=3)
    q = ad.AnnData(sp.csr_matrix(np.eye(1, 150, 145, dtype=np.float32)))
    q.var_names = small.var_names
    with caplog.at_level(logging.WARNING):
        tl.scembed_project(q, small)
    assert np.all(q.obsm["X_scembed"] == 0)
    assert "no region with a vector" in caplog.text
    other = ad.AnnData(sp.csr_matrix(np.ones((1, 3), dtype=np.float32)))
    with pytest.raises(ValueError, match="no query var_name"):
        tl.scembed_project(other, small)


def test_scembed_on_real_data(schep, record_property):
    a = schep.copy()
    tl.scembed(a, epochs=10, workers=2)
    emb = a.obsm["X_scembed"]
    assert emb.shape == (600, 100) and np.isfinite(emb).all()
    assert np.linalg.norm(emb, axis=1).min() > 0
    assert a.var["X_scembed_seen"].mean() > 0.99
    tl.cluster(a, "X_scembed", "kmeans", n_clusters=12, key_added="km")
    ari = M.ari(a.obs["cell_type"], a.obs["km"])
    record_property("ari_scembed_kmeans_schep", ari)
    logging.getLogger(__name__).info("scEmbed + k-means ARI on Schep 600: %.3f", ari)
    # A weak baseline on 600 cells (measured 0.11-0.29 across settings), but not noise.
    assert ari > 0.05

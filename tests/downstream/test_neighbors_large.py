"""scanpy neighbours + Leiden + UMAP on more than 4,096 cells (PyNNDescent's path).

scanpy 1.11 hands PyNNDescent's kNN matrix to ``getnnz``; pynndescent 0.7 returns a
``scipy.sparse.csr_array``, which lost ``getnnz`` in recent scipy, so this fails with
"'csr_array' object has no attribute 'getnnz'" until ``pynndescent<0.7`` is installed
(0.5.13 and 0.6.0 both work with scanpy 1.11.5, umap-learn 0.5.12, scipy 1.17).
"""

from __future__ import annotations

import anndata as ad
import numpy as np

from atacformer import metrics as M
from atacformer import tools as tl


def test_neighbors_leiden_umap_above_pynndescent_threshold():
    rng = np.random.default_rng(0)
    n, n_groups = 5_200, 8
    groups = rng.integers(0, n_groups, n)
    centres = rng.normal(size=(n_groups, 20)) * 4
    a = ad.AnnData(np.zeros((n, 1), dtype=np.float32))
    a.obs_names = [f"c{i}" for i in range(n)]
    a.obsm["X_emb"] = (centres[groups] + rng.normal(size=(n, 20))).astype(np.float32)
    # Cosine sends scanpy to PyNNDescent from 4,096 cells on (Euclidean only from 8,192).
    tl.cluster(a, "X_emb", "leiden", resolution=0.3, metric="cosine", key_added="ld")
    tl.umap(a, "X_emb", metric="cosine")
    assert a.obsp["neighbors_X_emb_distances"].shape == (n, n)
    assert M.ari(groups, a.obs["ld"]) > 0.9
    assert a.obsm["X_umap"].shape == (n, 2) and np.isfinite(a.obsm["X_umap"]).all()

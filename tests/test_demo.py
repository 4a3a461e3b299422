"""The main job (``atacformer demo``) end to end at a tiny scale, and ``tl.embed``."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import atacformer.demo as demo
from atacformer import tools as tl
from atacformer.cli import main
from atacformer.models import embed_cells, load_model
from atacformer.train import TrainConfig, pretrain
from atacformer.vocab import Vocabulary



def test_main_job_synthetic(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "shared_data_dir", lambda: None)
    report = demo.run_main_job(tmp_path, steps=3)
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "3 steps" in out
    assert report["data"] == "SYNTHETIC"
    r = report["datasets"]["synthetic"]
    assert set(r["scores"]) == {"X_atacformer", "X_lsi"}
    a = ad.read_h5ad(tmp_path / "synthetic.h5ad")
    assert {"X_atacformer", "X_lsi", "X_umap"} <= set(a.obsm) and "leiden_atacformer" in a.obs
    for f in ("synthetic.tokens.h5ad", "synthetic.umap.png", "report.json", "report.md",
              "synthetic.run/model/config.json"):
        assert (tmp_path / f).stat().st_size > 0
    assert json.loads((tmp_path / "report.json").read_text())["data"] == "SYNTHETIC"


def test_demo_cli_user_h5ad(data_dir, tmp_path, capsys):
    h5 = data_dir / "chromvar_example_gm12878_h1" / "chromvar_gm12878_h1_50.h5ad"
    rc = main(["demo", "--input", str(h5), "--labels-key", "cell_type", "--out", str(tmp_path), "--steps", "2"])
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    (name, r), = report["datasets"].items()
    assert r["cells"] == 50 and r["tokens"] == 29269
    assert "leiden_ari" in r["scores"]["X_atacformer"]
    assert "Using your input" in capsys.readouterr().out


def _tiny(n_cells=30, seed=0):
    rng = np.random.default_rng(seed)
    v = Vocabulary(["chr1"] * 80, range(0, 8000, 100), range(100, 8100, 100))
    dense = (rng.random((n_cells, 80)) < 0.3).astype(np.float32)
    dense[0] = 0  # an empty cell
    x = sp.csr_matrix(dense)
    return v, ad.AnnData(x)


def _train(a, tmp_path, recipe, steps):
    cfg = TrainConfig(out=str(tmp_path / f"run-{recipe}"), recipe=recipe, max_steps=steps, batch_size=8,
                      progress=False, tensorboard=False,
                      model_overrides={"hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 32})
    return load_model(pretrain(cfg, data=a)["model_dir"])


def test_embed_matches_embed_cells_and_streams_to_disk(tmp_path):
    v, a = _tiny()
    a.var = v.to_dataframe()
    model = _train(a, tmp_path, "rtd", 2)
    tl.embed(a, model, remove_depth=False, l2_normalize=False, chunk_size=7)
    ref = embed_cells(model, a.X)
    np.testing.assert_allclose(a.obsm["X_atacformer"][1:], ref[1:], rtol=1e-4, atol=1e-5)
    assert np.isnan(a.obsm["X_atacformer"][0]).all()
    b = a.copy()
    tl.embed(b, model, out_path=tmp_path / "emb.npy", chunk_size=7)
    np.testing.assert_allclose(np.load(tmp_path / "emb.npy")[1:], ref[1:], rtol=1e-4, atol=1e-5)
    model = _train(a, tmp_path, "rtd-contrastive", 2)  # its folder asks for idf pooling, depth removal, unit length
    tl.embed(a, model, key_added="X_post")
    post = a.obsm["X_post"][1:]
    np.testing.assert_allclose(np.linalg.norm(post, axis=1), 1.0, rtol=1e-5)
    assert a.uns["X_post"]["pooling"] == "idf" and a.uns["X_post"]["remove_depth"]
    with pytest.raises(ValueError, match="tokenize"):
        tl.embed(ad.AnnData(sp.csr_matrix((3, 5))), model)


def test_remove_depth_directions_drops_the_depth_axis():
    from atacformer.tools._embed import remove_depth_directions

    rng = np.random.default_rng(0)
    depth = rng.integers(100, 10000, 300)
    signal = rng.normal(size=(300, 4))
    emb = np.c_[np.log(depth) * 10, signal]
    coords, dropped = remove_depth_directions(emb, depth)
    assert dropped == [0] and coords.shape == (300, 4)
    assert np.abs(np.corrcoef(coords.T, np.log(depth))[-1, :-1]).max() < 0.2


def test_region_embeddings_static_contextual_attention(tmp_path):
    v, a = _tiny()
    a.var = v.to_dataframe()
    model = _train(a, tmp_path, "rtd", 1)
    static = tl.region_embeddings(model, a)
    assert static.shape == (80, 16) and a.varm["atacformer_regions"].shape == (80, 16)
    out = tl.region_embeddings(model, cells=a.X[1:3], contextual=True, attention=True)
    n = len(out["tokens"][0])
    assert out["hidden"][0].shape == (n, 16)
    att = out["attention"][0]
    assert att.shape == (2, n, n)
    np.testing.assert_allclose(att.sum(-1), 1.0, rtol=1e-5)
    with torch.no_grad():  # contextual vectors are the model's own final states
        h = model.atacformer(torch.as_tensor(out["tokens"][0])[None])[0].numpy()
    np.testing.assert_allclose(out["hidden"][0], h, rtol=1e-5, atol=1e-6)

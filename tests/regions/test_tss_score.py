"""TSS distribution score and inferred cryptic TSSs: a brute-force Spearman, the
leave-one-out centroid, random vectors near zero, exact empirical p-values."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr

from atacformer import pl, tl
from atacformer.tools._regions import cryptic_tss, matched_null, tss_distribution_score


def _toy(n=3000, d=32, seed=0, structured=True):
    rng = np.random.default_rng(seed)
    tss = rng.integers(-200_000, 200_000, n).astype(float)
    promoter = np.abs(tss) < 1000
    promoter[:40] = True
    tss[:40] = 0
    direction = rng.normal(size=d)
    emb = rng.normal(size=(n, d))
    if structured:  # regions near a TSS point along one direction
        emb += np.outer(5 / (1 + np.log1p(np.abs(tss)) / 3), direction)
    return emb, tss, promoter


def test_score_equals_spearman_of_the_leave_one_out_distances():
    emb, tss, prom = _toy()
    r = tss_distribution_score(emb, tss, prom, n_shuffles=30)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dist = np.empty(len(emb))
    for i in range(len(emb)):  # brute force, one region at a time
        others = prom.copy()
        others[i] = False
        c = unit[others].mean(0)
        dist[i] = 1 - unit[i] @ c / np.linalg.norm(c)
    np.testing.assert_allclose(r["centroid_distance"], dist, atol=1e-12)
    assert r["score"] == pytest.approx(spearmanr(dist, np.abs(tss)).statistic, abs=1e-12)
    assert r["score"] > 0.2 and abs(r["shuffled_mean"]) < 3 * r["shuffled_sd"] + 0.01


def test_random_vectors_score_near_zero():
    scores = [tss_distribution_score(*_toy(seed=s, structured=False), n_shuffles=0)["score"] for s in range(5)]
    assert abs(np.mean(scores)) < 0.03 and max(map(abs, scores)) < 0.08


def test_matched_null_keeps_the_strata():
    rng = np.random.default_rng(3)
    strata = rng.integers(0, 5, 2000)
    chosen = rng.choice(2000, 60, replace=False)
    # each draw holds exactly as many regions of each stratum as the chosen set
    null = matched_null(strata.astype(float), chosen, strata, n_draws=50, seed=1)
    np.testing.assert_allclose(null, strata[chosen].mean())


def test_cryptic_tss_calls_and_exact_p_value():
    emb, tss, prom = _toy(seed=2)
    rng = np.random.default_rng(4)
    signal = rng.random(len(tss))
    far_close = np.flatnonzero(np.abs(tss) > 50_000)[:30]
    emb[far_close] = emb[prom].mean(0) * 3  # far from TSSs, embedded at the centroid
    signal[far_close] += 1.0
    acc = rng.random(len(tss))
    res = cryptic_tss(emb, tss, prom, signal=signal, accessibility=acc, n_draws=500, min_tss_distance=10_000)
    assert set(far_close) <= set(res["calls"].tolist())
    assert (np.abs(tss[res["calls"]]) >= 10_000).all()
    assert (res["centroid_distance"][res["calls"]] <= res["threshold"]).all()
    null = res["null"]
    assert len(null) == 500
    assert res["p"] == (1 + int((null >= res["observed"]).sum())) / 501
    assert res["observed"] == pytest.approx(signal[res["calls"]].mean())
    assert res["fold"] == pytest.approx(res["observed"] / null.mean())
    assert res["p"] < 0.01
    # no signal: the same calls, no test
    assert np.array_equal(cryptic_tss(emb, tss, prom)["calls"], res["calls"])


def test_anndata_wrappers_and_plots(tmp_path):
    emb, tss, prom = _toy(n=800)
    far = np.flatnonzero(np.abs(tss) > 50_000)[:10]
    emb[far] = emb[prom].mean(0) * 3
    var = pd.DataFrame({"tss_distance": tss, "region_class": np.where(prom, "promoter-TSS", "intron")},
                       index=[f"chr1:{i * 1000}-{i * 1000 + 500}" for i in range(len(tss))])
    a = ad.AnnData(sp.random(50, len(tss), density=0.1, format="csr", random_state=0), var=var)
    a.varm["atacformer_regions"] = emb
    res = tl.tss_score(a, n_shuffles=10)
    assert a.uns["tss_score"]["score"] == res["score"] and "centroid_distance" in a.var
    calls = tl.cryptic_tss(a, signal=np.ones(len(tss)), n_draws=20)
    assert len(calls["calls"]) >= 10 and calls["p"] == 1.0  # a flat signal: no enrichment
    assert a.var["cryptic_tss"].sum() == len(calls["calls"])
    pl.tss_score(a, save=tmp_path / "tss.png")
    pl.cryptic_tss(a, save=tmp_path / "ictss.png")
    assert (tmp_path / "tss.png").stat().st_size > 0 and (tmp_path / "ictss.png").stat().st_size > 0
    with pytest.raises(KeyError, match="annotate_regions"):
        tl.tss_score(ad.AnnData(np.zeros((2, 3))))


def test_contextual_vectors_are_means_over_cells(tmp_path):
    """Contextual region vectors: the mean of the model's hidden states of each region over
    the cells holding it, recomputed here one cell at a time; unseen regions are NaN and are
    left out of the score."""
    import torch

    from atacformer.models import load_model
    from atacformer.train import TrainConfig, pretrain

    rng = np.random.default_rng(0)
    dense = (rng.random((30, 60)) < 0.2).astype(np.float32)
    dense[:, 59] = 0  # a region no cell holds
    X = sp.csr_matrix(dense)
    var = pd.DataFrame({"chrom": "chr1", "start": np.arange(60) * 1000, "end": np.arange(60) * 1000 + 500})
    var.index = [f"chr1:{s}-{e}" for s, e in zip(var.start, var.end)]
    a = ad.AnnData(X, var=var)
    cfg = TrainConfig(out=str(tmp_path / "run"), max_steps=0, progress=False, tensorboard=False,
                      model_overrides={"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32})
    model = load_model(pretrain(cfg, data=a)["model_dir"])
    vec = tl.contextual_region_vectors(model, a, max_cells=None)
    assert np.isnan(vec[59]).all() and np.isfinite(vec[:59]).all()
    backbone = getattr(model, "atacformer", model)
    model.eval()
    want = np.zeros((60, vec.shape[1]))
    n = np.zeros(60)
    with torch.inference_mode():
        for i in range(a.n_obs):
            toks = a.X[i].indices
            h = backbone(torch.as_tensor(toks, dtype=torch.long)[None])[0].numpy()
            want[toks] += h
            n[toks] += 1
    np.testing.assert_allclose(vec[:59], want[:59] / n[:59, None], rtol=1e-5, atol=1e-6)
    tss = np.r_[np.zeros(5), rng.integers(2_000, 100_000, 55)].astype(float)
    r = tss_distribution_score(vec, tss, tss == 0, n_shuffles=5)
    assert r["n_regions"] == 59 and np.isnan(r["centroid_distance"][59])

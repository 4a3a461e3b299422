"""The benchmark harness at CI scale (a marked slow test runs the full one)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from atacformer.benchmark import RECIPES, BenchmarkConfig, pretrain_cells, run_benchmark, score_embedding
from atacformer.benchmark import harness
from atacformer.cli import main

torch.set_num_threads(1)


def test_score_embedding_matches_sklearn():
    import anndata as ad

    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 20)
    emb = rng.normal(size=(60, 5)).astype(np.float32) + np.repeat(np.eye(3, 5) * 6, 20, axis=0)
    a = ad.AnnData(obs=pd.DataFrame({"cell_type": labels}, index=[f"c{i}" for i in range(60)]))
    a.obsm["X_e"] = emb
    row = score_embedding(a, "X_e")
    assert row["leiden_ari"] == pytest.approx(adjusted_rand_score(labels, a.obs["leiden_X_e"]))
    assert row["kmeans_ari"] == pytest.approx(adjusted_rand_score(labels, a.obs["kmeans_X_e"]))
    assert row["kmeans_ari"] > 0.95 and row["transfer_acc"] > 0.95 and row["leiden_k"] == 3


def test_benchmark_small(data_dir, tmp_path, monkeypatch):
    seen = []

    def spy(recipe, X, vocab, **kw):  # pretraining gets a matrix only, never labels
        seen.append(type(X).__name__)
        return pretrain_cells(recipe, X, vocab, **kw)

    monkeypatch.setattr(harness, "pretrain_cells", spy)
    cfg = BenchmarkConfig(datasets=("Schep600", "chromVAR50"), methods=("lsi", "snapatac2", "atacformer"),
                          recipes=["lsi-init-untrained", "rtd-frequency"], steps=3, max_cells=72)
    table = run_benchmark(data_dir, tmp_path, cfg, say=lambda m: None)
    assert set(table["dataset"]) == {"Schep600", "chromVAR50"}
    assert {"LSI", "SnapATAC2", "atacformer rtd-frequency", "atacformer lsi-init-untrained"} <= set(table["method"])
    assert table[["leiden_ari", "kmeans_ari", "transfer_acc"]].notna().all().all()
    assert seen and all(s == "csr_matrix" for s in seen)
    lsi = table[(table.dataset == "Schep600") & (table.method == "LSI")].iloc[0]
    assert lsi.transfer_acc > 0.3  # a sane baseline on real labels (chance: 1/12; 6 cells per type here)
    for f in ("benchmark.csv", "benchmark.md", "umap_Schep600.png", "umap_chromVAR50.png"):
        assert (tmp_path / f).stat().st_size > 0


def test_benchmark_cli(data_dir, tmp_path, capsys):
    rc = main(["benchmark", "--data-dir", str(data_dir), "--out", str(tmp_path), "--datasets", "chromVAR50",
               "--methods", "lsi,atacformer", "--recipes", "rtd-uniform", "--steps", "2", "--no-umap"])
    assert rc == 0
    assert "atacformer rtd-uniform" in capsys.readouterr().out
    assert (tmp_path / "benchmark.csv").exists()
    with pytest.raises(SystemExit):
        main(["benchmark", "--data-dir", str(data_dir), "--recipes", "nope"])


def test_recipes_are_well_formed():
    for r in RECIPES.values():
        assert r.objective in ("rtd", "masked-bin", "none")
        assert r.pooling in ("mean", "idf", "cls")
        assert r.pooling != "cls" or r.objective == "masked-bin"


@pytest.mark.slow
def test_benchmark_full(data_dir, tmp_path):
    table = run_benchmark(data_dir, tmp_path, BenchmarkConfig(recipes=list(RECIPES)), say=print)
    assert len(set(table["dataset"])) == 3

"""The benchmark harness at CI scale (a marked slow test runs the full one)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from atacformer.evaluation import BenchmarkConfig, run_benchmark, score_embedding
from atacformer.evaluation import harness
from atacformer.cli import main
from atacformer.train import RECIPES



def test_score_embedding_matches_sklearn():
    import anndata as ad
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 20)
    emb = rng.normal(size=(60, 5)).astype(np.float32) + np.repeat(np.eye(3, 5) * 6, 20, axis=0)
    a = ad.AnnData(obs=pd.DataFrame({"cell_type": labels}, index=[f"c{i}" for i in range(60)]))
    a.obsm["X_e"] = emb
    row = score_embedding(a, "X_e")
    km = KMeans(3, n_init=10, random_state=0).fit_predict(emb)
    assert row["kmeans_ari"] == pytest.approx(adjusted_rand_score(labels, km))
    assert row["leiden_ari"] > 0.95 and row["transfer_acc"] > 0.95 and row["leiden_k"] == 3
    assert row["transfer_f1"] > 0.95


def test_benchmark_small(data_dir, tmp_path, monkeypatch):
    seen = []
    real = harness.train_recipe

    def spy(recipe, cells, out, cfg, max_steps=None):  # pretraining gets cells without labels' use
        seen.append((recipe, max_steps))
        return real(recipe, cells, out, cfg, max_steps)

    monkeypatch.setattr(harness, "train_recipe", spy)
    cfg = BenchmarkConfig(datasets=("Schep600", "chromVAR50"), methods=("lsi", "snapatac2", "atacformer"),
                          recipes=["profile"], steps=3, max_cells=72, dropout=(0.5,))
    table = run_benchmark(data_dir, tmp_path, cfg, say=lambda m: None)
    assert set(table["dataset"]) == {"Schep600", "chromVAR50"}
    methods = {"LSI", "SnapATAC2", "atacformer profile", "atacformer profile untrained"}
    assert methods <= set(table["method"])
    assert set(table["dropout"]) == {0.0, 0.5}
    assert table[["leiden_ari", "kmeans_ari", "transfer_acc"]].notna().all().all()
    trained = table[(table.method == "atacformer profile") & (table.dropout == 0)]
    assert trained["leiden_ari_gain"].notna().all()
    assert sorted(seen) == sorted([("profile", 0), ("profile", 3)] * 2)
    lsi = table[(table.dataset == "Schep600") & (table.method == "LSI") & (table.dropout == 0)].iloc[0]
    assert lsi.transfer_acc > 0.3  # a sane baseline on real labels (chance: 1/12; 6 cells per type here)
    for f in ("benchmark.csv", "benchmark.md", "umap_Schep600.png", "umap_chromVAR50.png"):
        assert (tmp_path / f).stat().st_size > 0
    assert "leiden_ari_gain" in (tmp_path / "benchmark.md").read_text()
    # one clustering report per method, set and dropout, with the table's numbers
    from atacformer.evaluation.suites import collect_reports

    reports = collect_reports(tmp_path / "reports", "clustering")
    assert len(reports) == len(table)
    lsi_report = reports[(reports.dataset == "Schep600") & (reports.model == "LSI")].iloc[0]
    assert lsi_report.leiden_ari == lsi.leiden_ari and lsi_report.transfer_acc == lsi.transfer_acc


def test_benchmark_cli(data_dir, tmp_path, capsys):
    rc = main(["benchmark", "--data-dir", str(data_dir), "--out", str(tmp_path), "--datasets", "chromVAR50",
               "--methods", "lsi,atacformer", "--recipes", "rtd", "--steps", "2", "--no-umap"])
    assert rc == 0
    assert "atacformer rtd untrained" in capsys.readouterr().out
    assert (tmp_path / "benchmark.csv").exists()
    assert main(["benchmark", "--data-dir", str(data_dir), "--recipes", "nope"]) == 2
    assert "unknown recipe" in capsys.readouterr().err


def test_recipes_resolve_to_valid_configs():
    from atacformer.train import TrainConfig

    for name in RECIPES:
        cfg = TrainConfig(data=["x.h5ad"], recipe=name).resolved()
        assert cfg.recipe == name and cfg.objective in ("rtd", "profile")
        kw = cfg.model_kwargs()
        assert kw["max_length"] == cfg.max_length
        # on the cpu preset a token-level objective keeps attention layers and a short context
        assert (kw["num_layers"], kw["max_length"]) == ((2, 512) if cfg.objective == "rtd" else (0, 4096))


@pytest.mark.slow
def test_benchmark_full(data_dir, tmp_path):
    table = run_benchmark(data_dir, tmp_path, BenchmarkConfig(recipes=list(RECIPES), time_budget=2.0), say=print)
    assert len(set(table["dataset"])) == 3


def test_benchmark_zero_shot_on_shared_bins(data_dir, tmp_path):
    """With shared bins and holdout, each set is embedded by a model that never saw its cells."""
    seen = []
    real = harness.train_recipe

    def spy(recipe, cells, out, cfg, max_steps=None):
        cs = cells if isinstance(cells, list) else [cells]
        seen.append((out.name, set().union(*(set(c.obs_names) for c in cs))))
        return real(recipe, cells, out, cfg, max_steps)

    import pytest as _pytest

    mp = _pytest.MonkeyPatch()
    mp.setattr(harness, "train_recipe", spy)
    try:
        cfg = BenchmarkConfig(datasets=("Schep600", "chromVAR50"), methods=("lsi", "atacformer"), recipes=["profile"],
                              steps=2, vocab="bins", holdout=True, continue_minutes=0.05, max_cells=48, umap=False)
        table = run_benchmark(data_dir, tmp_path, cfg, say=lambda m: None)
    finally:
        mp.undo()
    assert {"atacformer profile zero-shot", "atacformer profile zero-shot untrained",
            "atacformer profile zero-shot+continued"} <= set(table["method"])
    # continued pretraining started from the zero-shot model and trained on the held-out set's cells
    import json

    run = tmp_path / "runs" / "without-Schep600-profile-continued"
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["init_from"] == str(tmp_path / "runs" / "without-Schep600-profile" / "model")
    assert json.loads((run / "summary.json").read_text())["cells"] == 48
    # the model embedding Schep600 was trained on chromVAR50's cells only, and the reverse
    sets = harness.load_labelled_sets(data_dir, ["Schep600", "chromVAR50"], max_cells=48)
    trained = dict(seen)
    assert trained["without-Schep600-profile"] == set(sets["chromVAR50"].obs_names)
    assert trained["without-chromVAR50-profile"] == set(sets["Schep600"].obs_names)


def test_peakvi_peer_runs_when_installed(data_dir):
    pytest.importorskip("scvi", reason="scvi-tools is an optional extra (pip install 'atacformer[peakvi]')")
    sets = harness.load_labelled_sets(data_dir, ["chromVAR50"])
    tok, _ = harness.tokenize_sets(sets)["chromVAR50"]
    harness.peakvi_latent(tok, max_epochs=3)
    z = tok.obsm["X_peakvi"]
    assert z.shape[0] == 50 and np.isfinite(z).all() and z.std(0).max() > 0

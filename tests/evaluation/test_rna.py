"""The RNA benchmark harness: its baselines against independent computations, and a CI-scale run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from atacformer import preprocessing as pp
from atacformer.evaluation import rna as rna_mod
from atacformer.evaluation.rna import RnaPair, knn_imputation, load_rna_pairs, lsi_project, run_rna_benchmark
from atacformer.metrics import stratified_split


@pytest.fixture(scope="module")
def neurips(data_dir) -> RnaPair:
    return load_rna_pairs(data_dir, ["neurips"])["neurips"]


def _lognorm(x) -> np.ndarray:
    """Counts to 1e4 per cell, log1p: written out (not through scanpy)."""
    x = np.asarray(sp.csr_matrix(x).todense(), dtype=np.float64)
    depth = x.sum(1, keepdims=True)
    return np.log1p(np.divide(x * 1e4, depth, out=np.zeros_like(x), where=depth > 0))


def _toy_pair(n=80, n_genes=30, n_peaks=120, seed=0) -> RnaPair:
    """Two cell types whose RNA and ATAC both follow the type."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(["a", "b"], n // 2)
    kind = (labels == "b").astype(int)
    gene_rate = np.where(np.arange(n_genes)[None, :] % 2 == kind[:, None], 3.0, 0.3)
    peak_rate = np.where(np.arange(n_peaks)[None, :] % 2 == kind[:, None], 0.6, 0.05)
    obs = pd.DataFrame({"cell_type": labels}, index=[f"c{i}" for i in range(n)])
    rna = AnnData(sp.csr_matrix(rng.poisson(gene_rate).astype(np.float32)), obs=obs,
                  var=pd.DataFrame(index=[f"G{j}" for j in range(n_genes)]))
    atac = AnnData(sp.csr_matrix(rng.poisson(peak_rate).astype(np.float32)), obs=obs.copy(),
                   var=pd.DataFrame({"chrom": "chr1", "start": np.arange(n_peaks) * 1000,
                                     "end": np.arange(n_peaks) * 1000 + 500},
                                    index=[f"p{j}" for j in range(n_peaks)]))
    return RnaPair("toy", rna, atac, genes=None, genome="hg38")


def test_log_normalize_matches_the_formula():
    x = sp.random(20, 12, density=0.4, random_state=0, format="csr") * 10
    x = x.ceil()
    np.testing.assert_allclose(rna_mod.log_normalize(x).toarray(), _lognorm(x), rtol=1e-5, atol=1e-6)


def test_lsi_project_gives_the_reference_its_own_coordinates():
    from atacformer import tools as tl

    pair = _toy_pair()
    ref = AnnData(pair.atac.X.copy())
    tl.lsi(ref, n_components=10)
    np.testing.assert_allclose(lsi_project(ref, ref.X), ref.obsm["X_lsi"], atol=1e-5)


def test_knn_imputation_matches_brute_force():
    pair = _toy_pair()
    train = stratified_split(pair.rna.obs["cell_type"], seed=0)
    genes = list(pair.rna.var_names[::3])
    pred = knn_imputation(pair, train, ~train, genes, k=5, n_components=10)
    # brute force: cosine distances on the same projection, 5 smallest, mean of their RNA
    from atacformer import tools as tl

    ref = AnnData(sp.csr_matrix(pair.atac[train].X, dtype=np.float32))
    tl.lsi(ref, n_components=10)
    zq, zr = lsi_project(ref, pair.atac[~train].X), ref.obsm["X_lsi"].astype(np.float64)
    rna = _lognorm(pair.rna[train].X)[:, ::3]
    for i in range(zq.shape[0]):
        d = [1 - zq[i] @ zr[j] / np.linalg.norm(zq[i]) / np.linalg.norm(zr[j]) for j in range(len(zr))]
        nearest = np.argsort(d, kind="stable")[:5]
        np.testing.assert_allclose(pred[i], rna[nearest].mean(0), rtol=1e-4, atol=1e-5)
    assert pred.shape == ((~train).sum(), len(genes))


def test_pair_checks_its_cells():
    pair = _toy_pair()
    with pytest.raises(ValueError, match="same cells"):
        RnaPair("bad", pair.rna, pair.atac[::-1].copy(), None, "hg38")
    with pytest.raises(KeyError, match="cell_type"):
        RnaPair("bad", AnnData(pair.rna.X), AnnData(pair.atac.X), None, "hg38")


def test_rna_benchmark_ci_scale(neurips, tmp_path, monkeypatch):
    """NeurIPS 500 cells: gene scores, kNN on LSI, the random floor, and CRAFT reported as
    unavailable when ``atacformer.tl`` lacks it (it is never trained here)."""
    from atacformer import tools as tl

    for name in ("train_craft", "impute"):  # CRAFT is not trained in a CI-scale test
        monkeypatch.delattr(tl, name, raising=False)
    table = run_rna_benchmark({"neurips": neurips}, ("genescore", "knn", "random", "craft"), tmp_path, seed=0,
                              say=lambda m: None)
    got = {(r.task, r.method): r for _, r in table.iterrows()}
    assert set(got) == {("retrieval", "genescore"), ("retrieval", "random"), ("retrieval", "craft"),
                        ("imputation", "genescore"), ("imputation", "knn"), ("imputation", "random"),
                        ("imputation", "craft")}
    assert got["retrieval", "craft"].status.startswith("unavailable: atacformer.tl has no train_craft")
    assert got["imputation", "craft"].status == got["retrieval", "craft"].status
    ok = table[table.status == "ok"]
    assert (ok[ok.task == "retrieval"][["foscttm", "recall@1", "recall@5", "recall@10"]].notna().all().all())
    assert ok[ok.task == "imputation"][["pearson_gene", "pearson_cell"]].notna().all().all()
    n_held = int((~stratified_split(neurips.rna.obs["cell_type"], 0)).sum())
    assert (ok["n_cells"] == n_held).all()
    # the floor: a shuffled pairing is at chance
    assert got["retrieval", "random"].foscttm == pytest.approx(0.5, abs=0.05)
    assert got["retrieval", "random"]["recall@1"] < 0.05  # chance is 1 / n_held
    # kNN on LSI predicts each cell's profile better than another cell's measured profile does
    assert got["imputation", "knn"].pearson_cell > got["imputation", "random"].pearson_cell
    back = pd.read_csv(tmp_path / "rna_benchmark.tsv", sep="\t")
    assert len(back) == len(table) and list(back.columns) == rna_mod.COLUMNS
    np.testing.assert_allclose(back["foscttm"].to_numpy(float), table["foscttm"].to_numpy(float), rtol=1e-12)
    md = (tmp_path / "rna_benchmark.md").read_text()
    assert "| neurips" in md and "unavailable" in md and " nan " not in md
    assert not list(tmp_path.glob(".*.tmp"))


def test_genescore_rows_against_an_independent_computation(neurips, tmp_path):
    """The table's gene-score imputation and retrieval rows recomputed outside the harness:
    the split, the gene matching and the normalisation written out, pandas / numpy for the
    correlations."""
    from scipy.spatial.distance import cdist

    table = run_rna_benchmark({"neurips": neurips}, ("genescore",), tmp_path, seed=3, say=lambda m: None)
    held = ~stratified_split(neurips.rna.obs["cell_type"].astype(str).to_numpy(), 3)
    ga = pp.gene_activity(neurips.atac[held].copy(), neurips.genes, genome="hg38")
    ga = ga[:, ~ga.var_names.duplicated()]
    genes = [g for g in neurips.rna.var_names if g in set(ga.var_names)]
    pred = pd.DataFrame(_lognorm(ga.X), columns=ga.var_names)[genes]
    truth = pd.DataFrame(_lognorm(neurips.rna[held].X), columns=neurips.rna.var_names)[genes]
    per_gene = truth.corrwith(pred)  # NaN for constant genes
    row = table[(table.task == "imputation")].iloc[0]
    assert row.n_genes == len(genes) and row.n_nan_genes == per_gene.isna().sum()
    assert row.pearson_gene == pytest.approx(per_gene.mean(), abs=1e-6)  # pandas' mean skips NaN
    per_cell = truth.T.corrwith(pred.T.set_axis(truth.T.columns, axis=1))
    assert row.pearson_cell == pytest.approx(per_cell.mean(), abs=1e-6)
    # retrieval: correlation distances, partner strictly closer counted, ties (constant
    # activity rows: every distance undefined) counting half
    d = cdist(pred.to_numpy(), truth.to_numpy(), "correlation")
    d = np.where(np.isfinite(d), d, np.inf)
    n = len(d)
    own = np.diag(d)
    fx = ((d < own[:, None]).sum(1) + 0.5 * ((d == own[:, None]).sum(1) - 1)) / (n - 1)
    fy = ((d < own[None, :]).sum(0) + 0.5 * ((d == own[None, :]).sum(0) - 1)) / (n - 1)
    ret = table[table.task == "retrieval"].iloc[0]
    assert ret.foscttm == pytest.approx((fx.mean() + fy.mean()) / 2, abs=1e-3)


def test_missing_gene_activity_is_reported_not_dropped(monkeypatch, tmp_path):
    monkeypatch.delattr(pp, "gene_activity", raising=False)
    pair = _toy_pair()
    table = run_rna_benchmark([pair], ("genescore", "knn"), tmp_path, say=lambda m: None)
    gs = table[table.method == "genescore"]
    assert set(gs.task) == {"retrieval", "imputation"}
    assert (gs.status == "unavailable: atacformer.preprocessing has no gene_activity").all()
    knn = table[table.method == "knn"].iloc[0]
    assert knn.status == "ok" and knn.n_genes == pair.rna.n_vars  # all RNA genes without an annotation
    assert knn.pearson_cell > 0.5


def test_a_set_without_gene_annotation_reports_gene_scores_unavailable(tmp_path):
    table = run_rna_benchmark([_toy_pair()], ("genescore",), tmp_path, say=lambda m: None)
    assert (table.status == "unavailable: toy has no gene annotation").all() and len(table) == 2


def test_craft_contract_through_stand_ins(monkeypatch, tmp_path):
    """The calls CRAFT gets: train_craft(atac_train, rna_train, out_dir, base=, time_budget=,
    seed=, overwrite=True) -> model path; embed(adata, model, modality=) writing
    obsm["X_atacformer"]; impute(adata, model) -> cells x genes."""
    from atacformer import tools as tl

    pair = _toy_pair()
    calls = {}

    def train_craft(atac_train, rna_train, out_dir, base=None, time_budget=None, seed=0, overwrite=False):
        calls["train"] = (atac_train.n_obs, rna_train.n_obs, base, time_budget, seed, overwrite)
        return out_dir

    def embed(adata, model, modality="atac", copy=False):  # a perfect encoder: the cell's type
        calls.setdefault("embed", []).append((modality, copy))
        kind = (adata.obs["cell_type"].to_numpy() == "b").astype(float)
        adata.obsm["X_atacformer"] = np.c_[kind, 1 - kind, np.arange(adata.n_obs) * 1e-3]

    def impute(atac, model_path):
        return AnnData(np.asarray(_lognorm(pair.rna[atac.obs_names].X))[:, 1:], obs=atac.obs.copy(),
                       var=pd.DataFrame(index=pair.rna.var_names[1:]))

    for name, fn in (("train_craft", train_craft), ("embed", embed), ("impute", impute)):
        monkeypatch.setattr(tl, name, fn, raising=False)
    table = run_rna_benchmark([pair], ("craft",), tmp_path, craft_minutes=0.5, seed=4, say=lambda m: None)
    n_train = int(stratified_split(pair.rna.obs["cell_type"], 4).sum())
    assert calls["train"] == (n_train, n_train, None, 0.5, 4, True)
    assert calls["embed"] == [("atac", False), ("rna", False)]  # in place (copy left at its default)
    ret = table[table.task == "retrieval"].iloc[0]
    assert ret.status == "ok" and ret.metric == "cosine" and ret.foscttm == 0.0 and ret["recall@1"] == 1.0
    imp = table[table.task == "imputation"].iloc[0]
    assert imp.pearson_gene == pytest.approx(1.0) and imp.pearson_cell == pytest.approx(1.0)
    assert imp.n_genes == pair.rna.n_vars - 1  # scored on the genes the model predicts


@pytest.mark.slow
def test_multivi_rows_with_tiny_training(neurips, tmp_path):
    pytest.importorskip("scvi", reason="scvi-tools is not installed (pip install 'atacformer[peakvi]')")
    train = stratified_split(neurips.rna.obs["cell_type"].astype(str).to_numpy(), 0)
    model = rna_mod.multivi_fit(neurips, train, max_epochs=2)
    assert model.adata.n_obs == train.sum()  # the held-out cells are never trained on
    z_atac, z_rna = rna_mod.multivi_retrieval(neurips, train, ~train, model=model)
    assert z_atac.shape == z_rna.shape == ((~train).sum(), model.module.n_latent)
    assert not np.allclose(z_atac, z_rna)
    table = run_rna_benchmark({"neurips": neurips}, ("multivi",), tmp_path, multivi_epochs=2,
                              say=lambda m: None)
    assert set(table.task) == {"retrieval", "imputation"} and (table.status == "ok").all()
    assert table.note.str.startswith("2 epochs in").all()
    assert table[["foscttm", "recall@1"]].iloc[0].notna().all()
    assert np.isfinite(table[table.task == "imputation"].pearson_gene).all()


def test_peaks_past_a_chromosome_end_are_clipped():
    var = pd.DataFrame({"chrom": ["chr17", "chr17", "GL000205.1"], "start": [100, 81194897, 5],
                        "end": [600, 81195261, 50]}, index=["a", "b", "c"])
    a = rna_mod._clip_to_genome(AnnData(sp.csr_matrix((1, 3)), var=var), "hg19")
    assert a.var["end"].tolist() == [600, 81195210, 50]  # hg19 chr17 is 81,195,210 bp; contigs left alone

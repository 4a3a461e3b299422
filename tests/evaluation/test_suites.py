"""The fixed metric suites (atacformer.evaluation.suites): each metric against an independent
computation (scikit-learn, scipy, numpy brute force), fixed names, report round trips, refused
inputs that leave nothing written, the CLI, and real-data runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from scipy import stats
from scipy.spatial.distance import cdist
from sklearn import metrics as skm

from atacformer.evaluation import suites
from atacformer.evaluation.suites import SUITE_METRICS, collect_reports, evaluate, read_report

NEURIPS = "neurips2021_bmmc_multiome_500"
BM0828 = ("buenrostro2018_BM0828_ra3", "buenrostro2018_BM0828_533cells.h5ad")


def _blobs(n=80, d=6, n_types=2, spread=1.5, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat([f"t{i}" for i in range(n_types)], n // n_types)
    centres = rng.normal(scale=3.0, size=(n_types, d))
    x = centres[pd.factorize(labels)[0]] + rng.normal(scale=spread, size=(labels.size, d))
    return x, labels


def _expression_pair(seed=0, n=60, g=25):
    rng = np.random.default_rng(seed)
    real = rng.poisson(2.0, size=(n, g)).astype(float)
    pred = real + rng.normal(scale=1.5, size=(n, g))
    real[:, 3] = 1.0  # a constant gene: no correlation
    groups = np.repeat(["ctrl", "a", "b", "c"], n // 4)
    obs = pd.DataFrame({"group": groups}, index=[f"c{i}" for i in range(n)])
    var = pd.DataFrame(index=[f"g{j}" for j in range(g)])
    return AnnData(real, obs=obs, var=var), AnnData(pred, obs=obs.copy(), var=var.copy())


# ----------------------------------------------------------------------------- metrics


def test_annotation_matches_sklearn():
    rng = np.random.default_rng(1)
    truth = rng.choice(["B", "T", "NK", "Mono"], size=300)
    pred = np.where(rng.random(300) < 0.7, truth, rng.choice(["B", "T", "NK", "Mono", "DC", "Unknown"], size=300))
    s = suites.annotation(truth, pred)
    types = sorted(set(truth))
    assert s["accuracy"] == pytest.approx(skm.accuracy_score(truth, pred))
    assert s["macro_f1"] == pytest.approx(skm.f1_score(truth, pred, labels=types, average="macro"))
    per = skm.f1_score(truth, pred, labels=types, average=None)
    for t, f in zip(types, per):
        assert s[f"f1[{t}]"] == pytest.approx(f)
    rejected = pred == "Unknown"
    assert s["fraction_rejected"] == pytest.approx(rejected.mean())
    assert s["accuracy_accepted"] == pytest.approx((truth[~rejected] == pred[~rejected]).mean())
    assert s["n_cells"] == 300 and s["n_types"] == 4
    # a missing truth is not scored
    truth2 = truth.astype(object)
    truth2[:10] = None
    assert suites.annotation(truth2, pred)["n_cells"] == 290


def test_retrieval_matches_brute_force():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(70, 5))
    y = x + rng.normal(scale=0.8, size=x.shape)
    s = suites.retrieval(x, y, metric="euclidean")
    d = cdist(x, y)  # d[i, j]: query x_i, target y_j
    own = np.diag(d)
    n = len(x)
    fx = ((d < own[:, None]).sum(1)) / (n - 1)
    fy = ((d.T < own[:, None]).sum(1)) / (n - 1)
    assert s["foscttm"] == pytest.approx((fx.mean() + fy.mean()) / 2)
    rank = (d < own[:, None]).sum(1)  # targets nearer than the partner
    for k in (1, 5, 10):
        assert s[f"recall@{k}"] == pytest.approx((rank < k).mean())
    assert s["n_cells"] == n
    c = suites.retrieval(x, y)  # cosine by default
    dc = cdist(x, y, "cosine")
    assert c["recall@1"] == pytest.approx((dc.argmin(1) == np.arange(n)).mean())


def test_expression_matches_scipy():
    real, pred = _expression_pair()
    s = suites.expression(real, pred)
    t, p = real.X, pred.X
    pg = [stats.pearsonr(t[:, j], p[:, j])[0] for j in range(t.shape[1]) if j != 3]
    sg = [stats.spearmanr(t[:, j], p[:, j])[0] for j in range(t.shape[1]) if j != 3]
    pc = [stats.pearsonr(t[i], p[i])[0] for i in range(t.shape[0])]
    sc = [stats.spearmanr(t[i], p[i])[0] for i in range(t.shape[0])]
    assert s["pearson_gene"] == pytest.approx(np.mean(pg))
    assert s["spearman_gene"] == pytest.approx(np.mean(sg))
    assert s["pearson_cell"] == pytest.approx(np.mean(pc))
    assert s["spearman_cell"] == pytest.approx(np.mean(sc))
    assert s["mse"] == pytest.approx(skm.mean_squared_error(t, p))
    assert s["mae"] == pytest.approx(skm.mean_absolute_error(t, p))
    assert (s["n_nan_genes"], s["n_nan_cells"], s["n_cells"], s["n_genes"]) == (1, 0, 60, 25)
    assert all(np.isnan(s[m]) for m in suites.GROUP_METRICS) and s["n_groups"] == 0
    # sparse inputs and a layer give the same numbers
    real.layers["v"], pred.layers["v"] = sp.csr_matrix(t), sp.csr_matrix(p)
    s2 = suites.expression(real, pred, layer="v")
    assert all(s2[k] == pytest.approx(s[k]) for k in ("pearson_gene", "spearman_cell", "mse"))


def test_expression_group_metrics_match_numpy():
    """cell-eval's group metrics on cell groups, against group means and deltas in numpy."""
    pytest.importorskip("cell_eval")
    real, pred = _expression_pair(seed=3)
    s = suites.expression(real, pred, group_key="group", control="ctrl")
    groups = real.obs["group"].to_numpy()
    mean = {w: {g: a.X[groups == g].mean(0) for g in np.unique(groups)} for w, a in (("real", real), ("pred", pred))}
    others = [g for g in np.unique(groups) if g != "ctrl"]
    delta = {w: {g: mean[w][g] - mean[w]["ctrl"] for g in others} for w in mean}
    assert s["group_pearson_delta"] == pytest.approx(np.mean([np.corrcoef(delta["real"][g], delta["pred"][g])[0, 1]
                                                              for g in others]))
    assert s["group_mse"] == pytest.approx(np.mean([((mean["real"][g] - mean["pred"][g]) ** 2).mean() for g in others]))
    assert s["group_mae"] == pytest.approx(np.mean([np.abs(mean["real"][g] - mean["pred"][g]).mean() for g in others]))
    assert s["group_mse_delta"] == pytest.approx(np.mean([((delta["real"][g] - delta["pred"][g]) ** 2).mean()
                                                          for g in others]))
    # discrimination (L1): 1 - (rank of the true group's real delta among all real deltas) / n_groups
    ranks = []
    for g in others:
        d = [np.abs(delta["real"][h] - delta["pred"][g]).sum() for h in others]
        ranks.append(1 - int(np.argsort(d, kind="stable").tolist().index(others.index(g))) / len(others))
    assert s["group_discrimination_l1"] == pytest.approx(np.mean(ranks))
    assert s["n_groups"] == 4


@pytest.mark.slow  # Leiden's kNN graph compiles umap-learn's numba kernels: minutes on a busy CPU
def test_clustering_matches_sklearn_kmeans_and_knn():
    from sklearn.cluster import KMeans
    from sklearn.neighbors import KNeighborsClassifier

    from atacformer.metrics import stratified_split

    x, labels = _blobs()
    a = AnnData(obs=pd.DataFrame({"cell_type": labels}, index=[f"c{i}" for i in range(len(labels))]))
    a.obsm["X_e"] = x
    a.obs.loc["c0", "cell_type"] = np.nan  # not scored
    s = suites.clustering(a, "X_e", "cell_type")
    assert list(s) == list(SUITE_METRICS["clustering"])
    keep = np.arange(len(labels)) != 0
    y, xs = labels[keep], x[keep]
    km = KMeans(n_clusters=2, n_init=10, random_state=0).fit_predict(xs)
    assert s["kmeans_ari"] == pytest.approx(skm.adjusted_rand_score(y, km))
    assert s["kmeans_nmi"] == pytest.approx(skm.normalized_mutual_info_score(y, km))
    ref = stratified_split(y, 0)
    knn = KNeighborsClassifier(15).fit(xs[ref], y[ref]).predict(xs[~ref])  # 2 types, k odd: no ties
    assert s["transfer_acc"] == pytest.approx((knn == y[~ref]).mean())
    assert s["transfer_f1"] == pytest.approx(skm.f1_score(y[~ref], knn, average="macro"))
    assert s["n_cells"] == 79 and s["leiden_k"] == 2


@pytest.mark.slow  # Leiden (ari / nmi): the numba compile of the kNN graph, as above
def test_integration_names_and_silhouette():
    x, labels = _blobs(n=60, n_types=3, spread=1.0, seed=4)
    batch = np.tile(["b1", "b2"], 30)
    a = AnnData(obs=pd.DataFrame({"cell_type": labels, "batch": batch}, index=[f"c{i}" for i in range(60)]))
    a.obsm["X_e"] = x
    s = suites.integration(a, "X_e", "batch", "cell_type", backend="atacformer")
    assert list(s) == list(SUITE_METRICS["integration"])
    assert s["label_asw"] == pytest.approx((skm.silhouette_score(x, labels) + 1) / 2, abs=1e-6)
    assert s["n_cells"] == 60
    assert s["total"] == pytest.approx(0.4 * s["batch_correction"] + 0.6 * s["bio_conservation"])


def test_every_suite_returns_its_fixed_names():
    real, pred = _expression_pair()
    x, _ = _blobs()
    assert list(suites.expression(real, pred)) == list(SUITE_METRICS["expression"])
    assert list(suites.retrieval(x, x + 1)) == list(SUITE_METRICS["retrieval"])
    ann = suites.annotation(["a", "b"], ["a", "a"])
    assert list(ann)[:len(SUITE_METRICS["annotation"])] == list(SUITE_METRICS["annotation"])
    assert sorted(k for k in ann if k.startswith("f1[")) == ["f1[a]", "f1[b]"]
    assert set(suites.SUITES) == set(SUITE_METRICS)


# ----------------------------------------------------------------------------- reports


def test_report_round_trip_and_table(tmp_path):
    real, pred = _expression_pair()
    r1 = evaluate("mean model", "imputation", dataset="toy set", out_dir=tmp_path, real=real, pred=pred)
    r2 = evaluate("copy", "expression", dataset="toy set", out_dir=tmp_path, real=real, pred=real)
    path = tmp_path / "expression" / "toy_set" / "mean_model.json"
    assert path.is_file() and path.with_suffix(".tsv").is_file()
    back = read_report(path)
    assert back.model == "mean model" and back.suite == "expression" and back.dataset == "toy set"
    assert back.metrics.keys() == r1.metrics.keys()
    for k, v in r1.metrics.items():
        assert (np.isnan(v) and np.isnan(back.metrics[k])) or back.metrics[k] == v
    json.loads(path.read_text())  # NaN written as null: standard JSON
    tsv = pd.read_csv(path.with_suffix(".tsv"), sep="\t")
    assert tsv.loc[0, "model"] == "mean model" and tsv.loc[0, "mse"] == pytest.approx(r1.metrics["mse"])
    table = collect_reports(tmp_path, "expression")
    assert list(table["model"]) == ["copy", "mean model"]
    assert list(table.columns[:3 + len(SUITE_METRICS["expression"])]) == ["suite", "dataset", "model",
                                                                          *SUITE_METRICS["expression"]]
    assert table.set_index("model").loc["copy", "mse"] == 0.0 == r2.metrics["mse"]
    assert "mean model" in suites.format_reports(table, ["pearson_gene"])
    assert not list(tmp_path.rglob(".*.tmp"))


def test_bad_inputs_are_refused_and_nothing_written(tmp_path):
    real, pred = _expression_pair()
    shuffled = pred[::-1].copy()
    with pytest.raises(ValueError, match="obs_names"):
        evaluate("m", "expression", out_dir=tmp_path, real=real, pred=shuffled)
    with pytest.raises(ValueError, match="var_names"):
        evaluate("m", "expression", out_dir=tmp_path, real=real, pred=pred[:, :10].copy())
    with pytest.raises(ValueError, match="same shape|same cells"):
        evaluate("m", "expression", out_dir=tmp_path, real=real.X, pred=real.X[:5])
    with pytest.raises(KeyError, match="no column 'nope'"):
        evaluate("m", "expression", out_dir=tmp_path, real=real, pred=pred, group_key="nope", control="ctrl")
    with pytest.raises(ValueError, match="control 'x'"):
        evaluate("m", "expression", out_dir=tmp_path, real=real, pred=pred, group_key="group", control="x")
    a = AnnData(obs=pd.DataFrame({"cell_type": ["a", "b"] * 10}, index=[f"c{i}" for i in range(20)]))
    a.obsm["X_e"] = np.zeros((20, 2))
    with pytest.raises(KeyError, match="obsm has no 'X_missing'"):
        evaluate("m", "clustering", out_dir=tmp_path, adata=a, rep="X_missing")
    with pytest.raises(KeyError, match="obs has no column 'label'"):
        evaluate("m", "clustering", out_dir=tmp_path, adata=a, rep="X_e", labels_key="label")
    with pytest.raises(ValueError, match="unknown suite 'cluster'"):
        evaluate("m", "cluster", out_dir=tmp_path, adata=a, rep="X_e")
    with pytest.raises(TypeError, match=r"needs input\(s\) \['rep'\]"):
        evaluate("m", "clustering", out_dir=tmp_path, adata=a)
    with pytest.raises(TypeError, match=r"takes no input\(s\) \['labels'\]"):
        evaluate("m", "clustering", out_dir=tmp_path, adata=a, rep="X_e", labels=[1])
    with pytest.raises(ValueError, match="3 true labels and 2 predicted"):
        evaluate("m", "annotation", out_dir=tmp_path, truth=["a", "b", "c"], predicted=["a", "b"])
    assert not any(tmp_path.iterdir())
    evaluate("m", "annotation", out_dir=tmp_path, truth=["a"], predicted=["a"])
    before = (tmp_path / "annotation" / "_" / "m.json").read_text()
    from atacformer.errors import OutputError

    with pytest.raises(OutputError, match="exists"):
        evaluate("m", "annotation", out_dir=tmp_path, overwrite=False, truth=["a"], predicted=["b"])
    assert (tmp_path / "annotation" / "_" / "m.json").read_text() == before


def test_cli_annotation_and_table(tmp_path, capsys):
    from atacformer.cli import main

    a = AnnData(obs=pd.DataFrame({"cell_type": ["a", "a", "b", "b"], "predicted_label": ["a", "b", "b", "b"]},
                                 index=list("wxyz")))
    a.write_h5ad(tmp_path / "cells.h5ad")
    out = tmp_path / "reports"
    out.mkdir()
    rc = main(["evaluate", "annotation", "--h5ad", str(tmp_path / "cells.h5ad"), "--model", "kNN",
               "-o", str(out / "knn.json")])
    assert rc == 0
    report = read_report(out / "knn.json")
    assert report.metrics["accuracy"] == 0.75 and report.dataset == "cells"
    assert report.metrics["macro_f1"] == pytest.approx(skm.f1_score(list("aabb"), list("abbb"), average="macro"))
    # an existing report is not replaced without --overwrite
    rc = main(["evaluate", "annotation", "--h5ad", str(tmp_path / "cells.h5ad"), "--model", "other",
               "--pred-key", "cell_type", "-o", str(out / "knn.json")])
    assert rc == 2 and read_report(out / "knn.json").model == "kNN"
    assert "exists" in capsys.readouterr().err
    # a missing column: a clear error and nothing written
    rc = main(["evaluate", "annotation", "--h5ad", str(tmp_path / "cells.h5ad"), "--model", "m",
               "--pred-key", "nope", "-o", str(out / "m.json")])
    assert rc == 2 and not (out / "m.json").exists() and not (out / "m.tsv").exists()
    assert "no column 'nope'" in capsys.readouterr().err
    rc = main(["evaluate", "table", str(out), "-o", str(tmp_path / "table.tsv")])
    assert rc == 0
    assert pd.read_csv(tmp_path / "table.tsv", sep="\t")["model"].tolist() == ["kNN"]


# ----------------------------------------------------------------------------- real data


def _log_norm(x):
    from atacformer.evaluation.rna import log_normalize

    return log_normalize(x).toarray()


def test_real_expression_cell_type_mean_model(data_dir, tmp_path):
    """NeurIPS 2021 multiome RNA: donor s1d2 predicted by the mean of its cell type in donor
    s1d1 (a trivial model), scored, and checked against scipy on the same matrices."""
    pytest.importorskip("cell_eval")
    import anndata as ad

    rna = ad.read_h5ad(data_dir / NEURIPS / "bmmc_multiome_500_rna.h5ad")
    x = _log_norm(rna.X)
    types = rna.obs["cell_type"].astype(str).to_numpy()
    train = rna.obs["batch"].astype(str).to_numpy() == "s1d1"
    mean = {t: x[train & (types == t)].mean(0) for t in np.unique(types[train])}
    pred = np.stack([mean.get(t, x[train].mean(0)) for t in types[~train]])
    test = ~train
    real = AnnData(x[test], obs=rna.obs[test][["cell_type"]].astype(str), var=pd.DataFrame(index=rna.var_names))
    guess = AnnData(pred, obs=real.obs.copy(), var=real.var.copy())
    control = pd.Series(types[test]).value_counts().index[0]
    r = evaluate("cell-type mean", "expression", dataset="NeurIPS s1d2", out_dir=tmp_path, real=real, pred=guess,
                 group_key="cell_type", control=control)
    m = r.metrics
    ok = [j for j in range(x.shape[1]) if np.ptp(x[test][:, j]) > 0 and np.ptp(pred[:, j]) > 0]
    assert m["pearson_gene"] == pytest.approx(np.mean([stats.pearsonr(x[test][:, j], pred[:, j])[0] for j in ok]))
    assert m["n_nan_genes"] == x.shape[1] - len(ok)
    assert m["mse"] == pytest.approx(((x[test] - pred) ** 2).mean())
    # the trivial model carries signal: better than a random s1d1 cell as the prediction
    draw = np.random.default_rng(0).integers(0, train.sum(), test.sum())
    rand = suites.expression(real, AnnData(x[train][draw], obs=real.obs.copy(), var=real.var.copy()),
                             group_key="cell_type", control=control)
    for k in ("pearson_gene", "pearson_cell", "spearman_cell", "group_pearson_delta", "group_discrimination_l1"):
        assert m[k] > rand[k], k
    assert m["mse"] < rand["mse"] and m["n_groups"] >= 5
    assert (tmp_path / "expression" / "NeurIPS_s1d2" / "cell-type_mean.json").is_file()


@pytest.mark.slow
def test_real_bm0828_lsi_clustering(data_dir, tmp_path):
    """BM0828 (Buenrostro 2018) LSI through the clustering suite: the same numbers as the
    one protocol, k-means ARI as scikit-learn computes it, and clusters that follow the types."""
    import anndata as ad

    from atacformer import tools as tl
    from atacformer.metrics import evaluate_embedding

    a = ad.read_h5ad(data_dir.joinpath(*BM0828))
    tl.lsi(a, n_components=30, seed=0)
    r = evaluate("LSI", "clustering", dataset="BM0828", out_dir=tmp_path, adata=a, rep="X_lsi")
    direct = evaluate_embedding(a, "X_lsi", "cell_type", 0)
    assert {k: r.metrics[k] for k in direct} == pytest.approx(direct)
    assert r.metrics["n_cells"] == a.n_obs
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=a.obs["cell_type"].nunique(), n_init=10, random_state=0).fit_predict(
        np.asarray(a.obsm["X_lsi"], dtype=np.float64))
    assert r.metrics["kmeans_ari"] == pytest.approx(skm.adjusted_rand_score(a.obs["cell_type"].astype(str), km))
    assert r.metrics["leiden_ari"] > 0.2 and r.metrics["transfer_acc"] > 0.5


def test_finetune_annotation_rows_score_through_the_suite(tmp_path):
    """The fine-tuning benchmark's kNN annotation row: the suite's report, and the same
    accuracy / macro-F1 as tl.annotate's own scoring against the truth."""
    from atacformer import tools as tl
    from atacformer.evaluation.finetune import FinetuneBenchmarkConfig, _annotate_row

    x, labels = _blobs(n=60, n_types=3, spread=2.5, seed=5)
    a = AnnData(obs=pd.DataFrame({"cell_type": labels}, index=[f"c{i}" for i in range(60)]))
    a.obsm["X_e"] = x
    ref, query = a[::2].copy(), a[1::2].copy()
    row = _annotate_row(ref, query, "X_e", None, FinetuneBenchmarkConfig(), 0, method="LSI + kNN", dataset="toy",
                        reports_dir=tmp_path)
    own = tl.annotate(query.copy(), reference=ref.copy(), labels_key="cell_type", use_rep="X_e", k=15,
                      min_confidence=0.0, truth_key="cell_type")
    assert row == {"macro_f1": pytest.approx(own["macro_f1"]), "accuracy": pytest.approx(own["accuracy"])}
    report = read_report(tmp_path / "annotation" / "toy" / "LSI_+_kNN.json")
    assert report.metrics["macro_f1"] == pytest.approx(own["macro_f1"]) and report.metrics["fraction_rejected"] == 0

"""GET (Fu 2025) on real multiome data (sci-CAR A549, hg19): windows against a brute-force
nearest-region search, masked pretraining and Poisson fine-tuning against constant
predictors, LoRA freezing, folder round trips and refused inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SHARED = (REPO / ".." / "shared" / "data").resolve()
SCICAR = SHARED / "scicar2018_a549_multiome"
GENES = SHARED / "genome_annotations" / "hg19" / "hg19_genes.archr.bed.gz"
FASTA = SHARED / "hg19_chr22_1-22Mb_fasta" / "hg19_chr22_1-22000000.fa.gz"

pytestmark = pytest.mark.skipif(not (SCICAR / "scicar_a549_atac.h5ad").is_file() or not GENES.is_file(),
                                reason=f"real data absent: {SCICAR} and {GENES} (see ../shared/data/README.md)")

SMALL = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, dropout=0.0)
TRAIN = dict(batch_size=16, progress=False, tensorboard=False, warmup_steps=2, save_every=10**6)
TRAIN_CHROMS = ["chr18", "chr19", "chr20", "chr21", "chr22"]


@pytest.fixture(scope="module")
def scicar():
    import anndata as ad

    from atacformer.io import read_genes

    rna = ad.read_h5ad(SCICAR / "scicar_a549_rna.h5ad")
    atac = ad.read_h5ad(SCICAR / "scicar_a549_atac.h5ad")
    return atac, rna, read_genes(GENES)


@pytest.fixture(scope="module")
def data(scicar):
    from atacformer.tools._get import get_data

    atac, rna, genes = scicar
    return get_data(atac, rna, genes, groupby="dex_hours")


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A small GET pretrained and LoRA fine-tuned on the windows of five chromosomes' genes."""
    from atacformer.tools._get import get_finetune, get_pretrain

    out = tmp_path_factory.mktemp("get")
    train = data.genes["chrom"].isin(TRAIN_CHROMS).to_numpy()
    get_pretrain(data, out / "pre", genes=train, max_steps=60, lr=3e-3, **SMALL, **TRAIN)
    get_finetune(data, out / "pre" / "model", out / "ft", genes=train, lora_rank=4, max_steps=60, lr=1e-2, **TRAIN)
    return out, train


def _brute_force(chrom, tss, strand, peaks, n, window):
    """Every region's distance to the TSS, the n smallest (ties: earlier start, then end)."""
    on = peaks[chrom]
    s, e = on["start"].to_numpy(), on["end"].to_numpy()
    on = on.index.to_numpy()
    d = np.select([(s <= tss) & (tss < e), s > tss], [0, s - tss], (e - 1) - tss)
    ok = np.abs(d) <= window // 2
    on, s, e, d = on[ok], s[ok], e[ok], d[ok]
    pick = np.lexsort((e, s, np.abs(d)))[:n]
    pick = pick[np.lexsort((e[pick], s[pick]))]
    return on[pick], d[pick] * (-1 if strand == "-" else 1)


@pytest.mark.parametrize("n,window", [(200, 2_000_000), (7, 300_000)])
def test_windows_equal_brute_force_nearest_regions(scicar, n, window):
    from atacformer.io.matrix import peak_matrix_from_anndata
    from atacformer.tools._get import nearest_regions
    from atacformer.vocab.annotate import _gene_tss

    atac, _, genes = scicar
    peaks = peak_matrix_from_anndata(atac).peaks
    sel = genes[genes["chrom"].isin(["chr21", "chr22", "chrY"])].iloc[::3]
    t = _gene_tss(sel)
    idx, dist = nearest_regions(t["chrom"], t["start"], t["strand"], peaks, n, window)
    assert idx.shape == (len(sel), n)
    by_chrom = {c: peaks.reset_index(drop=True)[peaks["chrom"].to_numpy() == c] for c in ["chr21", "chr22", "chrY"]}
    for g in range(len(sel)):
        want, want_d = _brute_force(t["chrom"].iat[g], t["start"].iat[g], t["strand"].iat[g], by_chrom, n, window)
        got = idx[g][idx[g] >= 0]
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(dist[g, :len(got)], want_d)
        assert (dist[g, len(got):] == 0).all()


def test_features_gather_the_window_and_group(data):
    g = np.array([0, 5, 5]), np.array([0, 0, 2])
    t = data.features(*g)
    for b, (gene, group) in enumerate(zip(*g)):
        rows = data.window_index[gene][data.window_index[gene] >= 0]
        n = len(rows)
        assert t["attention_mask"][b].sum() == n
        np.testing.assert_allclose(t["features"][b, :n, -1], data.accessibility[group, rows])
        assert not t["features"][b, n:].any() and not t["attention_mask"][b, n:].any()
    assert data.groups == ["0", "1", "3"]


def test_gene_body_feature_marks_regions_inside_the_gene(scicar, data):
    """``gene_body=True``: the feature before accessibility is 1 exactly for the window regions
    overlapping the gene's annotated extent (checked gene by gene against the annotation)."""
    from atacformer.tools._get import get_data

    atac, rna, genes = scicar
    names = data.genes["gene_name"].iloc[:40].tolist()
    gb = get_data(atac, rna, genes, groupby="dex_hours", gene_names=names, gene_body=True)
    assert gb.feature_names == ["gene_body", "accessibility"]
    ann = genes.drop_duplicates("gene_name").set_index("gene_name")
    t = gb.features(np.arange(len(names)), np.zeros(len(names), dtype=int))
    n_inside = 0
    for i, name in enumerate(names):
        rows = gb.window_index[i][gb.window_index[i] >= 0]
        r = gb.regions.iloc[rows]
        inside = ((r["end"] > ann.loc[name, "start"]) & (r["start"] < ann.loc[name, "end"])).to_numpy()
        np.testing.assert_array_equal(t["features"][i, :len(rows), 0], inside.astype(np.float32))
        np.testing.assert_allclose(t["features"][i, :len(rows), 1], gb.accessibility[0, rows])
        n_inside += int(inside.sum())
    assert n_inside > 0
    mean, std = gb.feature_scaling(np.arange(len(names)))
    body = gb.window_gene_body[gb.window_index >= 0]
    np.testing.assert_allclose([mean[0], std[0]], [body.mean(), body.std()], rtol=1e-5)


def test_pseudobulk_logcpm_by_hand(scicar, data):
    atac, rna, _ = scicar
    cells = (atac.obs["dex_hours"] == 1).to_numpy()
    peaks = atac.var.reset_index(drop=True)
    r = data.regions.iloc[10]
    col = np.flatnonzero((peaks["chrom"] == r["chrom"]).to_numpy() & (peaks["start"] == r["start"]).to_numpy()
                         & (peaks["end"] == r["end"]).to_numpy())[0]
    x = atac.X[cells]
    assert np.isclose(data.accessibility[1, 10], np.log1p(x[:, col].sum() / x.sum() * 1e6), rtol=1e-5)
    gene = data.genes["gene_name"].iat[3]
    y = rna[cells, gene].X.sum() / rna.X[cells].sum() * 1e6
    assert np.isclose(data.expression[1, 3], y)


def test_masked_reconstruction_beats_the_mean(data, trained):
    """Masked-region MSE of the pretrained model on its training windows, against the
    initial model and against predicting the column mean (0 after standardising)."""
    from atacformer.models.get import GETForMaskedRegions

    out, train = trained
    model = GETForMaskedRegions.from_pretrained(out / "pre" / "model")
    torch.manual_seed(0)
    fresh = GETForMaskedRegions(model.config)
    fresh.get.set_feature_scaling(model.get.feature_mean, model.get.feature_scale)
    fresh.eval()
    rows = np.flatnonzero(train)
    t = data.features(np.repeat(rows, 3), np.tile(np.arange(3), len(rows)))
    keep = t["attention_mask"]
    masked = keep & (np.random.default_rng(1).random(keep.shape) < 0.5)
    inputs = {k: torch.from_numpy(v) for k, v in t.items()} | {"masked": torch.from_numpy(masked)}
    with torch.no_grad():
        out_t, out_0 = model(**inputs), fresh(**inputs)
    target = (t["features"] - model.get.feature_mean.numpy()) / model.get.feature_scale.numpy()
    by_hand = float(((out_t.reconstruction.numpy() - target)[masked] ** 2).mean())
    assert np.isclose(float(out_t.loss), by_hand, rtol=1e-5)
    mean_predictor = float((target[masked] ** 2).mean())
    print(f"masked MSE: trained {float(out_t.loss):.4f}, initial {float(out_0.loss):.4f}, mean {mean_predictor:.4f}")
    assert float(out_t.loss) < float(out_0.loss)
    assert float(out_t.loss) < mean_predictor


def test_poisson_finetune_beats_a_constant_rate(data, trained):
    from atacformer.tools._get import get_predict

    out, train = trained
    pred = get_predict(out / "ft" / "model", data, genes=train).to_numpy()  # (groups, genes)
    y = data.expression[:, train]
    nll = float(np.mean(pred - y * np.log(pred)))  # PoissonNLLLoss(log_input=True), by hand
    const = y.mean()
    nll_const = float(np.mean(const - y * np.log(const)))
    # the NLL less its minimum (at pred = y) is half the Poisson deviance
    floor = float(np.mean(y - np.where(y > 0, y * np.log(np.where(y > 0, y, 1)), 0.0)))
    r = np.corrcoef(np.log1p(pred).ravel(), np.log1p(y).ravel())[0, 1]
    print(f"Poisson NLL: fine-tuned {nll:.2f}, best constant {nll_const:.2f}, floor {floor:.2f}; log r {r:.3f}")
    assert nll < nll_const  # below the best constant rate (where fine-tuning starts)
    assert r > 0.2


def test_log1p_mse_finetune_beats_the_mean_on_the_log_scale(data, trained, tmp_path):
    """``objective="log1p_mse"``: the loss is the squared error of log1p CPM (checked by hand
    on a batch), and training brings it under the best constant (the variance)."""
    from atacformer.models.get import GETForExpression
    from atacformer.tools._get import get_finetune, get_predict

    out, train = trained
    get_finetune(data, out / "pre" / "model", tmp_path / "ft", genes=train, lora_rank=0, objective="log1p_mse",
                 max_steps=60, lr=3e-3, **TRAIN)
    model = GETForExpression.from_pretrained(tmp_path / "ft" / "model").eval()
    assert model.config.objective == "log1p_mse"
    rows = np.flatnonzero(train)[:20]
    t = {k: torch.from_numpy(v) for k, v in data.features(np.repeat(rows, 3), np.tile(np.arange(3), 20)).items()}
    y = data.expression[np.tile(np.arange(3), 20), np.repeat(rows, 3)]
    with torch.no_grad():
        o = model(**t, target=torch.from_numpy(y.astype(np.float32)))
        head = model.head(torch.einsum("bn,bnd->bd", o.attention, o.hidden)).squeeze(-1).numpy()
    assert np.isclose(float(o.loss), float(np.mean((head - np.log1p(y)) ** 2)), rtol=1e-4)
    pred = get_predict(model, data, genes=train).to_numpy()
    assert (pred >= 0).all()
    obs = np.log1p(data.expression[:, train])
    mse, var = float(np.mean((np.log1p(pred) - obs) ** 2)), float(obs.var())
    print(f"log1p MSE: fine-tuned {mse:.3f}, best constant {var:.3f}")
    assert mse < var


def test_lora_leaves_the_pretrained_weights_frozen(trained):
    from atacformer.models._pretrained import load_state_dict
    from atacformer.models.get import GETForExpression

    out, _ = trained
    pre = load_state_dict(out / "pre" / "model")
    ft = load_state_dict(out / "ft" / "model")
    lora_b = [k for k in ft if "lora_B" in k]
    assert lora_b and any(float(ft[k].abs().max()) > 0 for k in lora_b)  # zero-initialised, then trained
    n = 0
    for k, v in ft.items():
        if not k.startswith("get.") or "lora_" in k:
            continue
        torch.testing.assert_close(v, pre[k.replace(".base_layer", "")], rtol=0, atol=0)
        n += 1
    assert n == len([k for k in pre if k.startswith("get.")])
    model = GETForExpression.from_pretrained(out / "ft" / "model")
    for name, p in model.named_parameters():
        assert p.requires_grad == ("lora_" in name or not name.startswith("get.")), name


def test_folder_round_trip_gives_the_same_predictions(data, trained, tmp_path):
    from atacformer.models import load_model
    from atacformer.models.get import GETForExpression, GETForMaskedRegions
    from atacformer.tools._get import get_predict

    out, train = trained
    test = data.genes["chrom"].isin(["chr2"]).to_numpy()
    a = get_predict(out / "ft" / "model", data, genes=test)
    model = load_model(out / "ft" / "model")
    assert isinstance(model, GETForExpression) and model.config.lora
    model.save_pretrained(tmp_path / "again")
    b = get_predict(load_model(tmp_path / "again"), data, genes=test)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    merged = get_predict(load_model(out / "ft" / "model", merge_adapters=True), data, genes=test)
    np.testing.assert_allclose(merged.to_numpy(), a.to_numpy(), rtol=1e-4)
    assert isinstance(load_model(out / "pre" / "model"), GETForMaskedRegions)


# -- refused inputs ----------------------------------------------------------------------------------
def test_genes_without_regions_are_skipped_or_refused(scicar):
    from atacformer.tools._get import get_data

    atac, rna, genes = scicar
    chr21 = atac[:, (atac.var["chrom"] == "chr21").to_numpy()].copy()
    d = get_data(chr21, rna, genes, groupby="dex_hours")
    assert set(d.genes["chrom"]) == {"chr21"}
    assert d.skipped["no region in the window"] == 1051 - len(d.genes) > 1000
    far = genes[genes["chrom"] == "chrY"]
    with pytest.raises(ValueError, match="none of the .* genes has a region"):
        get_data(chr21, None, far, groupby="dex_hours")


def test_genes_missing_from_the_rna_or_annotation_are_refused(scicar):
    from atacformer.errors import InputFormatError
    from atacformer.tools._get import get_data

    atac, rna, genes = scicar
    with pytest.raises(ValueError, match=r"not in the RNA data, e.g. \['NOTAGENE'\]"):
        get_data(atac, rna, genes, groupby="dex_hours", gene_names=["FKBP5", "NOTAGENE"])
    with pytest.raises(InputFormatError, match="no TSS"):
        get_data(atac, rna, genes, groupby="dex_hours", gene_names=["FKBP5", "RP11-431K24.1"])
    with pytest.raises(ValueError, match="groupby column 'cluster'"):
        get_data(atac, rna, genes, groupby="cluster")
    with pytest.raises(ValueError, match="same cells in the same order"):
        get_data(atac, rna[::-1].copy(), genes, groupby="dex_hours")


@pytest.mark.skipif(not FASTA.is_file(), reason=f"{FASTA} absent")
def test_regions_without_sequence_are_refused(scicar, tmp_path):
    from Bio import motifs as bm

    from atacformer.errors import GenomeMismatchError, InputFormatError
    from atacformer.tools._get import get_data
    from atacformer.vocab.dna import MotifSet

    atac, _, genes = scicar
    ms = MotifSet.from_bio([bm.create(["TGACTCA", "TGAGTCA"])])  # an AP-1 site by hand
    v = atac.var
    ok = atac[:, ((v["chrom"] == "chr22") & (v["start"] > 17_000_000) & (v["end"] < 17_600_000)).to_numpy()].copy()
    g = genes[(genes["chrom"] == "chr22") & (genes["start"] < 17_500_000)]
    # one peak moved into the N run that precedes the sequence (before 16.05 Mb)
    gap = ok.copy()
    gap.var = gap.var.assign(start=gap.var["start"].to_numpy() - np.r_[1_500_000, np.zeros(ok.n_vars - 1, int)],
                             end=gap.var["end"].to_numpy() - np.r_[1_500_000, np.zeros(ok.n_vars - 1, int)])
    gap.var.index = gap.var["chrom"].astype(str) + ":" + gap.var["start"].astype(str) + "-" + gap.var["end"].astype(str)
    assert gap.var["end"].iat[0] < 16_050_000
    with pytest.raises(InputFormatError, match="1 regions in gene windows have no motif features"):
        get_data(gap, None, g, groupby="dex_hours", fasta=FASTA, motifs=ms)
    other = atac[:, (v["chrom"] == "chr21").to_numpy()].copy()
    with pytest.raises(GenomeMismatchError, match="not in the FASTA"):
        get_data(other, None, genes[genes["chrom"] == "chr21"], groupby="dex_hours", fasta=FASTA, motifs=ms)
    d = get_data(ok, None, g, groupby="dex_hours", fasta=FASTA, motifs=ms,
                 window_bp=1_000_000)
    assert len(d.feature_names) == 2 and d.feature_names[-1] == "accessibility"
    assert d.motif.shape == (len(d.regions), 1)


def test_finetune_refuses_other_features_and_writes_nothing(data, trained, tmp_path):
    import dataclasses

    from atacformer.tools._get import get_finetune

    out, train = trained
    other = dataclasses.replace(data, motif=np.zeros((len(data.regions), 2), np.float32),
                                feature_names=["m1", "m2", "accessibility"])
    with pytest.raises(ValueError, match="the model reads 1 features"):
        get_finetune(other, out / "pre" / "model", tmp_path / "x", genes=train, max_steps=2, **TRAIN)
    no_rna = dataclasses.replace(data, expression=None)
    with pytest.raises(ValueError, match="needs expression"):
        get_finetune(no_rna, out / "pre" / "model", tmp_path / "y", max_steps=2, **TRAIN)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
@pytest.mark.skipif(not FASTA.is_file(), reason=f"{FASTA} absent")
def test_motif_and_accessibility_pretraining_on_chr22(scicar, tmp_path):
    """JASPAR 2024 motif scores (879 matrices) + accessibility of every peak with sequence."""
    from atacformer.models.get import GETForMaskedRegions
    from atacformer.tools._get import get_data, get_pretrain

    atac, _, genes = scicar
    v = atac.var
    span = atac[:, ((v["chrom"] == "chr22") & (v["start"] >= 16_100_000) & (v["end"] <= 22_000_000)).to_numpy()].copy()
    g = genes[(genes["chrom"] == "chr22") & (genes["start"] > 16_100_000) & (genes["end"] < 22_000_000)]
    d = get_data(span, None, g, groupby="dex_hours", fasta=FASTA, window_bp=1_000_000, n_regions=50)
    assert d.n_features == 880 and d.motif.shape == (len(d.regions), 879)
    get_pretrain(d, tmp_path / "pre", max_steps=80, lr=3e-3, **SMALL, **TRAIN)
    model = GETForMaskedRegions.from_pretrained(tmp_path / "pre" / "model")
    t = d.features(np.repeat(np.arange(len(d.genes)), 3), np.tile(np.arange(3), len(d.genes)))
    masked = t["attention_mask"] & (np.random.default_rng(1).random(t["attention_mask"].shape) < 0.5)
    inputs = {k: torch.from_numpy(x) for k, x in t.items()} | {"masked": torch.from_numpy(masked)}
    with torch.no_grad():
        loss = float(model(**inputs).loss)
    target = (t["features"] - model.get.feature_mean.numpy()) / model.get.feature_scale.numpy()
    assert loss < float((target[masked] ** 2).mean())  # below the column mean (0.906 < 0.937 measured)


def test_cli_predict_writes_the_library_predictions(data, trained, tmp_path):
    import anndata as ad

    from atacformer.cli import main
    from atacformer.tools._get import get_predict

    out, train = trained
    common = ["--atac", str(SCICAR / "scicar_a549_atac.h5ad"), "--rna", str(SCICAR / "scicar_a549_rna.h5ad"),
              "--genes", str(GENES), "--groupby", "dex_hours", "--chroms", "chr21,chr22"]
    target = tmp_path / "pred.h5ad"
    assert main(["get", "predict", str(out / "ft" / "model"), *common, "-o", str(target)]) == 0
    got = ad.read_h5ad(target)
    want = get_predict(out / "ft" / "model", data, genes=data.genes["chrom"].isin(["chr21", "chr22"]).to_numpy())
    np.testing.assert_array_equal(got.X, want.to_numpy(np.float32))
    assert list(got.var_names) == list(want.columns) and list(got.obs_names) == ["0", "1", "3"]
    np.testing.assert_allclose(got.layers["observed"],
                               data.expression[:, data.genes["chrom"].isin(["chr21", "chr22"]).to_numpy()], rtol=1e-6)
    # an existing output is refused before any work; a fine-tune without RNA is refused, nothing written
    before = target.stat().st_mtime_ns
    assert main(["get", "predict", str(out / "ft" / "model"), *common, "-o", str(target)]) == 2
    assert target.stat().st_mtime_ns == before
    no_rna = common[:2] + common[4:]
    with pytest.raises(SystemExit):  # argparse: --rna is required
        main(["get", "finetune", *no_rna, "--pretrained", str(out / "pre" / "model"), "-o", str(tmp_path / "ft")])
    assert not (tmp_path / "ft").exists()

"""The gene-level multimodal model: value binning against a loop implementation, the loss
against a hand computation from the logits, RNA-only / ATAC-only / paired forwards, the joint
embedding, save/load, the batcher, and a short training run on real paired cells."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from atacformer.models import (
    MultimodalConfig, MultimodalForCellClassification, MultimodalForMaskedValues, MultimodalModel,
    bin_values, embed_multimodal, fit_value_bins, impute_rna, load_model,
)
from atacformer.models.multimodal import gene_tokens, joint_embedding
from atacformer.train.collate_multimodal import KINDS, MultimodalBatcher, mask_values

TINY = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)


def _counts(seed: int, n: int = 40, g: int = 30, density: float = 0.4) -> sp.csr_matrix:
    """Random sparse counts with a few all-zero cells/genes and heavy-tailed values."""
    rng = np.random.default_rng(seed)
    x = rng.negative_binomial(1, 0.3, size=(n, g)) * (rng.random((n, g)) < density)
    x[0] = 0  # a cell without counts
    x[:, 1] = 0  # a gene no cell expresses
    x[3, 2] = 0
    return sp.csr_matrix(x)


def _config(g: int = 30, **kw) -> MultimodalConfig:
    cfg = MultimodalConfig(n_genes=g, gene_names=[f"G{i}" for i in range(g)], max_genes=16, **{**TINY, **kw})
    return cfg.with_value_bins(rna=_counts(1, g=g), atac=_counts(2, g=g, density=0.2))


# -- binning -----------------------------------------------------------------------------------
def _reference_binning(train: np.ndarray, test: np.ndarray, n_bins: int = 5):
    """Loops: CP10k per cell, log1p, times log(1 + n / (1 + df)) per gene (fitted on
    ``train``), then the training non-zero values' percentiles as edges; bin = 1 + the number
    of edges <= the value, 0 for a zero."""
    def normalise(x, idf):
        out = np.zeros(x.shape)
        for i in range(x.shape[0]):
            total = x[i].sum()
            for j in range(x.shape[1]):
                if x[i, j] > 0:
                    out[i, j] = np.log1p(x[i, j] * 1e4 / total) * idf[j]
        return out

    n = train.shape[0]
    idf = np.array([np.log(1 + n / (1 + np.count_nonzero(train[:, j]))) for j in range(train.shape[1])])
    tr = normalise(train, idf)
    nonzero = [v for v in tr.ravel() if v > 0]
    edges = np.array([np.percentile(nonzero, 100 * k / n_bins) for k in range(1, n_bins)])
    te = normalise(test, idf)
    ids = np.zeros(test.shape, dtype=int)
    for i in range(test.shape[0]):
        for j in range(test.shape[1]):
            if te[i, j] > 0:
                ids[i, j] = 1 + sum(int(te[i, j] >= e) for e in edges)
    return ids, idf, edges


def test_binning_matches_a_loop_implementation():
    train, test = _counts(3), _counts(4)
    ids, fit = bin_values(train)
    ref_ids, ref_idf, ref_edges = _reference_binning(train.toarray(), train.toarray())
    np.testing.assert_allclose(fit.idf, ref_idf, rtol=1e-12)
    np.testing.assert_allclose(fit.edges, ref_edges, rtol=1e-12)
    np.testing.assert_array_equal(ids.toarray(), ref_ids)
    # inference: new cells binned with the training matrix's IDF and edges
    test_ids, same = bin_values(test, fit)
    assert same is fit
    np.testing.assert_array_equal(test_ids.toarray(), _reference_binning(train.toarray(), test.toarray())[0])
    assert set(np.unique(ids.toarray())) <= set(range(6))


def test_binning_on_real_rna_matches_the_loop(shared_data):
    import anndata as ad

    x = ad.read_h5ad(shared_data / "neurips2021_bmmc_multiome_500" / "bmmc_multiome_500_rna.h5ad").X.tocsr()
    x = x[:120]
    ids, fit = bin_values(x)
    ref_ids, _, ref_edges = _reference_binning(x.toarray(), x.toarray())
    np.testing.assert_allclose(fit.edges, ref_edges, rtol=1e-12)
    np.testing.assert_array_equal(ids.toarray(), ref_ids)
    counts = np.bincount(ids.data, minlength=6)[1:]  # roughly equal bins (ties allowed)
    assert counts.min() > 0.05 * counts.sum()


def test_config_stores_the_binning_and_checks_lengths():
    cfg = _config()
    fit = fit_value_bins(_counts(1))
    np.testing.assert_allclose(cfg.value_bins("rna").edges, fit.edges)
    np.testing.assert_allclose(cfg.value_bins("rna").idf, fit.idf)
    with pytest.raises(ValueError, match="no fitted atac"):
        MultimodalConfig(n_genes=30).value_bins("atac")
    with pytest.raises(ValueError, match="genes"):
        MultimodalConfig(n_genes=5).with_value_bins(rna=_counts(1))


# -- tokens and masking ------------------------------------------------------------------------
def test_gene_tokens_keep_the_top_genes_in_gene_order():
    x = _counts(5, density=0.8)
    fit = fit_value_bins(x)
    t = gene_tokens(x, fit, max_genes=6, pad_id=30, profile=True)
    from atacformer.models.multimodal import normalize_values

    dense = normalize_values(x, fit.idf).toarray()
    ids = bin_values(x, fit)[0].toarray()
    for i in range(x.shape[0]):
        nz = np.flatnonzero(dense[i])
        want = np.sort(nz[np.argsort(-dense[i, nz], kind="stable")][:6])
        got = t.ids[i][t.mask[i]].numpy()
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(t.values[i][t.mask[i]].numpy(), ids[i, want])
        assert (t.ids[i][~t.mask[i]] == 30).all()
    np.testing.assert_array_equal(t.profile.numpy(), ids)


def test_mask_values_masks_the_right_number_and_keeps_targets():
    x = _counts(6, density=0.7)
    t = gene_tokens(x, fit_value_bins(x), max_genes=30, pad_id=30)
    values, targets = mask_values(t.values, t.mask, 0.3, 6, np.random.default_rng(0))
    n = t.mask.sum(1).numpy()
    masked = (values == 6).sum(1).numpy()
    want = np.minimum(np.maximum(np.rint(0.3 * n), (n >= 2)), np.maximum(n - 1, 0))
    np.testing.assert_array_equal(masked, want)
    at = values == 6
    assert (targets[at] == t.values[at]).all() and (targets[~at] == -100).all()
    assert not (at & ~t.mask).any()


# -- the model ---------------------------------------------------------------------------------
def _paired_batch(cfg, seed=0, n=12):
    batcher = MultimodalBatcher(cfg, kinds=("paired",))
    ga = _counts(20 + seed, n=n, density=0.2).tolil()
    ga[1] = 0  # a cell with RNA but no ATAC token
    labels = {"rna": _counts(10 + seed, n=n), "gene_activity": ga.tocsr()}
    return batcher(None, np.random.default_rng(seed), labels)


def _nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits)[target], element-wise (logits (..., k), target (...))."""
    logits = logits.double()
    return torch.logsumexp(logits, -1) - logits.gather(-1, target[..., None]).squeeze(-1)


@pytest.mark.parametrize("value_decoder", ["token", "cell"])
def test_loss_equals_a_hand_computation_from_the_logits(value_decoder):
    torch.manual_seed(0)
    cfg = _config(imputation_weight=0.7, profile_weight=0.4, value_decoder=value_decoder)
    model = MultimodalForMaskedValues(cfg).eval()
    batch, weight = _paired_batch(cfg)
    with torch.no_grad():
        out = model(**batch)
        joint_rna = model.profile_logits(out.cell_embedding, "rna")
        joint_atac = model.profile_logits(out.cell_embedding, "atac")
    total, count = 0.0, 0
    for m in ("rna", "atac"):
        logits, targets = getattr(out, f"{m}_logits").double(), batch[f"{m}_targets"]
        for b, l in zip(*np.nonzero(targets.numpy() != -100)):
            row = logits[b, l]
            total += (torch.logsumexp(row, 0) - row[targets[b, l]]).item()
            count += 1
    assert count == weight > 0
    masked = total / count
    assert abs(out.masked_loss.item() - masked) < 1e-5
    imputation = _nll(out.imputation_logits, batch["rna_profile"]).mean().item()
    assert abs(out.imputation_loss.item() - imputation) < 1e-5
    profile = (_nll(joint_rna, batch["rna_profile"]).mean() + _nll(joint_atac, batch["atac_profile"]).mean()).item() / 2
    assert abs(out.profile_loss.item() - profile) < 1e-5
    assert abs(out.loss.item() - (masked + 0.7 * imputation + 0.4 * profile)) < 1e-5


def test_the_cell_decoder_reads_the_gene_not_the_token_state():
    """With value_decoder="cell" a masked position's logits depend on the cell (through the
    joint embedding) and its gene only: two cells with the same joint embedding and gene get
    the same logits, whatever the token's context."""
    torch.manual_seed(0)
    cfg = _config(value_decoder="cell")
    model = MultimodalForMaskedValues(cfg).eval()
    batch, _ = _paired_batch(cfg)
    with torch.no_grad():
        out = model(**batch)
        emb = model.multimodal.embeddings
        ids = batch["rna_ids"]
        want = model.value_logits(emb.gene_embeddings(ids) + emb.modality_embeddings.weight[0],
                                  out.cell_embedding, "rna")
    torch.testing.assert_close(out.rna_logits, want)


def test_forward_with_rna_only_atac_only_and_both():
    torch.manual_seed(0)
    cfg = _config()
    model = MultimodalForMaskedValues(cfg).eval()
    batch, _ = _paired_batch(cfg)
    rna = {k: v for k, v in batch.items() if k.startswith("rna_") and k != "rna_profile"}
    atac = {k: v for k, v in batch.items() if k.startswith("atac_")}
    o_rna, o_atac, o_both = model(**rna), model(**atac), model(**batch)
    b, d = batch["rna_ids"].shape[0], cfg.hidden_size
    for o in (o_rna, o_atac, o_both):
        assert o.cell_embedding.shape == (b, d) and torch.isfinite(o.loss)
    assert o_rna.atac_logits is None and o_atac.rna_logits is None
    assert o_rna.rna_logits.shape == (*batch["rna_ids"].shape, cfg.n_bins + 1)
    torch.testing.assert_close(o_rna.cell_embedding, o_rna.rna_embedding)
    torch.testing.assert_close(o_atac.cell_embedding, o_atac.atac_embedding)
    # the joint embedding is the mean of the single-modality embeddings (cells with tokens in both)
    both = batch["rna_mask"].any(1) & batch["atac_mask"].any(1)
    want = (o_rna.cell_embedding + o_atac.cell_embedding) / 2
    torch.testing.assert_close(o_both.cell_embedding[both], want[both])
    # a cell with no ATAC token gets its RNA embedding
    only_rna = batch["rna_mask"].any(1) & ~batch["atac_mask"].any(1)
    assert only_rna.any()
    torch.testing.assert_close(o_both.cell_embedding[only_rna], o_rna.cell_embedding[only_rna])
    # imputation only on paired batches
    assert o_both.imputation_loss is not None and o_rna.imputation_loss is None
    assert model.cross_modal_logits(**atac).shape == (b, cfg.n_genes, cfg.n_bins + 1)


def test_cell_embedding_is_the_mean_over_real_tokens_and_ignores_padding():
    torch.manual_seed(0)
    cfg = _config()
    model = MultimodalModel(cfg).eval()
    ids = torch.tensor([[2, 5, 9, 30, 30], [4, 6, 7, 8, 11]])
    values = torch.tensor([[1, 3, 5, 0, 0], [2, 2, 4, 1, 5]])
    mask = ids != cfg.pad_token_id
    hidden, cell = model.encode(ids, values, mask, "atac")
    torch.testing.assert_close(cell[0], hidden[0, :3].mean(0))
    alone_h, alone = model.encode(ids[:1, :3], values[:1, :3], mask[:1, :3], "atac")
    torch.testing.assert_close(alone[0], cell[0], atol=1e-5, rtol=1e-5)
    # modalities differ: the same tokens read as RNA give another embedding
    assert not torch.allclose(model.encode(ids, values, mask, "rna")[1], cell)


def test_cls_pooling_and_joint_embedding_helper():
    cfg = _config(pooling="cls")
    model = MultimodalModel(cfg).eval()
    ids, values = torch.tensor([[2, 5, 9]]), torch.tensor([[1, 3, 5]])
    hidden, cell = model.encode(ids, values, None, "rna")
    assert hidden.shape == (1, 3, 32) and cell.shape == (1, 32)
    z = {"rna": torch.ones(2, 3), "atac": torch.zeros(2, 3)}
    j = joint_embedding(z, {"rna": torch.tensor([True, False]), "atac": torch.tensor([True, False])})
    torch.testing.assert_close(j, torch.tensor([[0.5] * 3, [0.0] * 3]))


def test_every_parameter_gets_a_gradient_on_single_modality_batches():
    """DistributedDataParallel needs every parameter in each step's graph."""
    for profile_weight in (0.0, 1.0):
        cfg = _config(profile_weight=profile_weight)
        model = MultimodalForMaskedValues(cfg)
        batch, _ = MultimodalBatcher(cfg, kinds=("rna",))(None, np.random.default_rng(0), {"rna": _counts(7)})
        assert ("rna_profile" in batch) == (profile_weight > 0)
        model(**batch).loss.backward()
        assert all(p.grad is not None for p in model.parameters())


# -- save / load -------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = _config()
    model = MultimodalForMaskedValues(cfg).eval()
    batch, _ = _paired_batch(cfg)
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is MultimodalForMaskedValues
    assert loaded.config == cfg and loaded.config.gene_names == cfg.gene_names
    a, b = model(**batch), loaded(**batch)
    torch.testing.assert_close(a.loss, b.loss)
    torch.testing.assert_close(a.cell_embedding, b.cell_embedding)
    # the backbone loads from the task folder; embeddings agree
    backbone = MultimodalModel.from_pretrained(tmp_path / "m")
    x, g = _counts(30, n=8), _counts(31, n=8, density=0.2)
    np.testing.assert_allclose(embed_multimodal(backbone, x, g), embed_multimodal(model, x, g), atol=1e-5)
    # a classifier from the trained backbone, saved and loaded as itself
    clf = MultimodalForCellClassification.from_backbone(loaded, ["A", "B", "C"]).eval()
    clf.save_pretrained(tmp_path / "c")
    clf2 = load_model(tmp_path / "c")
    assert type(clf2) is MultimodalForCellClassification
    inputs = clf.prepare_inputs(x, g)
    torch.testing.assert_close(clf.predict_proba(**inputs), clf2.predict_proba(**inputs))


def test_embed_and_impute_tools():
    torch.manual_seed(0)
    cfg = _config()
    model = MultimodalForMaskedValues(cfg)
    x, g = _counts(40, n=25), _counts(41, n=25, density=0.2)
    joint = embed_multimodal(model, x, g, batch_size=7)
    r, a = embed_multimodal(model, x, g, which="rna"), embed_multimodal(model, None, g, which="atac")
    both = (np.diff(x.indptr) > 0) & (np.diff(g.indptr) > 0)
    np.testing.assert_allclose(joint[both], ((r + a) / 2)[both], atol=1e-5)
    assert joint.shape == (25, 32) and model.training  # training mode restored
    bins = impute_rna(model, g, batch_size=10)
    assert bins.shape == (25, 30) and bins.min() >= 0 and bins.max() <= 5
    probs = impute_rna(model, g, return_probabilities=True)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="genes"):
        embed_multimodal(model, _counts(1, g=10))


# -- the batcher -------------------------------------------------------------------------------
def test_batcher_kinds_weights_and_determinism():
    cfg = _config()
    batcher = MultimodalBatcher(cfg)
    labels = {"rna": _counts(50, n=10), "gene_activity": _counts(51, n=10, density=0.2)}
    rng = np.random.default_rng(0)
    seen = {k: 0 for k in KINDS}
    for _ in range(300):
        batch, weight = batcher(None, rng, labels)
        kind = ("paired" if "rna_ids" in batch and "atac_ids" in batch else
                "rna" if "rna_ids" in batch else "atac")
        seen[kind] += 1
        n_masked = sum(int((batch[f"{m}_targets"] != -100).sum()) for m in ("rna", "atac") if f"{m}_ids" in batch)
        assert weight == n_masked
        assert ("rna_profile" in batch) == (kind == "paired")
    assert all(70 <= v <= 130 for v in seen.values()), seen  # 100 each expected (binomial sd ~8)
    a, _ = batcher(None, np.random.default_rng(7), labels)
    b, _ = batcher(None, np.random.default_rng(7), labels)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # an RNA-only corpus gives RNA batches; unmasked batches weigh cells and carry labels
    only, _ = batcher(None, rng, {"rna": labels["rna"]})
    assert set(only) == {"rna_ids", "rna_values", "rna_mask", "rna_targets"}
    plain, w = MultimodalBatcher(cfg, mask_ratio=0, label_key="cell_type")(
        None, rng, {**labels, "cell_type": np.arange(10) % 3})
    assert w == 10 and "rna_targets" not in plain and plain["labels"].tolist() == list(np.arange(10) % 3)
    with pytest.raises(ValueError, match="gene_activity"):
        MultimodalBatcher(cfg, kinds=("atac",))(None, rng, {"rna": labels["rna"]})


# -- training on real paired cells -------------------------------------------------------------
def _neurips_paired(shared_data):
    """NeurIPS 2021 BMMC multiome (500 cells): RNA counts over 600 genes, and ATAC as gene
    activity. Stand-in for ``atacformer.pp.gene_activity`` (to be swapped when it lands):
    each peak's counts go to the nearest TSS (hg38 GENCODE, by Ensembl id) among the RNA
    genes on its chromosome."""
    import anndata as ad
    import pandas as pd

    d = shared_data / "neurips2021_bmmc_multiome_500"
    tss_path = shared_data / "genome_annotations" / "hg38" / "hg38_gencode_tss_unique.bed.gz"
    if not (d / "bmmc_multiome_500_rna.h5ad").is_file() or not tss_path.is_file():
        pytest.skip(f"{d} or {tss_path} is absent")
    rna, atac = ad.read_h5ad(d / "bmmc_multiome_500_rna.h5ad"), ad.read_h5ad(d / "bmmc_multiome_500_atac.h5ad")
    tss = pd.read_csv(tss_path, sep="\t", header=None, usecols=[0, 1, 3], names=["chrom", "pos", "id"])
    tss = tss.assign(id=tss["id"].str.split(".").str[0]).drop_duplicates("id").set_index("id")
    genes = tss.reindex(rna.var["gene_ids"].to_numpy())
    mid = ((atac.var["start"] + atac.var["end"]) // 2).to_numpy()
    rows, cols = [], []
    for p, (chrom, m) in enumerate(zip(atac.var["chrom"].astype(str), mid)):
        on = np.flatnonzero((genes["chrom"] == chrom).to_numpy())
        if len(on):
            rows.append(p)
            cols.append(on[np.argmin(np.abs(genes["pos"].to_numpy()[on] - m))])
    assign = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(atac.n_vars, rna.n_vars))
    return rna.X.tocsr().astype(np.float64), sp.csr_matrix(atac.X.tocsr().astype(np.float64) @ assign), rna


def test_training_on_real_paired_cells_lowers_the_loss(shared_data):
    rna, ga, adata = _neurips_paired(shared_data)
    assert ga.nnz > 0
    torch.manual_seed(0)
    train, held = np.arange(400), np.arange(400, 500)
    cfg = MultimodalConfig(n_genes=rna.shape[1], gene_names=list(adata.var_names), max_genes=64,
                           dropout=0.0, **TINY).with_value_bins(rna=rna[train], atac=ga[train])
    model = MultimodalForMaskedValues(cfg)
    batcher = MultimodalBatcher(cfg)
    held_batches = [MultimodalBatcher(cfg, kinds=(k,))(None, np.random.default_rng(1),
                                                       {"rna": rna[held], "gene_activity": ga[held]})
                    for k in KINDS]

    def held_loss():
        model.eval()
        with torch.no_grad():
            out = [model(**b) for b, _ in held_batches]
        model.train()
        return np.array([o.masked_loss.item() for o in out]), out[2].imputation_loss.item()

    before, imp_before = held_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(60):  # plain loop; the package's trainer runs the same model and batcher
        cells = rng.choice(train, 32, replace=False)
        batch, _ = batcher(None, rng, {"rna": rna[cells], "gene_activity": ga[cells]})
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after, imp_after = held_loss()
    assert (after < before - 0.3).all(), (before, after)  # RNA-only, ATAC-only, paired
    assert imp_after < imp_before - 0.5, (imp_before, imp_after)

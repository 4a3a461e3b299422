"""CRAFT: rank encoding, medians, the CLIP loss, BERT checkpoints, training, embedding,
imputation and the command line, on real paired cells (NeurIPS 2021 BMMC multiome, sci-CAR)."""

from __future__ import annotations

import json
import math
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from atacformer.models.craft import (
    CraftModel, RankEncoder, clip_loss, gene_nonzero_medians, load_bert_checkpoint, log_normalise, rank_genes,
)

NIPS = "neurips2021_bmmc_multiome_500"


@pytest.fixture(scope="module")
def nips(data_dir):
    import anndata as ad

    atac = ad.read_h5ad(data_dir / NIPS / "bmmc_multiome_500_atac.h5ad")
    rna = ad.read_h5ad(data_dir / NIPS / "bmmc_multiome_500_rna.h5ad")
    return atac, rna


@pytest.fixture(scope="module")
def scicar_rna(data_dir):
    import anndata as ad

    return ad.read_h5ad(data_dir / "scicar2018_a549_multiome" / "scicar_a549_rna.h5ad")


# -- rank encoding, against a per-cell pandas computation -----------------------------------------
def _reference_ranks(counts: np.ndarray, medians: np.ndarray, tokens: np.ndarray, top: int) -> list[list[int]]:
    out = []
    for row in counts:
        total = row.sum()
        # the same floating-point order as the code (x * (1e4 / total) / median): mathematically equal
        # ratios of different genes must tie the same way in both
        s = pd.Series(row * (10_000 / total) / medians if total else row * 0.0)
        s = s[s > 0].sort_values(ascending=False, kind="mergesort")  # stable: ties keep gene order
        out.append([int(tokens[i]) for i in s.index[:top]])
    return out


def test_medians_are_nonzero_medians_of_depth_normalised_counts(scicar_rna):
    X = scicar_rna.X[:400].toarray().astype(float)
    norm = X / np.maximum(X.sum(1, keepdims=True), 1) * 10_000
    expect = np.array([np.median(c[c > 0]) if (c > 0).any() else 1.0 for c in norm.T])
    np.testing.assert_allclose(gene_nonzero_medians(sp.csr_matrix(X)), expect, rtol=1e-12)


def test_rank_encoding_matches_reference(scicar_rna):
    X = scicar_rna.X[:300]
    med = gene_nonzero_medians(scicar_rna.X)
    tokens = np.arange(X.shape[1]) + 3
    for top in (2048, 25):
        got = rank_genes(X, med, tokens, top)
        ref = _reference_ranks(X.toarray().astype(float), med, tokens, top)
        assert [g.tolist() for g in got] == ref
    with_cls = rank_genes(X[:3], med, tokens, 10, cls_token_id=2)
    assert all(t[0] == 2 and len(t) <= 11 for t in with_cls)


def test_log_normalise_is_log1p_cp10k(scicar_rna):
    X = scicar_rna.X[:50].toarray().astype(float)
    np.testing.assert_allclose(log_normalise(sp.csr_matrix(X)), np.log1p(X / X.sum(1, keepdims=True) * 1e4),
                               rtol=1e-5)


# -- the CLIP loss, against a double loop ----------------------------------------------------------
def test_clip_loss_equals_naive_double_loop():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 5, generator=g), dim=-1)
    r = torch.nn.functional.normalize(torch.randn(6, 5, generator=g), dim=-1)
    scale = torch.tensor(math.log(1 / 0.07))
    loss, _ = clip_loss(a, r, scale)
    t = math.exp(scale.item())
    sim = [[t * sum(a[i, k].item() * r[j, k].item() for k in range(5)) for j in range(6)] for i in range(6)]
    a2r = sum(-sim[i][i] + math.log(sum(math.exp(sim[i][j]) for j in range(6))) for i in range(6)) / 6
    r2a = sum(-sim[j][j] + math.log(sum(math.exp(sim[i][j]) for i in range(6))) for j in range(6)) / 6
    assert loss.item() == pytest.approx((a2r + r2a) / 2, rel=1e-5)


# -- a local BERT checkpoint, against transformers itself -------------------------------------------
def _tiny_bert(path, genes, act="relu", with_cls=True):
    transformers = pytest.importorskip("transformers")
    specials = ["<pad>", "<mask>"] + (["<cls>"] if with_cls else [])
    tokens = {t: i for i, t in enumerate(specials)}
    tokens.update({g: len(specials) + i for i, g in enumerate(genes)})
    cfg = transformers.BertConfig(vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, hidden_act=act, max_position_embeddings=700,
                                  pad_token_id=0)
    torch.manual_seed(0)
    m = transformers.BertForMaskedLM(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorms and token-type row
        for name, p in m.named_parameters():
            if "LayerNorm" in name or "token_type" in name:
                p.add_(0.1 * torch.randn_like(p))
    m.save_pretrained(path)
    (path / "token_dictionary.json").write_text(json.dumps(tokens))
    return m


@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_bert_checkpoint_loads_with_identical_outputs(tmp_path, act):
    genes = [f"G{i}" for i in range(40)]
    ref = _tiny_bert(tmp_path, genes, act)
    kw, state, tokens, medians = load_bert_checkpoint(tmp_path)
    enc = RankEncoder(**kw).eval()
    enc.load_state_dict(state)
    ids = torch.tensor([[2, 5, 9, 12, 30, 7], [2, 8, 4, 0, 0, 0]])
    mask = ids != 0
    with torch.no_grad():
        want = ref.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        got = enc(ids, mask)
    np.testing.assert_allclose(got[mask].numpy(), want[mask].numpy(), atol=2e-5)
    assert medians is None and tokens["G0"] == 3


def test_bert_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_bert_checkpoint(tmp_path)
    _tiny_bert(tmp_path, ["A", "B"])
    (tmp_path / "token_dictionary.json").unlink()
    with pytest.raises(FileNotFoundError, match="token dictionary"):
        load_bert_checkpoint(tmp_path)


# -- training through the one loop, the folder, embedding and imputation ---------------------------
@pytest.fixture(scope="module")
def craft_run(nips, tmp_path_factory):
    from atacformer import tools as tl

    atac, rna = nips
    held = list(atac.obs_names[::5])
    out = tmp_path_factory.mktemp("craft") / "run"
    path = tl.train_craft(atac, rna, out, exclude_cells=held, max_steps=40, batch_size=64, seed=0)
    return path, held


def test_craft_trains_only_paired_non_excluded_cells(craft_run):
    path, held = craft_run
    summary = json.loads((path.parent / "summary.json").read_text())
    assert summary["cells"] == 500 - len(held) and summary["steps"] == 40
    rows = pd.read_csv(path.parent / "metrics.csv")
    assert rows["loss"].iloc[-5:].mean() < rows["loss"].iloc[:5].mean()


def test_craft_folder_round_trip_and_shared_space(craft_run, nips):
    from atacformer import tools as tl
    from atacformer.models import load_model

    path, held = craft_run
    atac, rna = nips
    m = load_model(path)
    assert isinstance(m, CraftModel) and m.config.gene_names == list(rna.var_names)
    m.save_pretrained(path.parent / "again")
    m2 = load_model(path.parent / "again")
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, m2.state_dict()[k])
    a, r = atac[held].copy(), rna[held].copy()
    tl.embed(a, m)
    tl.embed(r, m2, modality="rna")
    A, R = a.obsm["X_atacformer"], r.obsm["X_atacformer"]
    assert A.shape == R.shape == (len(held), m.config.projection_dim)
    np.testing.assert_allclose(np.linalg.norm(A, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(R, axis=1), 1, atol=1e-5)
    # genes matched by name whatever their order; a missing gene counts as zero
    r_perm = rna[held][:, list(rna.var_names[::-1])].copy()
    tl.embed(r_perm, m, modality="rna")
    np.testing.assert_allclose(r_perm.obsm["X_atacformer"], R, atol=1e-5)


def test_craft_training_pairs_cells(craft_run, nips):
    """On the cells it trained on, a true pair is more similar than a random one."""
    from atacformer import tools as tl

    path, held = craft_run
    atac, rna = nips
    train = [c for c in atac.obs_names if c not in set(held)][:200]
    a, r = atac[train].copy(), rna[train].copy()
    tl.embed(a, path)
    tl.embed(r, path, modality="rna")
    S = a.obsm["X_atacformer"] @ r.obsm["X_atacformer"].T
    assert np.mean(np.diag(S)[:, None] > S) > 0.6  # chance: 0.5


def test_impute_gives_genes_in_model_order(craft_run, nips):
    from atacformer import tools as tl

    path, held = craft_run
    atac, rna = nips
    pred = tl.impute(atac[held[:20]].copy(), path)
    assert pred.shape == (20, rna.n_vars) and list(pred.var_names) == list(rna.var_names)
    assert np.isfinite(pred.X).all() and list(pred.obs_names) == held[:20]


def test_rna_base_checkpoint_trains(tmp_path, nips):
    """--rna-base: the encoder starts from the checkpoint; genes outside its dictionary are left out."""
    from atacformer import tools as tl
    from atacformer.models import load_model

    atac, rna = nips
    genes = list(rna.var_names[:300])
    _tiny_bert(tmp_path / "bert", genes)
    path = tl.train_craft(atac, rna, tmp_path / "run", rna_base=tmp_path / "bert", max_steps=0)
    m = load_model(path)
    assert m.config.gene_names == genes and m.config.rna["cls_token_id"] == 2
    kw, state, tokens, _ = load_bert_checkpoint(tmp_path / "bert")
    for k, v in state.items():
        torch.testing.assert_close(m.rna_encoder.state_dict()[k], v)
    assert m.config.gene_token_ids == [tokens[g] for g in genes]


# -- bad inputs: clear errors, nothing written -----------------------------------------------------
def test_no_shared_cells_writes_nothing(tmp_path, nips, scicar_rna):
    from atacformer import tools as tl

    atac, _ = nips
    with pytest.raises(ValueError, match="no cell .* has an RNA partner"):
        tl.train_craft(atac, scicar_rna, tmp_path / "run", max_steps=1)
    assert not (tmp_path / "run").exists()


def test_rna_not_counts_writes_nothing(tmp_path, nips):
    from atacformer import tools as tl
    from atacformer.errors import InputFormatError

    atac, rna = nips
    lognorm = rna.copy()
    lognorm.X = sp.csr_matrix(np.log1p(rna.X.toarray().astype(np.float32)))
    with pytest.raises(InputFormatError, match="raw counts"):
        tl.train_craft(atac, lognorm, tmp_path / "run", max_steps=1)
    assert not (tmp_path / "run").exists()


def test_rna_embedding_needs_shared_genes(craft_run, scicar_rna):
    from atacformer import tools as tl

    path, _ = craft_run
    other = scicar_rna[:5].copy()
    other.var_names = [f"X{i}" for i in range(other.n_vars)]
    with pytest.raises(ValueError, match="none of the model's"):
        tl.embed(other, path, modality="rna")


def test_mismatched_genome_is_refused(tmp_path, nips, data_dir):
    """hg19 peaks (sci-CAR) into a CRAFT run whose base model is of hg38 peaks (NeurIPS)."""
    import anndata as ad

    from atacformer import tools as tl
    from atacformer.errors import GenomeMismatchError

    atac, rna = nips
    base = tl.train_craft(atac, rna, tmp_path / "base", max_steps=0).parent / "model"
    sci = ad.read_h5ad(data_dir / "scicar2018_a549_multiome" / "scicar_a549_atac.h5ad")
    sci_rna = ad.read_h5ad(data_dir / "scicar2018_a549_multiome" / "scicar_a549_rna.h5ad")
    with pytest.raises((GenomeMismatchError, ValueError), match="hg19|hg38|genome"):
        tl.train_craft(sci[:200].copy(), sci_rna[:200].copy(), tmp_path / "run", base=base, max_steps=1)
    assert not (tmp_path / "run" / "model").exists()


def test_cli_craft_embed_impute(tmp_path, data_dir, capsys):
    import anndata as ad

    from atacformer.cli import main

    d = data_dir / NIPS
    held = tmp_path / "held.txt"
    names = ad.read_h5ad(d / "bmmc_multiome_500_atac.h5ad").obs_names
    held.write_text("\n".join(names[::4]) + "\n")
    assert main(["craft", "--atac", str(d / "bmmc_multiome_500_atac.h5ad"), "--rna", str(d / "bmmc_multiome_500_rna.h5ad"),
                 "--exclude-cells", str(held), "-o", str(tmp_path / "c"), "--max-steps", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[: out.rindex("}") + 1])["cells"] == 375
    model = str(tmp_path / "c" / "model")
    assert main(["embed", model, str(d / "bmmc_multiome_500_rna.h5ad"), "--modality", "rna",
                 "-o", str(tmp_path / "r.h5ad")]) == 0
    assert main(["impute", model, str(d / "bmmc_multiome_500_atac.h5ad"), "-o", str(tmp_path / "i.h5ad")]) == 0
    r = ad.read_h5ad(tmp_path / "r.h5ad")
    i = ad.read_h5ad(tmp_path / "i.h5ad")
    assert r.obsm["X_atacformer"].shape == (500, 128) and i.shape == (500, 600)
    capsys.readouterr()
    assert main(["impute", model, str(d / "bmmc_multiome_500_atac.h5ad"), "-o", str(tmp_path / "i.h5ad")]) == 2
    assert "exists" in capsys.readouterr().err
    # a log-normalised RNA file is refused by name, before anything is written
    bad = ad.read_h5ad(d / "bmmc_multiome_500_rna.h5ad")
    bad.X = bad.X.astype(np.float32) * 0.5
    bad.write_h5ad(tmp_path / "lognorm.h5ad")
    assert main(["craft", "--atac", str(d / "bmmc_multiome_500_atac.h5ad"), "--rna", str(tmp_path / "lognorm.h5ad"),
                 "-o", str(tmp_path / "c2"), "--max-steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "lognorm.h5ad" in err and "raw counts" in err and not (tmp_path / "c2").exists()


# -- the multimodal model through the one training loop -------------------------------------------
def test_multimodal_trains_through_the_one_loop(tmp_path, data_dir):
    import anndata as ad

    from atacformer.models import MultimodalForMaskedValues, embed_multimodal, load_model
    from atacformer.preprocessing import gene_activity
    from atacformer.train import TrainConfig, pretrain

    d = data_dir / "scicar2018_a549_multiome"
    genes = data_dir / "genome_annotations" / "hg19" / "hg19_genes.archr.bed.gz"
    atac = ad.read_h5ad(d / "scicar_a549_atac.h5ad")[:300]
    atac = atac[:, atac.var["chrom"].astype(str).str.startswith("chr").to_numpy()].copy()
    rna = ad.read_h5ad(d / "scicar_a549_rna.h5ad")
    held = tmp_path / "held.txt"
    held.write_text("\n".join(atac.obs_names[:50]))
    with pytest.raises(ValueError, match="gene annotation"):
        TrainConfig(out=str(tmp_path / "x"), objective="multimodal")
    s = pretrain(TrainConfig(out=str(tmp_path / "run"), objective="multimodal", genes=str(genes), exclude_cells=str(held),
                             max_steps=4, batch_size=32, progress=False, tensorboard=False), data=atac, rna=rna)
    assert s["cells"] == 250 and np.isfinite(s["final_loss"])
    m = load_model(s["model_dir"])
    assert isinstance(m, MultimodalForMaskedValues)
    # the same gene activity as pp.gene_activity computes on its own, over the model's genes
    ga = gene_activity(atac, str(genes))[:, m.config.gene_names]
    r = rna[atac.obs_names][:, m.config.gene_names]
    emb = embed_multimodal(m, sp.csr_matrix(r.X), sp.csr_matrix(ga.X))
    assert emb.shape == (300, m.config.hidden_size) and np.isfinite(emb).all()


def test_craft_from_a_geniml_folder(tmp_path, data_dir):
    """A geniml Atacformer checkpoint as the ATAC side: its backbone weights are CRAFT's."""
    import gzip

    import anndata as ad

    from atacformer import Vocabulary
    from atacformer import tools as tl
    from atacformer.models import load_model

    geniml_af = pytest.importorskip("geniml.atacformer", reason="geniml (with transformers < 5) is not installed")
    a = ad.read_h5ad(data_dir / "geniml_pbmc_hg38_tiny" / "pbmc_hg38.h5ad")
    vocab = Vocabulary(a.var["chr"].to_numpy(), a.var["start"].to_numpy(), a.var["end"].to_numpy())
    n = vocab.n_regions
    cfg = geniml_af.AtacformerConfig(vocab_size=n + 7, pad_token_id=n + 1, cls_token_id=n + 3, eos_token_id=n + 4,
                                     bos_token_id=n + 5, sep_token_id=n + 6, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
                                     use_pos_embeddings=False)
    torch.manual_seed(0)
    geniml_af.AtacformerForReplacedTokenDetection(cfg).eval().save_pretrained(tmp_path / "g")
    with gzip.open(tmp_path / "g" / "universe.bed.gz", "wt") as f:
        for c, s, e in zip(vocab.chroms, vocab.starts, vocab.ends):
            f.write(f"{c}\t{s}\t{e}\n")
    rng = np.random.default_rng(0)  # RNA partners for the geniml fixture's cells (it has none)
    rna = ad.AnnData(sp.csr_matrix(rng.poisson(1.0, (a.n_obs, 30)).astype(np.int32)), obs=a.obs[[]].copy())
    rna.var_names = [f"g{i}" for i in range(30)]
    path = tl.train_craft(a, rna, tmp_path / "run", base=tmp_path / "g", max_steps=0)
    m, base = load_model(path), load_model(tmp_path / "g")
    own = base.state_dict()
    for k, v in m.atacformer.state_dict().items():
        torch.testing.assert_close(v, own["atacformer." + k] if "atacformer." + k in own else own[k])

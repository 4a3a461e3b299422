"""TOSICA (Chen 2023): the GMT reader, the masked embedding (weights and gradients outside
the gene sets stay zero), training on real cells through the one loop, the model folder,
the CLI end to end and the refusal of bad inputs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SHARED = (REPO / ".." / "shared" / "data").resolve()
BMMC = SHARED / "neurips2021_bmmc_multiome_500" / "bmmc_multiome_500_rna.h5ad"
HALLMARK = SHARED / "gene_sets_gmt_human" / "h.all.v7.0.symbols.gmt"
REACTOME = SHARED / "gene_sets_gmt_human" / "reactome_TOSICA.gmt"
needs_data = pytest.mark.skipif(not (BMMC.is_file() and HALLMARK.is_file()),
                                reason=f"real data absent: {BMMC} / {HALLMARK} (see ../shared/data/README.md)")

#: a small, fast network for the tests (the paper's m = 48 is the default)
SMALL = dict(embed_dim=16, num_heads=2, num_layers=1, dropout=0.0)


def _hand_parse(text: str) -> dict[str, list[str]]:
    """GMT parsed line by line with plain string operations (the reference)."""
    out = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        f = line.split("\t")
        genes = []
        for g in f[2:]:
            if g.strip() and g.strip() not in genes:
                genes.append(g.strip())
        out[f[0]] = genes
    return out


# -- GMT ----------------------------------------------------------------------------------
def test_gmt_reader_matches_a_hand_parse(tmp_path):
    from atacformer.io.gmt import read_gmt

    text = ("SET_A\tdesc a\tCD3E\tCD4\tCD8A\t\r\n"
            "\n"
            "SET_B\thttp://x\tMS4A1\tCD19\tCD19\tCD79A\n"
            "SET_C\t\tGAPDH\n")
    plain = tmp_path / "s.gmt"
    plain.write_text(text)
    gz = tmp_path / "s.gmt.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    want = {"SET_A": ["CD3E", "CD4", "CD8A"], "SET_B": ["MS4A1", "CD19", "CD79A"], "SET_C": ["GAPDH"]}
    assert _hand_parse(text) == want
    assert read_gmt(plain) == want
    assert read_gmt(gz) == want
    if HALLMARK.is_file():  # the real MSigDB file: 50 sets as split by hand
        real = read_gmt(HALLMARK)
        assert real == _hand_parse(HALLMARK.read_text())
        assert len(real) == 50 and len(real["HALLMARK_HYPOXIA"]) == 200


def test_gmt_reader_names_the_bad_line(tmp_path):
    from atacformer.errors import InputFormatError
    from atacformer.io.gmt import read_gmt

    p = tmp_path / "bad.gmt"
    p.write_text("OK\td\tA\tB\nBROKEN_LINE_WITHOUT_TABS\n")
    with pytest.raises(InputFormatError, match=r"bad.gmt, line 2: .*tabs"):
        read_gmt(p)
    p.write_text("X\td\tA\nX\td\tB\n")
    with pytest.raises(InputFormatError, match="line 2: gene set name used twice"):
        read_gmt(p)


# -- the model ----------------------------------------------------------------------------
def _tiny_model(seed=0):
    from atacformer.models.tosica import TosicaConfig, TosicaModel

    torch.manual_seed(seed)
    cfg = TosicaConfig(gene_names=[f"g{i}" for i in range(7)], pathway_names=["P", "Q", "R"],
                       gene_sets=[[0, 1, 2], [2, 3], [4, 5, 6]], label_names=["a", "b"], **SMALL)
    return TosicaModel(cfg)


def test_embedding_is_the_masked_sum_computed_by_hand():
    model = _tiny_model()
    x = torch.rand(4, 7)
    W = model.embed.weight.detach().numpy()  # (G, P, m)
    b = model.embed.bias.detach().numpy()
    sets = model.config.gene_sets
    want = np.stack([np.stack([x.numpy()[:, s] @ W[s, p, :] + b[p] for p, s in enumerate(sets)], 1)])[0]
    np.testing.assert_allclose(model.embed(x).detach().numpy(), want, rtol=1e-5, atol=1e-6)


# -- real data: one training run shared by the tests below --------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    if not (BMMC.is_file() and HALLMARK.is_file()):
        pytest.skip(f"real data absent: {BMMC} / {HALLMARK} (see ../shared/data/README.md)")
    import anndata as ad

    from atacformer import tools as tl

    adata = ad.read_h5ad(BMMC)
    out = tmp_path_factory.mktemp("tosica") / "run"
    path = tl.tosica_train(adata, HALLMARK, "cell_type", out, max_steps=40, batch_size=64, lr=3e-3,
                           warmup_steps=4, seed=0, tensorboard=False, **SMALL)
    return adata, path


@needs_data
def test_mask_holds_for_weights_and_gradients(trained):
    from atacformer.models import load_model

    adata, path = trained
    model = load_model(path)
    outside = ~torch.from_numpy(model.config.mask())  # (G, P)
    assert outside.any()
    W = model.embed.weight  # after 40 AdamW steps (weight decay included)
    assert torch.count_nonzero(W.detach()[outside]) == 0
    assert torch.count_nonzero(W.detach()[~outside]) == int((~outside).sum()) * W.shape[-1]
    model.train()
    x = torch.rand(8, model.config.n_genes)
    model(x, labels=torch.zeros(8, dtype=torch.long)).loss.backward()
    assert torch.count_nonzero(W.grad[outside]) == 0
    assert torch.count_nonzero(W.grad[~outside]) > 0


@needs_data
def test_loss_falls_on_real_cells(trained):
    """Cross-entropy on the 500 cells (sklearn's log_loss) of the trained model against the same
    model untrained (same seed, same config)."""
    from sklearn.metrics import log_loss

    from atacformer.models import load_model
    from atacformer.models.tosica import TosicaModel, predict_cells
    from atacformer.tools._tosica import model_expression

    adata, path = trained
    model = load_model(path)
    X = model_expression(adata, model.config.gene_names)
    y = adata.obs["cell_type"].astype(str).to_numpy()
    torch.manual_seed(0)
    untrained = TosicaModel(model.config)
    labels = model.config.label_names
    before = log_loss(y, predict_cells(untrained, X)[0], labels=labels)
    after = log_loss(y, predict_cells(model, X)[0], labels=labels)
    assert before > 0.9 * np.log(len(labels))  # near chance at the start
    assert after < 0.6 * before, (before, after)
    summary = json.loads((path.parent / "summary.json").read_text())
    assert summary["steps"] == 40


@needs_data
def test_folder_round_trip_and_predictions(trained, tmp_path):
    from atacformer import tools as tl
    from atacformer.models import load_model
    from atacformer.models.tosica import TosicaModel, predict_cells
    from atacformer.tools._tosica import model_expression

    adata, path = trained
    model = load_model(path)
    assert isinstance(model, TosicaModel)
    model.save_pretrained(tmp_path / "copy")
    again = load_model(tmp_path / "copy")
    X = model_expression(adata, model.config.gene_names)
    p1, a1 = predict_cells(model, X)
    p2, a2 = predict_cells(again, X)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(a1, a2)

    q = adata.copy()
    tl.tosica_predict(q, path.parent, threshold=0.6)  # the run's folder works too
    best = p1.argmax(1)
    conf = p1.max(1)
    want = np.where(conf < 0.6, "Unknown", np.asarray(model.config.label_names)[best])
    assert (q.obs["predicted_label"].astype(str).to_numpy() == want).all()
    np.testing.assert_allclose(q.obs["prediction_confidence"], conf)
    att = q.obsm["X_tosica_attention"]
    assert att.shape == (q.n_obs, model.config.n_pathways)
    assert q.uns["tosica"]["pathways"] == model.config.pathway_names
    assert (att >= 0).all() and (att.sum(1) <= 1 + 1e-5).all()


@needs_data
def test_raw_counts_are_log_normalised():
    import anndata as ad

    from atacformer.tools._tosica import log_expression

    a = ad.read_h5ad(BMMC)[:50].copy()
    X = a.X.toarray().astype(np.float64)
    want = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(log_expression(a).toarray(), want, rtol=1e-5, atol=1e-5)
    a.X = want.astype(np.float32)  # already log-normalised: left as it is
    np.testing.assert_allclose(log_expression(a).toarray(), want, rtol=1e-6)


# -- CLI and bad inputs ---------------------------------------------------------------------
def _subset(tmp_path, n=200):
    import anndata as ad

    a = ad.read_h5ad(BMMC)
    a = a[np.random.default_rng(0).choice(a.n_obs, n, replace=False)].copy()
    p = tmp_path / "ref.h5ad"
    a.write_h5ad(p)
    return a, p


@needs_data
def test_cli_train_and_predict(tmp_path):
    import anndata as ad

    from atacformer.cli import main
    a, ref = _subset(tmp_path)
    run = tmp_path / "run"
    assert main(["tosica", "train", str(ref), "--gmt", str(HALLMARK), "--labels-key", "cell_type", "-o", str(run),
                 "--max-steps", "3", "--batch-size", "32", "--lr", "1e-3", "--min-genes-per-set", "5", "-q"]) == 0
    assert (run / "model" / "config.json").is_file()
    out, png = tmp_path / "pred.h5ad", tmp_path / "att.png"
    assert main(["tosica", "predict", str(run), str(ref), "-o", str(out), "--threshold", "0.2", "--plot", str(png),
                 "-q"]) == 0
    q = ad.read_h5ad(out)
    assert q.n_obs == a.n_obs
    assert set(q.obs["predicted_label"].astype(str)) <= set(a.obs["cell_type"].astype(str)) | {"Unknown"}
    assert q.obsm["X_tosica_attention"].shape[0] == a.n_obs
    assert png.stat().st_size > 1000
    # an existing output is refused without --overwrite and left as it was
    before = out.stat().st_mtime_ns
    assert main(["tosica", "predict", str(run), str(ref), "-o", str(out), "-q"]) == 2
    assert out.stat().st_mtime_ns == before
    assert main(["tosica", "train", str(ref), "--gmt", str(HALLMARK), "-o", str(run), "--max-steps", "1", "-q"]) == 2


@needs_data
def test_bad_inputs_leave_nothing_written(tmp_path, capsys):
    import anndata as ad

    from atacformer.cli import main

    a, ref = _subset(tmp_path, 60)
    # gene sets whose genes miss the data (mouse-style symbols against human ones)
    gmt = tmp_path / "mouse.gmt"
    gmt.write_text("S1\td\t" + "\t".join(g.capitalize() for g in a.var_names[:20]) + "\n")
    assert main(["tosica", "train", str(ref), "--gmt", str(gmt), "-o", str(tmp_path / "r1"), "-q"]) == 2
    assert "no gene set" in capsys.readouterr().err
    assert not (tmp_path / "r1").exists()
    # no labels column
    assert main(["tosica", "train", str(ref), "--gmt", str(HALLMARK), "--labels-key", "celltype", "-o",
                 str(tmp_path / "r2"), "-q"]) == 2
    assert "obs['celltype'] is not in" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()
    # a query with none of the model's genes
    from atacformer import tools as tl

    path = tl.tosica_train(a, HALLMARK, "cell_type", tmp_path / "r3", max_steps=1, tensorboard=False, **SMALL)
    other = ad.AnnData(a.X.copy(), obs=a.obs.copy(), var=pd.DataFrame(index=[f"X{i}" for i in range(a.n_vars)]))
    qp = tmp_path / "other.h5ad"
    other.write_h5ad(qp)
    assert main(["tosica", "predict", str(path), str(qp), "-o", str(tmp_path / "o.h5ad"), "-q"]) == 2
    assert "0 of the model's" in capsys.readouterr().err
    assert not (tmp_path / "o.h5ad").exists()
    # --overwrite with bad gene sets keeps the earlier run
    assert main(["tosica", "train", str(ref), "--gmt", str(gmt), "-o", str(tmp_path / "r3"), "--overwrite", "-q"]) == 2
    assert (path / "config.json").is_file()


@needs_data
def test_partly_missing_genes_are_zero_filled_with_a_warning(trained, caplog):
    from atacformer.models import load_model
    from atacformer.tools._tosica import model_expression

    adata, path = trained
    genes = load_model(path).config.gene_names
    q = adata[:, 100:].copy()
    with caplog.at_level("WARNING"):
        X = model_expression(q, genes)
    assert "lacks 100 of the model's 600 genes" in caplog.text
    assert X[:, :100].nnz == 0 and X.shape == (adata.n_obs, 600)


def test_cls_attention_equals_torch_multihead_attention():
    """The block's attention (and the ``<cls>`` row the model reports) against
    ``torch.nn.MultiheadAttention`` loaded with the same projection weights."""
    model = _tiny_model(seed=1).eval()
    block = model.blocks[-1]
    d = model.config.embed_dim
    mha = torch.nn.MultiheadAttention(d, model.config.num_heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(block.qkv.weight)
        mha.in_proj_bias.copy_(block.qkv.bias)
        mha.out_proj.weight.copy_(block.proj.weight)
        mha.out_proj.bias.copy_(block.proj.bias)
    x = torch.rand(5, 7)
    with torch.no_grad():
        h = torch.cat([model.cls_token.expand(5, -1, -1), model.embed(x)], 1)
        normed = block.norm1(h)
        want_out, want_att = mha(normed, normed, normed, need_weights=True, average_attn_weights=True)
        got_h, got_att = block(h)
        torch.testing.assert_close(got_att.mean(1), want_att, rtol=1e-5, atol=1e-6)
        after_attn = h + want_out
        torch.testing.assert_close(got_h, after_attn + block.mlp(block.norm2(after_attn)), rtol=1e-5, atol=1e-5)
        out = model(x, output_attentions=True)
        torch.testing.assert_close(out.cls_attention, want_att[:, 0, 1:], rtol=1e-5, atol=1e-6)

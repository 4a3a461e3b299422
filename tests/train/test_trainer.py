"""The training loop in one process: outputs, exported model, resume rules, switches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atacformer.models import embed_cells, load_model
from atacformer.train import TrainConfig, pretrain
from atacformer.train.checkpoint import list_checkpoints
from atacformer.train.tracking import COLUMNS, read_metrics

TINY = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}


def _cfg(data, out, **kw):
    base = dict(data=[str(data)], out=str(out), max_steps=6, batch_size=8, save_every=3, progress=False,
                max_length=48, warmup_steps=2, tensorboard=False)
    model = kw.pop("model", "atacformer")
    overrides = dict(TINY, **kw.pop("model_overrides", {}))
    if model == "masked-bin":
        overrides.update(embedding_dim=8, decoder_dim=8, decoder_hidden_size=8)
    return TrainConfig(model=model, model_overrides=overrides, **{**base, **kw})


@pytest.mark.parametrize("model", ["atacformer", "masked-bin"])
def test_run_writes_metrics_checkpoints_and_a_loadable_model(toy_h5ad, tmp_path, model):
    summary = pretrain(_cfg(toy_h5ad, tmp_path / "run", model=model))
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert set(rows[0]) == set(COLUMNS)
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert rows[-1]["tokens_seen"] == summary["tokens_seen"] > 0
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [3, 6]
    assert summary["steps"] == 6 and summary["final_loss"] == rows[-1]["loss"]
    m = load_model(tmp_path / "run" / "model")
    assert m.vocab is not None
    import anndata as ad

    X = ad.read_h5ad(toy_h5ad).X
    emb = embed_cells(m, X)
    assert emb.shape == (X.shape[0], 16) and np.isfinite(emb).all()


def test_exported_weights_are_the_trained_weights(toy_corpus, tmp_path):
    pretrain(_cfg(toy_corpus, tmp_path / "run"))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "step-00000006.pt", weights_only=True)
    exported = load_model(tmp_path / "run" / "model").state_dict()
    assert set(exported) == set(ckpt["model"])
    for k, v in ckpt["model"].items():
        assert torch.equal(exported[k], v), k


def test_new_run_refuses_a_folder_with_checkpoints_and_resume_checks_settings(toy_corpus, tmp_path):
    out = tmp_path / "run"
    pretrain(_cfg(toy_corpus, out, max_steps=3))
    with pytest.raises(ValueError, match="--resume"):
        pretrain(_cfg(toy_corpus, out, max_steps=3))
    with pytest.raises(ValueError, match="lr"):
        pretrain(_cfg(toy_corpus, out, max_steps=6, lr=0.5, resume=True))
    # a longer run continues from step 3; unset resumable settings come from the saved run
    cfg = _cfg(toy_corpus, out, max_steps=6, resume=True)
    cfg.save_every = None
    summary = pretrain(cfg)
    assert summary["resumed_from"] == 3 and summary["steps"] == 6
    assert [r["step"] for r in read_metrics(out / "metrics.csv")] == list(range(1, 7))


@pytest.mark.parametrize("recipe", ["profile", "rtd", "rtd-contrastive", "lsi-init-contrastive"])
def test_resume_in_process_equals_uninterrupted(toy_corpus, tmp_path, recipe):
    """Resume a run from its step-4 checkpoint (later checkpoints removed, as if it had died
    after step 4): the same losses and final weights as the uninterrupted run, across an
    epoch boundary (48 cells / 8 = 6 steps per epoch), with dropout on, for every objective
    and quality switch (hidden tokens, frequency replacements, two views, LSI start)."""
    kw = dict(max_steps=9, save_every=2, keep_checkpoints=10, model_overrides={"dropout": 0.2}, recipe=recipe)
    pretrain(_cfg(toy_corpus, tmp_path / "a", **kw))
    pretrain(_cfg(toy_corpus, tmp_path / "b", **kw))
    for step, path in list_checkpoints(tmp_path / "b"):
        if step > 4:
            path.unlink()
    summary = pretrain(_cfg(toy_corpus, tmp_path / "b", **kw, resume=True))
    assert summary["resumed_from"] == 4
    a = read_metrics(tmp_path / "a" / "metrics.csv")
    b = read_metrics(tmp_path / "b" / "metrics.csv")
    assert [r["step"] for r in b] == list(range(1, 10))
    assert a[-1]["epoch"] == 1
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=0, atol=1e-6)
    wa = load_model(tmp_path / "a" / "model").state_dict()
    wb = load_model(tmp_path / "b" / "model").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_workers_do_not_change_the_run(toy_corpus, tmp_path):
    pretrain(_cfg(toy_corpus, tmp_path / "w0", max_steps=4))
    pretrain(_cfg(toy_corpus, tmp_path / "w2", max_steps=4, num_workers=2))
    a, b = (read_metrics(tmp_path / d / "metrics.csv") for d in ("w0", "w2"))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]


@pytest.mark.parametrize("switches", [
    {"closed_bin_sampling": True, "decoder": "cross_attention"},
    {"embedding": "full", "decoder_input": "full", "class_embedding": True},
])
def test_masked_bin_switches_train(toy_h5ad, tmp_path, switches):
    summary = pretrain(_cfg(toy_h5ad, tmp_path / "run", model="masked-bin", max_steps=3, supervised=True,
                            activation_checkpointing=True, model_overrides=switches))
    assert np.isfinite(summary["final_loss"])
    cfg = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert cfg["num_cell_types"] == 2 and all(cfg[k] == v for k, v in switches.items())


def test_eos_per_region_class(toy_h5ad, tmp_path):
    genes = tmp_path / "genes.bed"
    genes.write_text("chr1\t1200\t60000\tg1\t0\t+\nchr2\t100000\t200000\tg2\t0\t-\n")
    pretrain(_cfg(toy_h5ad, tmp_path / "run", model="masked-bin", max_steps=2, group_by="class", genes=str(genes)))
    m = load_model(tmp_path / "run" / "model")
    assert m.config.group_names == ["promoter", "gene_body", "intergenic"]
    assert set(m.bin_groups.unique().tolist()) == {0, 1, 2}


def test_padded_batching_pads_more(toy_corpus, tmp_path):
    b = pretrain(_cfg(toy_corpus, tmp_path / "b", max_steps=6, batching="bucket"))
    p = pretrain(_cfg(toy_corpus, tmp_path / "p", max_steps=6, batching="padded"))
    assert b["padding"] < 0.1 < p["padding"]


@pytest.mark.gpu
def test_bf16_on_cuda(toy_corpus, tmp_path):
    summary = pretrain(_cfg(toy_corpus, tmp_path / "run", device="cuda", max_steps=3))
    assert summary["device"].startswith("cuda") and np.isfinite(summary["final_loss"])

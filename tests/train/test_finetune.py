"""Fine-tuning through the one training loop: objectives, gradient reversal, triplet mining,
LoRA and freezing, exact resume, folders, and bad labels."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from atacformer.models import (
    AtacformerForFinetuning, embed_cells, load_model, mine_triplets, predict_label_probabilities, reverse_gradient,
)
from atacformer.train import TrainConfig, pretrain
from atacformer.train.checkpoint import list_checkpoints
from atacformer.train.tracking import read_metrics

QUIET = dict(progress=False, tensorboard=False)


# -- pieces -------------------------------------------------------------------------------------
@pytest.mark.parametrize("strength", [1.0, 0.3])
def test_gradient_reversal_flips_the_gradient(strength):
    torch.manual_seed(0)
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    (w * reverse_gradient(x, strength)).pow(2).sum().backward()
    reversed_grad = x.grad.clone()
    x.grad = None
    (w * x).pow(2).sum().backward()  # the same function without the layer
    torch.testing.assert_close(reversed_grad, -strength * x.grad)
    assert torch.equal(reverse_gradient(x, strength), x)  # identity forward


def test_batch_hard_mining_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(40, 6, generator=g)
    labels = torch.randint(0, 4, (40,), generator=g)
    labels[[3, 17]] = -100  # unknown labels are never anchors, positives or negatives
    a, p, n = mine_triplets(z, labels, "batch-hard")
    d = np.linalg.norm(z[:, None].numpy() - z[None].numpy(), axis=-1)
    lab = labels.numpy()
    expected = []
    for i in range(40):
        if lab[i] < 0:
            continue
        pos = [j for j in range(40) if j != i and lab[j] == lab[i]]
        neg = [j for j in range(40) if lab[j] >= 0 and lab[j] != lab[i]]
        if pos and neg:
            expected.append((i, max(pos, key=lambda j: d[i, j]), min(neg, key=lambda j: d[i, j])))
    assert list(zip(a.tolist(), p.tolist(), n.tolist())) == expected


@pytest.mark.parametrize("mining", ["semi-hard", "random"])
def test_random_and_semi_hard_picks_are_valid(mining):
    g = torch.Generator().manual_seed(2)
    z = torch.randn(64, 4, generator=g)
    labels = torch.randint(0, 3, (64,), generator=g)
    draws = torch.rand(64, 2, generator=g)
    a, p, n = mine_triplets(z, labels, mining, margin=1.0, draws=draws)
    assert len(a) == 64
    assert (labels[a] == labels[p]).all() and (a != p).all() and (labels[a] != labels[n]).all()
    if mining == "semi-hard":
        d = torch.cdist(z, z)
        d_ap, d_an = d[a, p], d[a, n]
        farther = (d[a] > d_ap[:, None]) & (labels[None] != labels[a][:, None]) & \
            (d[a] < d_ap[:, None] + 1.0)
        has_semi = farther.any(1)
        assert (d_an[has_semi] > d_ap[has_semi]).all() and (d_an[has_semi] < d_ap[has_semi] + 1.0).all()
    # the same draws give the same triplets
    a2, p2, n2 = mine_triplets(z, labels, mining, margin=1.0, draws=draws)
    assert torch.equal(p, p2) and torch.equal(n, n2)


# -- on real cells ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def schep(schep_h5ad):
    a = ad.read_h5ad(schep_h5ad)
    rng = np.random.default_rng(0)
    a.obs["batch"] = np.where(rng.random(a.n_obs) < 0.5, "b1", "b2")
    return a


@pytest.fixture(scope="module")
def base_model(schep, tmp_path_factory):
    """The default model of the Schep cells, as initialised from their statistics (0 steps)."""
    out = tmp_path_factory.mktemp("base") / "run"
    pretrain(TrainConfig(out=str(out), max_steps=0, **QUIET), data=schep)
    return out / "model"


@pytest.fixture(scope="module")
def layered_base(schep, tmp_path_factory):
    """A base model with two attention layers (the debug preset's rtd model, 0 steps)."""
    out = tmp_path_factory.mktemp("layered") / "run"
    pretrain(TrainConfig(out=str(out), preset="debug", recipe="rtd", max_steps=0, **QUIET), data=schep)
    return out / "model"


@pytest.mark.parametrize("objective", ["triplet", "classify", "batch-adversarial"])
def test_each_objective_lowers_its_loss_on_real_cells(schep, base_model, tmp_path, objective):
    out = tmp_path / objective
    # from an untrained base, unit-length cells start almost alike: triplets need a larger step
    lr = 1e-2 if objective == "triplet" else 2e-3
    summary = pretrain(TrainConfig(out=str(out), init_from=str(base_model), objective=objective, batch_key="batch",
                                   max_steps=40, batch_size=64, lr=lr, **QUIET), data=schep)
    losses = [r["loss"] for r in read_metrics(out / "metrics.csv")]
    assert len(losses) == 40 and np.isfinite(losses).all()
    # batch-adversarial: a minimax sum (the reversed batch term does not fall); its profile part does
    assert np.mean(losses[-5:]) < (0.95 if objective == "batch-adversarial" else 0.9) * np.mean(losses[:5]), losses
    model = load_model(out / "model")
    assert isinstance(model, AtacformerForFinetuning) and model.config.finetune_objective == objective
    key = "batch_names" if objective == "batch-adversarial" else "label_names"
    want = ["b1", "b2"] if objective == "batch-adversarial" else sorted(schep.obs["cell_type"].unique())
    assert getattr(model.config, key) == want
    assert summary["steps"] == 40


def test_finetuned_folder_round_trips_and_its_head_predicts(schep, base_model, tmp_path):
    out = tmp_path / "cls"
    pretrain(TrainConfig(out=str(out), init_from=str(base_model), objective="classify", max_steps=60,
                         batch_size=64, lr=2e-3, **QUIET), data=schep)
    model = load_model(out / "model")
    model.save_pretrained(tmp_path / "copy")
    again = load_model(tmp_path / "copy")
    X = schep.X
    np.testing.assert_array_equal(embed_cells(model, X), embed_cells(again, X))
    proba = predict_label_probabilities(again, X)
    assert proba.shape == (schep.n_obs, 12)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    # trained on these cells, the head must know most of them (chance: 1/12)
    pred = np.asarray(again.config.label_names)[proba.argmax(1)]
    assert (pred == schep.obs["cell_type"].to_numpy()).mean() > 0.5


def test_annotate_with_the_head_of_a_model_fine_tuned_on_the_reference_half(schep, base_model, tmp_path):
    from atacformer import tools as tl

    rng = np.random.default_rng(0)
    ref = np.zeros(schep.n_obs, bool)
    for c in schep.obs["cell_type"].unique():
        idx = rng.permutation(np.flatnonzero(schep.obs["cell_type"].to_numpy() == c))
        ref[idx[:25]] = True
    out = tmp_path / "cls"
    pretrain(TrainConfig(out=str(out), init_from=str(base_model), objective="classify", max_steps=120,
                         batch_size=64, lr=2e-3, **QUIET), data=schep[ref].copy())
    query = schep[~ref].copy()
    scores = tl.annotate(query, load_model(out / "model"), min_confidence=0.0, truth_key="cell_type")
    # the head's macro-F1 on the held-out half (chance 1/12): measured 0.66
    assert scores["macro_f1"] > 0.55, scores["macro_f1"]
    assert set(query.obs["predicted_label"].cat.categories) <= set(schep.obs["cell_type"]) | {"unassigned"}


def test_lora_trains_only_adapters_and_merged_equals_unmerged(schep, layered_base, tmp_path):
    out = tmp_path / "lora"
    pretrain(TrainConfig(out=str(out), init_from=str(layered_base), objective="triplet", lora_rank=4, max_steps=8,
                         batch_size=32, lr=5e-3, **QUIET), data=schep)
    base = load_model(layered_base).state_dict()
    tuned = load_model(out / "model")
    assert tuned.config.lora["rank"] == 4 and tuned.config.lora["targets"] == ["qkv", "out_proj", "linear1",
                                                                               "linear2"]
    state = tuned.state_dict()
    lora_b = [k for k in state if "lora_B" in k]
    assert lora_b and any(state[k].abs().sum() > 0 for k in lora_b)  # the adapters trained
    for k, v in state.items():  # and nothing else of the backbone moved
        if k.startswith("atacformer.") and "lora_" not in k:
            assert torch.equal(v, base[k.replace(".base_layer", "")]), k
    merged = load_model(out / "model", merge_adapters=True)
    assert merged.config.lora is None and not any("lora_" in k for k in merged.state_dict())
    X = schep.X[:100]
    np.testing.assert_allclose(embed_cells(merged, X), embed_cells(tuned, X), rtol=0, atol=1e-5)


def test_lora_on_an_encoder_without_layers_adapts_the_token_table(schep, base_model, tmp_path):
    out = tmp_path / "lora0"
    pretrain(TrainConfig(out=str(out), init_from=str(base_model), objective="classify", lora_rank=2, max_steps=5,
                         batch_size=64, **QUIET), data=schep)
    tuned = load_model(out / "model")
    assert tuned.config.lora["targets"] == ["token_embeddings"]
    base = load_model(base_model).state_dict()
    k = "atacformer.embeddings.token_embeddings.weight"
    assert torch.equal(tuned.state_dict()[k.replace(".weight", ".base_layer.weight")], base[k])
    X = schep.X[:50]
    np.testing.assert_allclose(embed_cells(load_model(out / "model", merge_adapters=True), X),
                               embed_cells(tuned, X), rtol=0, atol=1e-5)


def test_freeze_layers_trains_only_the_last_layers(schep, layered_base, tmp_path):
    out = tmp_path / "freeze"
    pretrain(TrainConfig(out=str(out), init_from=str(layered_base), objective="triplet", freeze_layers=1,
                         max_steps=5, batch_size=32, lr=5e-3, **QUIET), data=schep)
    base = load_model(layered_base).state_dict()
    tuned = load_model(out / "model").state_dict()
    for k in base:
        if k.startswith(("atacformer.embeddings.", "atacformer.encoder.layers.0.")):
            assert torch.equal(tuned[k], base[k]), k
    moved = [k for k in base if k.startswith("atacformer.encoder.layers.1.") and not torch.equal(tuned[k], base[k])]
    assert moved


# -- exact resume, and the loop's other promises ----------------------------------------------
@pytest.mark.parametrize("objective", ["triplet", "classify", "batch-adversarial"])
def test_finetune_resume_equals_uninterrupted(toy_h5ad, tmp_path, objective):
    base = tmp_path / "base"
    tiny = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32, "dropout": 0.2}
    pretrain(TrainConfig(data=[str(toy_h5ad)], out=str(base), preset="debug", max_steps=0, model_overrides=tiny,
                         **QUIET))
    kw = dict(data=[str(toy_h5ad)], init_from=str(base / "model"), objective=objective, batch_key="cell_type",
              triplet_mining="semi-hard", max_steps=9, batch_size=8, save_every=2, keep_checkpoints=10,
              warmup_steps=2, **QUIET)
    pretrain(TrainConfig(out=str(tmp_path / "a"), **kw))
    pretrain(TrainConfig(out=str(tmp_path / "b"), **kw))
    for step, path in list_checkpoints(tmp_path / "b"):
        if step > 4:
            path.unlink()
    assert pretrain(TrainConfig(out=str(tmp_path / "b"), resume=True, **kw))["resumed_from"] == 4
    a, b = (read_metrics(tmp_path / d / "metrics.csv") for d in "ab")
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=0, atol=1e-6)
    wa, wb = (load_model(tmp_path / d / "model").state_dict() for d in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_continued_pretraining_starts_from_the_base_weights(schep, base_model, tmp_path):
    out = tmp_path / "cont"
    pretrain(TrainConfig(out=str(out), init_from=str(base_model), max_steps=0, **QUIET), data=schep)
    a, b = load_model(base_model).state_dict(), load_model(out / "model").state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("case, error, match", [
    ("unknown", KeyError, "obs\\['no_such'\\] is not in the training data"),
    ("one_class", ValueError, "one class only"),
    ("all_nan", ValueError, "no known value"),
])
def test_bad_labels_are_refused_before_anything_is_written(schep, base_model, tmp_path, case, error, match):
    a = schep[:60].copy()
    key = "no_such" if case == "unknown" else "label"
    if case == "one_class":
        a.obs["label"] = "T cell"
    elif case == "all_nan":
        a.obs["label"] = pd.Series([np.nan] * a.n_obs, index=a.obs_names, dtype=object)
    out = tmp_path / "run"
    with pytest.raises(error, match=match):
        pretrain(TrainConfig(out=str(out), init_from=str(base_model), objective="classify", label_key=key,
                             max_steps=2, **QUIET), data=a)
    assert not out.exists()


def test_some_missing_labels_are_left_out_of_the_loss(schep, base_model, tmp_path):
    a = schep.copy()
    a.obs["label"] = a.obs["cell_type"].astype(object)
    a.obs.loc[a.obs_names[::3], "label"] = np.nan
    a.obs.loc[a.obs["cell_type"].isin(["ESCs", "LCL 1"]) & (np.arange(a.n_obs) % 2 == 0), "label"] = np.nan
    out = tmp_path / "run"
    pretrain(TrainConfig(out=str(out), init_from=str(base_model), objective="classify", label_key="label",
                         max_steps=3, batch_size=64, **QUIET), data=a)
    model = load_model(out / "model")
    assert "nan" not in model.config.label_names
    # the head's loss weights are scikit-learn's "balanced" class weights of the known labels
    from sklearn.utils.class_weight import compute_class_weight

    known = a.obs["label"].dropna().astype(str).to_numpy()
    want = compute_class_weight("balanced", classes=np.array(model.config.label_names), y=known)
    np.testing.assert_allclose(model.label_weights.numpy(), want, rtol=1e-6)


def test_finetune_cli_writes_a_folder_that_embed_loads(schep_h5ad, base_model, tmp_path, cli):
    out = tmp_path / "ft"
    cli(["finetune", str(base_model), "--data", str(schep_h5ad), "--objective", "classify", "--max-steps", "3",
         "--batch-size", "32", "-o", str(out), "--no-progress"])
    assert (out / "model" / "config.json").is_file()
    emb = tmp_path / "e.h5ad"
    proc = cli(["embed", str(out), str(schep_h5ad), "-o", str(emb)])  # the run folder gives its model
    assert "using" in proc.stderr and ad.read_h5ad(emb).obsm["X_atacformer"].shape[0] == 600
    bad = cli(["finetune", str(base_model), "--data", str(schep_h5ad), "--objective", "classify", "--labels-key",
               "nope", "-o", str(tmp_path / "bad")], check=False)
    assert bad.returncode == 2 and "obs['nope']" in bad.stderr and not (tmp_path / "bad").exists()


def test_tl_finetune_takes_a_loaded_model_and_returns_the_tuned_one(schep, base_model, tmp_path):
    from atacformer import tools as tl

    tuned = tl.finetune(schep, load_model(base_model), tmp_path / "ft", objective="classify", max_steps=3,
                        batch_size=64)
    assert isinstance(tuned, AtacformerForFinetuning) and tuned.config.label_names
    assert (tmp_path / "ft" / "base" / "config.json").is_file() and (tmp_path / "ft" / "run" / "model").is_dir()
    with pytest.raises(FileExistsError):
        tl.finetune(schep, load_model(base_model), tmp_path / "ft", objective="classify", max_steps=3)

"""Atacformer (replaced-token detection): shapes, corruption, folders, invariances, training."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from atacformer.errors import VocabularyMismatchError
from atacformer.models import (
    AtacformerConfig, AtacformerForReplacedTokenDetection, AtacformerModel, ReplacedTokenCollator,
    embed_cells, load_model, replace_tokens,
)
from atacformer.vocab import Vocabulary

TINY = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_length=64)


def _model(vocab, cls=AtacformerForReplacedTokenDetection, **kw):
    torch.manual_seed(0)
    return cls(AtacformerConfig.for_vocab(vocab, **{**TINY, **kw}), vocab=vocab).eval()


RTD_VARIANTS = [{}, {"head": "linear"}, {"use_position_embeddings": True},
                {"norm_first": False, "activation": "relu"}, {"replace_prob": 0.15}]


@pytest.mark.parametrize("kw", RTD_VARIANTS)
def test_shapes(tiny_vocab, random_cells, kw):
    model = _model(tiny_vocab, **kw)
    batch = ReplacedTokenCollator(model.config, seed=0)(random_cells)
    out = model(**batch)
    assert out.logits.shape == batch["input_ids"].shape == (6, 40)
    assert out.hidden_states.shape == (6, 40, 32) and out.loss.ndim == 0
    assert embed_cells(model, random_cells).shape == (6, 32)


def test_replace_tokens_statistics():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 1000, (64, 500), generator=g)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[:, 400:] = False
    new, labels = replace_tokens(ids, mask, 0.45, n_regions=1000, generator=g)
    assert (labels[:, 400:] == -100).all() and torch.equal(new[:, 400:], ids[:, 400:])
    real = labels[:, :400]
    assert torch.equal(real == 1, new[:, :400] != ids[:, :400])
    rate = real.float().mean().item()
    assert abs(rate - 0.45 * (1 - 1 / 1000)) < 0.01  # a draw equal to the original is not "replaced"
    assert int(new.max()) < 1000


def test_base_hg38_preset_architecture():
    cfg = AtacformerConfig.base_hg38()
    assert (cfg.vocab_size, cfg.n_regions, cfg.pad_token_id) == (890_711, 890_704, 890_705)
    with torch.device("meta"):
        model = AtacformerModel(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["embeddings.token_embeddings.weight"] == (890_711, 192)
    assert not any("position" in k for k in shapes)
    assert shapes["encoder.layers.5.self_attn.qkv.weight"] == (576, 192)
    assert shapes["encoder.layers.5.linear1.weight"] == (768, 192)
    assert "encoder.layers.6.linear1.weight" not in shapes and "encoder.norm.weight" not in shapes
    layer = model.encoder.layers[0]
    assert not layer.norm_first and isinstance(layer.activation, torch.nn.ReLU)
    assert layer.dropout.p == 0.1 and layer.self_attn.num_heads == 8
    # 890,711 x 192 embedding + 6 x (4 d^2 + 2 d f + biases and norms)
    d, f = 192, 768
    per_layer = 4 * d * d + 4 * d + 2 * d * f + d + f + 4 * d
    assert sum(p.numel() for p in model.parameters()) == 890_711 * d + 6 * per_layer


def test_save_load_roundtrip(tmp_path, tiny_vocab, random_cells):
    model = _model(tiny_vocab)
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["model_type"] == "atacformer_rtd" and meta["vocab_hash"] == tiny_vocab.hash
    assert meta["architectures"] == ["AtacformerForReplacedTokenDetection"]
    loaded = AtacformerForReplacedTokenDetection.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config and loaded.vocab == tiny_vocab
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    batch = ReplacedTokenCollator(model.config, seed=0)(random_cells)
    torch.testing.assert_close(model(**batch).logits, loaded(**batch).logits, rtol=0, atol=0)
    auto = load_model(tmp_path / "m")
    assert type(auto) is AtacformerForReplacedTokenDetection
    # a backbone loads from the task folder, and a task model from a backbone folder
    base = AtacformerModel.from_pretrained(tmp_path / "m")
    np.testing.assert_array_equal(embed_cells(base, random_cells), embed_cells(model, random_cells))
    base.save_pretrained(tmp_path / "b")
    assert type(load_model(tmp_path / "b")) is AtacformerModel
    task = AtacformerForReplacedTokenDetection.from_pretrained(tmp_path / "b")
    np.testing.assert_array_equal(embed_cells(task, random_cells), embed_cells(model, random_cells))


def test_load_refuses_another_vocabulary(tmp_path, tiny_vocab):
    model = _model(tiny_vocab)
    d = model.save_pretrained(tmp_path / "m")
    other = Vocabulary(tiny_vocab.chroms, tiny_vocab.starts + 10, tiny_vocab.ends + 10)
    shutil.copytree(d, tmp_path / "swapped")
    other.save(tmp_path / "swapped")
    with pytest.raises(VocabularyMismatchError, match="not the one the model was saved with"):
        AtacformerForReplacedTokenDetection.from_pretrained(tmp_path / "swapped")
    # a vocabulary of another size, with no recorded hash to compare against
    shutil.copytree(d, tmp_path / "resized")
    meta = json.loads((tmp_path / "resized" / "config.json").read_text())
    meta["vocab_hash"] = None
    (tmp_path / "resized" / "config.json").write_text(json.dumps(meta))
    Vocabulary(other.chroms[:90], other.starts[:90], other.ends[:90]).save(tmp_path / "resized")
    with pytest.raises(VocabularyMismatchError, match="vocab_size 107"):
        load_model(tmp_path / "resized")


def test_hub_id_through_snapshot_download_offline(tmp_path, tiny_vocab, random_cells):
    """A Hub id resolves through huggingface_hub's cache (offline: local_files_only)."""
    model = _model(tiny_vocab)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--someone--tiny-atacformer"
    model.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    loaded = load_model("someone/tiny-atacformer", cache_dir=tmp_path / "cache", local_files_only=True)
    np.testing.assert_array_equal(embed_cells(loaded, random_cells), embed_cells(model, random_cells))
    with pytest.raises(FileNotFoundError, match="could not be fetched"):  # offline, not cached
        load_model("someone/absent", cache_dir=tmp_path / "cache", local_files_only=True)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "no" / "such" / "folder")


def test_padding_invariance_and_order(tiny_vocab, random_cells):
    model = _model(tiny_vocab)
    alone = np.stack([embed_cells(model, [c])[0] for c in random_cells])
    together = embed_cells(model, random_cells, batch_size=6)
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(embed_cells(model, random_cells, batch_size=4), alone, atol=1e-5, rtol=1e-5)
    # independent check: the mean of the hidden states of the cell run alone
    with torch.no_grad():
        h = model.atacformer(torch.as_tensor(random_cells[2])[None])[0]
    np.testing.assert_allclose(together[2], h.mean(0).numpy(), atol=1e-5, rtol=1e-5)


def test_embed_cells_csr_subsampling_and_empty(tiny_vocab, random_cells):
    import scipy.sparse as sp

    model = _model(tiny_vocab)
    rows = np.repeat(np.arange(len(random_cells)), [len(c) for c in random_cells])
    x = sp.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(random_cells))), shape=(6, 100))
    np.testing.assert_allclose(embed_cells(model, x), embed_cells(model, random_cells), atol=1e-6)
    a = embed_cells(model, random_cells, max_length=8, seed=1)
    np.testing.assert_array_equal(a, embed_cells(model, random_cells, max_length=8, seed=1))
    assert not np.allclose(a[1], embed_cells(model, random_cells)[1])  # 40 tokens cut to 8
    e = embed_cells(model, [random_cells[0], np.array([], dtype=int)])
    assert np.isfinite(e[0]).all() and np.isnan(e[1]).all()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        embed_cells(model, [np.array([5, 400])])


@pytest.mark.parametrize("kw", RTD_VARIANTS)
def test_loss_decreases_on_real_cells(schep, kw):
    """80 steps on 16 real cells (64 random tokens of each per step): the loss falls below
    the best loss a model ignoring the tokens can reach."""
    vocab, x, _ = schep
    torch.manual_seed(0)
    cfg = AtacformerConfig.for_vocab(vocab, **{**TINY, "max_length": 64, **kw}, dropout=0.0)
    model = AtacformerForReplacedTokenDetection(cfg, vocab=vocab)
    coll = ReplacedTokenCollator(cfg, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        loss = model(**coll(x[:16])).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():  # 20 fresh corruptions: a low-noise estimate of the final loss
        final = np.mean([model(**coll(x[:16])).loss.item() for _ in range(20)])
    p = cfg.replace_prob * (1 - 1 / vocab.n_regions)
    label_blind = -(p * np.log(p) + (1 - p) * np.log(1 - p))  # best loss ignoring the tokens
    assert np.mean(losses[-10:]) < np.mean(losses[:5]) - 0.02, losses
    assert final < label_blind - 0.005, (final, label_blind, losses)

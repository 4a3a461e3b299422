"""The masked-bin model: every variant's shapes, folders, decoder maths, training."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from atacformer.errors import VocabularyMismatchError
from atacformer.models import MaskedBinForPretraining, MaskedBinModel, embed_cells, load_model
from atacformer.vocab import Vocabulary

TINY = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, embedding_dim=16,
            decoder_dim=16, decoder_hidden_size=24, max_length=64)
CLASS_NAMES = ["promoter", "intron", "intergenic", "enhancer"]

VARIANTS = {
    "default": {},
    "full_embedding": {"embedding": "full"},
    "full_decoder_input": {"decoder_input": "full"},
    "full_both": {"embedding": "full", "decoder_input": "full"},
    "cross_attention": {"decoder": "cross_attention", "cross_attention_layers": 2},
    "class_eos": {"_classes": True},
    "class_embedding": {"class_embedding": True},
    "genomic_positions": {"position_encoding": "genomic", "position_resolution": 20_000},
    "dna": {"_dna": 8},
    "supervised": {"num_organs": 3, "num_cell_types": 5},
    "closed_sampling": {"closed_bin_sampling": True, "closed_bins_per_open": 2.0},
    "no_mask": {"mask_ratio": 0.0},
    "post_ln_relu": {"norm_first": False, "activation": "relu"},
}


def build(vocab, variant=(), seed=0, **extra):
    kw = {**TINY, **dict(variant), **extra}
    classes, dna = kw.pop("_classes", False), kw.pop("_dna", 0)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    args = {}
    if classes:
        args["bin_classes"] = rng.integers(0, len(CLASS_NAMES), vocab.n_regions)
        args["class_names"] = CLASS_NAMES
    if dna:
        args["dna_embeddings"] = rng.normal(size=(vocab.n_regions, dna)).astype(np.float32)
    return MaskedBinForPretraining.from_vocab(vocab, **args, **kw).eval()


def batch_for(model, cells, seed=0, labels=False):
    items = cells
    if labels:
        items = [{"input_ids": c, "organ": i % 3, "cell_type": i % 5} for i, c in enumerate(cells)]
    return model.collator(seed=seed)(items)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_shapes(tiny_vocab, random_cells, name):
    model = build(tiny_vocab, VARIANTS[name])
    g = model.config.n_groups
    assert g == (4 if name == "class_eos" else 3)
    batch = batch_for(model, random_cells, labels=name == "supervised")
    out = model(**batch, return_logits=True)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.group_states.shape == (6, g, 32)
    assert out.logits.shape == (6, 100, 3)
    assert out.hidden_states.shape == (*batch["input_ids"].shape, 32)
    if name == "supervised":
        assert out.organ_logits.shape == (6, 3) and out.cell_type_logits.shape == (6, 5)
        want = out.decoder_loss + out.organ_loss + out.cell_type_loss
        torch.testing.assert_close(out.loss, want)
    for pooling in ("cls", "mean"):
        assert embed_cells(model, random_cells, pooling=pooling).shape == (6, 32)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_save_load_roundtrip(tmp_path, tiny_vocab, random_cells, name):
    model = build(tiny_vocab, VARIANTS[name])
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["model_type"] == "atacformer_masked_bin" and meta["vocab_hash"] == model.vocab.hash
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is MaskedBinForPretraining and loaded.config == model.config
    assert loaded.vocab == model.vocab
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    batch = batch_for(model, random_cells, labels=name == "supervised")
    a, b = model(**batch, return_logits=True), loaded(**batch, return_logits=True)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    assert a.loss.item() == b.loss.item() or model.config.closed_bin_sampling
    base = MaskedBinModel.from_pretrained(tmp_path / "m")
    np.testing.assert_array_equal(embed_cells(base, random_cells), embed_cells(model, random_cells))


def _naive_loss(model, out, batch):
    """Cross-entropy over every (cell, bin): the decoder MLP on the explicit concatenation
    [eos_g ; bin] with its unsplit first layer, labels written cell by cell."""
    dec, emb, c = model.decoder, model.masked_bin.embeddings, model.config
    n = c.n_bins
    labels = torch.zeros(len(batch["target_ids"]), n, dtype=torch.long)
    for i, (ids, states) in enumerate(zip(batch["target_ids"], batch["target_states"])):
        for t, s in zip(ids.tolist(), states.tolist()):
            if t >= 0:
                labels[i, t] = s
    if c.decoder_input == "full":
        feats = emb.token_vectors(torch.arange(n))
    elif c.embedding == "full":
        feats = dec.bin_proj(emb.bin_embeddings.weight[:n])
    else:
        feats = emb.bin_embeddings.weight[:n]
    z = dec.compress(out.group_states)  # (B, G, w)
    groups = emb.bin_groups
    x = torch.cat([z[:, groups], feats.unsqueeze(0).expand(len(z), -1, -1)], dim=-1)
    w, bias = dec.first_layer()
    logits = dec.out(dec.act(F.linear(x, w, bias)))
    return F.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1)), logits


@pytest.mark.parametrize("name", ["default", "full_embedding", "full_both", "cross_attention",
                                  "class_eos"])
def test_chunked_decoder_equals_naive(tiny_vocab, random_cells, name):
    model = build(tiny_vocab, VARIANTS[name], dropout=0.0, decoder_chunk_size=7).train()
    batch = batch_for(model, random_cells)
    out = model(**batch)
    out.loss.backward()
    chunked = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    out2 = model(**{k: v for k, v in batch.items() if not k.startswith("target")})
    naive, naive_logits = _naive_loss(model, out2, batch)
    naive.backward()
    torch.testing.assert_close(out.loss, naive, atol=1e-6, rtol=1e-5)
    assert chunked.keys() == {k for k, p in model.named_parameters() if p.grad is not None}
    for k, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(chunked[k], p.grad, atol=1e-6, rtol=1e-4, msg=k)
    with torch.no_grad():
        torch.testing.assert_close(model.all_logits(out2.group_states), naive_logits)


def test_closed_bin_sampling(tiny_vocab, random_cells):
    model = build(tiny_vocab, VARIANTS["closed_sampling"], dropout=0.0)
    batch = batch_for(model, random_cells)
    labels = model.state_labels(batch["target_ids"], batch["target_states"])
    cell, bin_ = model._sample_pairs(labels, torch.Generator().manual_seed(5))
    for i, t in enumerate(batch["target_ids"]):
        opened = set(t[t >= 0].tolist())
        mine = bin_[cell == i].tolist()
        assert opened <= set(mine)
        closed = [b for b in mine if b not in opened]
        assert len(closed) <= int(np.ceil(2.0 * len(opened)))
        assert len(closed) > 0.5 * len(opened)  # most draws among 100 bins hit closed ones
        assert all(labels[i, b] == 0 for b in closed)
    with torch.no_grad():
        out = model(**batch, return_logits=True, generator=torch.Generator().manual_seed(5))
        want = F.cross_entropy(out.logits[cell, bin_], labels[cell, bin_].long())
    torch.testing.assert_close(out.decoder_loss, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["default", "cross_attention"])
def test_padding_invariance(tiny_vocab, random_cells, name):
    model = build(tiny_vocab, VARIANTS[name])
    for pooling in ("cls", "mean"):
        alone = np.stack([embed_cells(model, [c], pooling=pooling)[0] for c in random_cells])
        together = embed_cells(model, random_cells, batch_size=6, pooling=pooling)
        np.testing.assert_allclose(together, alone, atol=1e-5, rtol=1e-5)
    # independent check of mean pooling: the bin positions of the cell's own sentence
    inputs = model.prepare_inputs([random_cells[1]])
    with torch.no_grad():
        h = model.masked_bin(inputs["input_ids"])[0]
    is_bin = inputs["input_ids"][0] < 100
    np.testing.assert_allclose(embed_cells(model, [random_cells[1]], pooling="mean")[0],
                               h[is_bin].mean(0).numpy(), atol=1e-5, rtol=1e-5)


def test_optional_embeddings_leave_special_tokens_alone(tiny_vocab):
    model = build(tiny_vocab, {"_dna": 8, "class_embedding": True,
                               "position_encoding": "genomic", "position_resolution": 20_000})
    emb = model.masked_bin.embeddings
    specials = torch.arange(100, len(model.vocab))[None]
    bins = torch.tensor([[0, 49, 50, 99]])
    with torch.no_grad():
        torch.testing.assert_close(emb(specials), emb.token_vectors(specials))
        groups = torch.tensor([0, 0, 1, 2])
        # genome-wide 20 kb buckets: chr1 is 250 kb long, so chr2's first bin is at 252.5 kb
        positions = torch.tensor([1 + 2500 // 20000, 1 + 247500 // 20000,
                                  1 + 252500 // 20000, 1 + (250000 + 150000 + 97500) // 20000])
        assert emb.bin_positions[bins[0]].tolist() == positions.tolist()
        dna = torch.as_tensor(np.asarray(emb.dna_table))[bins[0]]
        want = (emb.token_vectors(bins)[0] + emb.class_embeddings(groups)
                + emb.position_embeddings(positions) + emb.dna_projection(dna))
        torch.testing.assert_close(emb(bins)[0], want)


def test_class_groups_and_eos_tokens(tiny_vocab):
    model = build(tiny_vocab, VARIANTS["class_eos"])
    assert model.config.group_by == "class" and model.config.group_names == CLASS_NAMES
    assert model.vocab.special_tokens[-4:] == [f"<eos_{c}>" for c in CLASS_NAMES]
    s = model.collator(mask_ratio=0.0).sentences([np.arange(100)])[0]
    groups = model.bin_groups.numpy()
    assert (np.diff(groups[s.tokens[(s.tokens < 100)]]) >= 0).all()  # bins grouped by class
    with pytest.raises(ValueError, match="one class per bin"):
        MaskedBinForPretraining.from_vocab(tiny_vocab, bin_classes=np.zeros(5, int),
                                           class_names=CLASS_NAMES, **TINY)
    with pytest.raises(ValueError, match="class 7"):
        MaskedBinForPretraining.from_vocab(tiny_vocab, bin_classes=np.full(100, 7),
                                           class_names=CLASS_NAMES, **TINY)


def test_load_refuses_mismatched_vocabulary(tmp_path, tiny_vocab):
    model = build(tiny_vocab)
    d = model.save_pretrained(tmp_path / "m")
    shutil.copytree(d, tmp_path / "bad")
    meta = json.loads((tmp_path / "bad" / "config.json").read_text())
    meta["vocab_hash"] = None
    (tmp_path / "bad" / "config.json").write_text(json.dumps(meta))
    plain = tiny_vocab.with_special_tokens([f"<eos_{c}>" for c in ("chrX", "chr2", "chr1")])
    plain.save(tmp_path / "bad")  # same size, <eos> tokens in another order
    with pytest.raises(VocabularyMismatchError, match="<eos_chr1>"):
        load_model(tmp_path / "bad")
    Vocabulary(tiny_vocab.chroms, tiny_vocab.starts, tiny_vocab.ends + 1).save(tmp_path / "m")
    with pytest.raises(VocabularyMismatchError):
        MaskedBinForPretraining.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("name", list(VARIANTS))
def test_loss_decreases_on_real_cells(schep, name):
    vocab, x, labels = schep
    model = build(vocab, VARIANTS[name], dropout=0.0, max_length=96, num_cell_types=12).train()
    types = {t: i for i, t in enumerate(sorted(set(labels)))}
    coll = model.collator(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    dec, sup = [], []
    for _ in range(25):
        rows = rng.choice(x.shape[0], size=8, replace=False)
        items = [{"input_ids": x[r].indices, "cell_type": types[labels[r]]} for r in rows]
        out = model(**coll(items))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        dec.append(out.decoder_loss.item())
        sup.append(out.cell_type_loss.item())
    assert np.mean(dec[-5:]) < np.mean(dec[:3]) - 0.1, dec
    assert np.mean(sup[-5:]) < np.mean(sup[:3]), sup

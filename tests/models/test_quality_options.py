"""The quality options: frequency replacement, IDF pooling, LSI init, two-view contrastive."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.decomposition import TruncatedSVD

from atacformer.models import (
    AtacformerConfig, AtacformerForReplacedTokenDetection, ReplacedTokenCollator, cell_contrastive_loss,
    embed_cells, idf_weights, init_embeddings_from_lsi, lsi_loadings, replace_tokens, token_frequencies,
    two_views,
)
from atacformer.vocab import Vocabulary



@pytest.fixture
def vocab():
    return Vocabulary(["chr1"] * 100, range(0, 10000, 100), range(100, 10100, 100))


@pytest.fixture
def model(vocab):
    torch.manual_seed(0)
    cfg = AtacformerConfig.for_vocab(vocab, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                                     dropout=0.0)
    return AtacformerForReplacedTokenDetection(cfg, vocab=vocab)


def _cells(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 100)) < 0.2).astype(np.float32)
    x[: n // 2, :30] = rng.random((n // 2, 30)) < 0.7  # two groups with different open regions
    return sp.csr_matrix(x)


def test_token_frequencies_match_counts():
    x = _cells()
    f = token_frequencies(x, smoothing=0.0)
    brute = np.array([(x[:, j].toarray() > 0).sum() for j in range(100)], float)
    np.testing.assert_allclose(f, brute / brute.sum())
    assert token_frequencies(x, vocab_size=107).shape == (107,)


def test_frequency_replacement_draws_only_frequent_tokens():
    ids = torch.zeros((4, 500), dtype=torch.long)
    mask = torch.ones_like(ids, dtype=torch.bool)
    probs = torch.zeros(100)
    probs[[7, 9]] = 0.5
    g = torch.Generator().manual_seed(0)
    corrupted, labels = replace_tokens(ids, mask, 0.5, 100, g, token_probs=probs)
    changed = corrupted[labels == 1]
    assert set(changed.unique().tolist()) == {7, 9}
    assert 0.4 < float((labels == 1).float().mean()) < 0.6
    with pytest.raises(ValueError, match="expected"):
        replace_tokens(ids, mask, 0.5, 100, g, token_probs=torch.ones(5))


def test_collator_uses_token_probs(model):
    probs = np.zeros(100)
    probs[3] = 1.0
    coll = ReplacedTokenCollator(model.config, replace_prob=0.9, seed=0, token_probs=probs)
    batch = coll([np.arange(10, 60)])
    assert set(batch["input_ids"][batch["labels"] == 1].tolist()) == {3}


def test_idf_weights_formula():
    x = _cells()
    w = idf_weights(x, vocab_size=102)
    df = (x.toarray() > 0).sum(0)
    np.testing.assert_allclose(w[:100], np.where(df > 0, 40 / np.maximum(df, 1), 0), rtol=1e-6)
    assert (w[100:] == 0).all()


def test_weighted_pooling_equals_brute_force(vocab):
    torch.manual_seed(0)
    cfg = AtacformerConfig.for_vocab(vocab, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                                     dropout=0.0, pooling="idf")
    model = AtacformerForReplacedTokenDetection(cfg, vocab=vocab)
    x = _cells(6)
    w = np.random.default_rng(1).random(model.config.vocab_size).astype(np.float32)
    model.atacformer.token_idf.copy_(torch.from_numpy(w))
    got = embed_cells(model, x)
    model.eval()
    for i in range(6):
        toks = torch.as_tensor(x[i].indices, dtype=torch.long)[None]
        with torch.no_grad():
            h = model.atacformer(toks)[0].numpy()
        expect = (h * w[x[i].indices, None]).sum(0) / w[x[i].indices].sum()
        np.testing.assert_allclose(got[i], expect, rtol=1e-4, atol=1e-5)
    model.atacformer.token_idf.fill_(1.0)  # uniform weights: the plain mean
    np.testing.assert_allclose(embed_cells(model, x), embed_cells(model, x, pooling="mean"), rtol=1e-4, atol=1e-5)


def test_lsi_loadings_span_sklearn_svd():
    x = _cells()
    load = lsi_loadings(x, 5)
    m = x.copy()
    m.data[:] = 1
    # Signac's RunTFIDF(method=1), written out independently of atacformer.pp.tfidf_matrix
    tf = sp.diags(1 / np.asarray(m.sum(1)).ravel()) @ m
    idf = 40 / np.asarray(m.sum(0)).ravel().clip(1)
    t = (tf @ sp.diags(idf)).tocsr()
    nnz = np.diff(m.indptr)
    t.data = np.log1p(t.data * 0.3 * np.median(nnz[nnz > 0]))  # the default "auto" scale factor
    ref = TruncatedSVD(6, algorithm="arpack", random_state=0).fit(t).components_[1:]  # (5, regions)
    # the leading loading columns are the exact SVD's components 2 and 3 (up to sign and scale;
    # trailing ones of a randomized SVD are approximate)
    for j in range(2):
        assert abs(np.corrcoef(load[:, j], ref[j])[0, 1]) > 0.999


def test_init_embeddings_from_lsi(model):
    x = _cells()
    k = init_embeddings_from_lsi(model, x)
    table = model.atacformer.embeddings.token_embeddings.weight.detach().numpy()
    assert k == 32
    np.testing.assert_allclose(np.linalg.norm(table[:100, :k], axis=1).mean(), 1.0, rtol=1e-4)
    with pytest.raises(ValueError, match="regions"):
        init_embeddings_from_lsi(model, x[:, :50])


def test_two_views_disjoint_and_complete():
    rng = np.random.default_rng(0)
    cells = [np.arange(0, 50, 2), np.array([5]), np.arange(3)]
    a, b = two_views(cells, rng)
    for c, va, vb in zip(cells, a, b):
        if len(c) > 1:
            assert len(np.intersect1d(va, vb)) == 0 and sorted(np.r_[va, vb]) == sorted(c)
            assert len(va) and len(vb)
        else:
            assert (va == c).all() and (vb == c).all()


def test_contrastive_loss_bounds():
    z = torch.randn(8, 16)
    assert float(cell_contrastive_loss(z, z, 0.01)) < 1e-3
    same = torch.ones(8, 16)
    assert float(cell_contrastive_loss(same, same)) == pytest.approx(np.log(8), rel=1e-5)


def test_profile_loss_is_bce_over_every_region(vocab):
    from atacformer.models import AtacformerForProfileReconstruction

    torch.manual_seed(0)
    cfg = AtacformerConfig.for_vocab(vocab, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                                     dropout=0.0, depth_offset=False)
    model = AtacformerForProfileReconstruction(cfg, vocab=vocab)
    pad = cfg.pad_token_id
    ids = torch.tensor([[3, 7, pad], [1, 2, 9]])
    targets = torch.tensor([[3, 7, 50, 60], [1, 2, 9, -1]])
    out = model(ids, target_ids=targets)
    dense = torch.zeros(2, 100)
    dense[0, [3, 7, 50, 60]] = 1
    dense[1, [1, 2, 9]] = 1
    z = model.embed(ids)
    logits = z @ model.decoder.weight.T + model.decoder_bias
    expect = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), dense)
    assert float(out.loss) == pytest.approx(float(expect), rel=1e-5)
    model.init_decoder_bias(np.full(100, 0.1), depths=[4, 16])
    assert float(model.decoder_bias[0]) == pytest.approx(np.log(0.1 / 0.9), rel=1e-5)
    assert float(model.log_depth_center) == pytest.approx(np.log(8), rel=1e-5)
    # with the depth offset, every score of a cell moves by its centred log depth
    cfg2 = cfg.replace(depth_offset=True, tie_decoder=True)
    tied = AtacformerForProfileReconstruction(cfg2, vocab=vocab)
    tied.init_decoder_bias(np.full(100, 0.1), depths=[4, 16])
    out2 = tied(ids, target_ids=targets)
    z2 = tied.embed(ids)
    table = tied.atacformer.embeddings.token_embeddings.weight[:100]
    want = z2 @ table.T + tied.decoder_bias + (torch.log(torch.tensor([[4.0], [3.0]])) - np.log(8))
    torch.testing.assert_close(out2.logits, want.to(out2.logits.dtype), rtol=1e-5, atol=1e-5)


def test_profile_batcher_hides_a_fraction_and_targets_the_whole_cell(vocab):
    from atacformer.train.collate import ProfileBatcher

    cfg = AtacformerConfig.for_vocab(vocab, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                                     hide_prob=0.5, max_length=8)
    x = sp.csr_matrix(np.pad(np.ones((1, 40)), ((0, 0), (0, 60))))  # one cell: regions 0..39 open
    batch, weight = ProfileBatcher(cfg)(x, np.random.default_rng(0))
    visible = batch["input_ids"][batch["attention_mask"]]
    assert weight == 1 and len(visible) == 8  # half of 40 is 20, then the context of 8
    assert set(visible.tolist()) <= set(range(40))
    assert sorted(batch["target_ids"][0].tolist()) == list(range(40))

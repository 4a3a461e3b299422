"""Micro-batch builders: context (first / random), order (genomic / shuffled), lengths."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from atacformer.models import AtacformerConfig, MaskedBinForPretraining
from atacformer.models.masked_bin.collate_masked_bin import IN_SENTENCE, REMOVED
from atacformer.train.collate import MaskedBinBatcher, ReplacedTokenBatcher
from atacformer.vocab import Vocabulary


@pytest.fixture
def vocab():
    chroms = ["chr1"] * 60 + ["chr2"] * 40
    starts = np.r_[np.arange(60), np.arange(40)] * 5000
    return Vocabulary(chroms, starts, starts + 5000)


def _csr(cells, n):
    rows = np.repeat(np.arange(len(cells)), [len(c) for c in cells])
    return sp.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(cells))), shape=(len(cells), n))


CELLS = [np.arange(0, 100, 2), np.array([3, 61, 62]), np.arange(10, 40)]


def _rtd(vocab, **kw):
    return AtacformerConfig.for_vocab(vocab, hidden_size=16, num_layers=1, num_heads=2,
                                      intermediate_size=32, max_length=20, **kw)


def test_rtd_first_context_keeps_the_first_tokens(vocab):
    b = ReplacedTokenBatcher(_rtd(vocab, replace_prob=0.0), context="first")
    batch, weight = b(_csr(CELLS, 100), np.random.default_rng(0))
    assert batch["input_ids"][0].tolist() == CELLS[0][:20].tolist()
    assert batch["input_ids"][1, :3].tolist() == CELLS[1].tolist()
    assert weight == 20 + 3 + 20 == int(batch["attention_mask"].sum())
    assert (batch["labels"][batch["attention_mask"]] == 0).all()


def test_rtd_random_context_and_shuffled_order(vocab):
    b = ReplacedTokenBatcher(_rtd(vocab, replace_prob=0.0), context="random", order="shuffled")
    batch, _ = b(_csr(CELLS, 100), np.random.default_rng(1))
    row = batch["input_ids"][0].numpy()
    assert len(set(row.tolist())) == 20 and set(row.tolist()) <= set(CELLS[0].tolist())
    assert not (np.diff(row) > 0).all()  # not in genomic order
    g = ReplacedTokenBatcher(_rtd(vocab, replace_prob=0.0), context="random")
    assert (np.diff(g(_csr(CELLS, 100), np.random.default_rng(1))[0]["input_ids"][0].numpy()) > 0).all()


def test_rtd_corruption_rate(vocab):
    b = ReplacedTokenBatcher(_rtd(vocab, replace_prob=0.45))
    cells = [np.arange(100)] * 200
    cfg = _rtd(vocab, replace_prob=0.45).replace(max_length=100)
    batch, _ = ReplacedTokenBatcher(cfg)(_csr(cells, 100), np.random.default_rng(0))
    changed = (batch["input_ids"].numpy() != np.arange(100)).mean()
    # replaced with p = 0.45 by a uniform draw that is the original 1 time in 100
    assert abs(changed - 0.45 * 0.99) < 0.01
    assert b.effective_lengths(np.array([5, 20, 500])).tolist() == [5, 20, 20]


def _mb(vocab, **kw):
    return MaskedBinForPretraining.from_vocab(vocab, hidden_size=16, num_layers=1, num_heads=2,
                                              intermediate_size=32, embedding_dim=8, decoder_dim=8,
                                              decoder_hidden_size=8, **kw)


@pytest.mark.parametrize("context", ["first", "random"])
def test_masked_bin_context_states(vocab, context):
    model = _mb(vocab, max_length=12, mask_ratio=0.0)
    b = MaskedBinBatcher(model.config, model.bin_groups.numpy(), context=context)
    batch, weight = b(_csr(CELLS[:1], 100), np.random.default_rng(0))
    ids = batch["input_ids"][0].numpy()
    bins = ids[ids < 100]
    assert len(ids) == 12 and len(bins) == 12 - 3  # <cls> + 2 <eos>
    if context == "first":
        assert bins.tolist() == CELLS[0][:9].tolist()
    t_ids, t_states = batch["target_ids"][0].numpy(), batch["target_states"][0].numpy()
    assert sorted(t_ids.tolist()) == CELLS[0].tolist()
    in_sentence = set(t_ids[t_states == IN_SENTENCE].tolist())
    assert in_sentence == set(bins.tolist())
    assert (t_states[~np.isin(t_ids, bins)] == REMOVED).all()
    eos = batch["eos_positions"][0].numpy()
    assert ids[eos].tolist() == model.config.eos_token_ids
    assert weight == 1


def test_masked_bin_shuffle_stays_within_groups(vocab):
    model = _mb(vocab, max_length=200, mask_ratio=0.0)
    b = MaskedBinBatcher(model.config, model.bin_groups.numpy(), order="shuffled")
    g = MaskedBinBatcher(model.config, model.bin_groups.numpy())
    s = b(_csr(CELLS[:1], 100), np.random.default_rng(0))[0]["input_ids"][0].numpy()
    r = g(_csr(CELLS[:1], 100), np.random.default_rng(0))[0]["input_ids"][0].numpy()
    assert not np.array_equal(s, r)
    seg_s, seg_r = np.split(s, np.flatnonzero(s >= 100)), np.split(r, np.flatnonzero(r >= 100))
    assert [sorted(x.tolist()) for x in seg_s] == [sorted(x.tolist()) for x in seg_r]


@pytest.mark.parametrize("ratio", [0.0, 0.15])
def test_masked_bin_effective_lengths_match_batches(vocab, ratio):
    model = _mb(vocab, max_length=40, mask_ratio=ratio)
    b = MaskedBinBatcher(model.config, model.bin_groups.numpy())
    rng = np.random.default_rng(0)
    cells = [np.sort(rng.choice(100, size=k, replace=False)) for k in (1, 7, 30, 37, 60, 99)]
    for c in cells:
        batch, _ = b(_csr([c], 100), rng)
        assert batch["input_ids"].shape[1] == b.effective_lengths(np.array([len(c)]))[0]

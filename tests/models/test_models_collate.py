"""Cells -> padded batches and masked-bin sentences, checked against explicit expectations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from atacformer.models import as_token_lists, build_sentence, pad_token_lists


def test_as_token_lists_from_csr_drops_explicit_zeros_and_sorts():
    x = sp.csr_matrix((np.array([3, 0, 1, 2]), np.array([5, 2, 1, 0]), np.array([0, 3, 4])),
                      shape=(2, 6))
    got = as_token_lists(x)
    assert [t.tolist() for t in got] == [[1, 5], [0]]
    assert as_token_lists([[4, 2]])[0].tolist() == [4, 2]
    with pytest.raises(TypeError):
        as_token_lists(np.arange(3))


def test_pad_and_subsample():
    cells = [np.arange(10), np.array([3, 7]), np.arange(100, 130)]
    ids, mask = pad_token_lists(cells, pad_token_id=-5, max_length=12,
                                rng=np.random.default_rng(0))
    assert ids.shape == (3, 12) and mask.sum(1).tolist() == [10, 2, 12]
    assert ids[1, :2].tolist() == [3, 7] and (ids[1, 2:] == -5).all()
    sub = ids[2].numpy()
    assert len(set(sub)) == 12 and set(sub) <= set(range(100, 130))
    assert (np.diff(sub) > 0).all()  # genomic order kept


def test_sentence_structure_with_eos():
    groups = np.array([0] * 5 + [1] * 3 + [2] * 4)  # 12 bins, 3 groups
    eos = np.array([20, 21, 22])
    s = build_sentence(np.array([9, 1, 3, 10, 3]), groups, 3, cls_token_id=15, eos_token_ids=eos,
                       mask_ratio=0.0, max_length=100, rng=np.random.default_rng(0))
    assert s.tokens.tolist() == [15, 1, 3, 20, 21, 9, 10, 22]
    assert s.eos_positions.tolist() == [3, 4, 7]
    assert s.target_ids.tolist() == [1, 3, 9, 10] and s.target_states.tolist() == [1, 1, 1, 1]


def test_sentence_removal_and_subsampling_states():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(4), 50)
    eos = np.arange(300, 304)
    bins = np.sort(rng.choice(200, size=80, replace=False))
    s = build_sentence(bins, groups, 4, 299, eos, mask_ratio=0.15, max_length=1000, rng=rng)
    assert (s.target_states == 2).sum() == 12  # round(0.15 * 80)
    in_sent = set(s.tokens[(s.tokens < 200)].tolist())
    assert in_sent == set(s.target_ids[s.target_states == 1].tolist())
    assert s.tokens[s.eos_positions].tolist() == eos.tolist()
    # each bin sits before its own group's <eos>
    for pos, t in enumerate(s.tokens):
        if t < 200:
            assert pos < s.eos_positions[groups[t]]
            assert groups[t] == 0 or pos > s.eos_positions[groups[t] - 1]
    # longer than the context: <cls> + 4 <eos> + 20 bins, the rest state 2
    s = build_sentence(bins, groups, 4, 299, eos, mask_ratio=0.0, max_length=25, rng=rng)
    assert len(s.tokens) == 25 and (s.target_states == 1).sum() == 20
    # no <eos> in the sentence (cross-attention decoder)
    s = build_sentence(bins, groups, 4, 299, None, mask_ratio=0.0, max_length=1000, rng=rng)
    assert s.tokens[0] == 299 and s.tokens[1:].tolist() == bins.tolist() and s.eos_positions is None


def test_collator_streams_reproducible_and_distinct_per_worker(tiny_vocab, random_cells, monkeypatch):
    import types

    import torch

    from atacformer.models import AtacformerConfig, ReplacedTokenCollator

    cfg = AtacformerConfig.for_vocab(tiny_vocab, hidden_size=32, num_layers=1, num_heads=4,
                                     intermediate_size=64)
    a = ReplacedTokenCollator(cfg, seed=3)(random_cells)["input_ids"]
    b = ReplacedTokenCollator(cfg, seed=3)(random_cells)["input_ids"]
    assert torch.equal(a, b)
    streams = []
    for worker_seed in (11, 12):
        monkeypatch.setattr(torch.utils.data, "get_worker_info",
                            lambda s=worker_seed: types.SimpleNamespace(id=s - 11, seed=s))
        streams.append(ReplacedTokenCollator(cfg, seed=3)(random_cells)["input_ids"])
    assert not torch.equal(streams[0], streams[1]) and not torch.equal(streams[0], a)

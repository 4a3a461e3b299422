"""Rank/worker sharding: disjoint, complete, deterministic, checked by brute-force counting."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from atacformer.corpus import epoch_order, shard_indices

GRIDS = [(1, 1), (1, 3), (2, 2), (3, 2), (4, 1), (2, 5)]


def all_parts(n, world_size, num_workers, **kw):
    return {(r, w): shard_indices(n, r, world_size, w, num_workers, **kw)
            for r in range(world_size) for w in range(num_workers)}


@pytest.mark.parametrize("world_size, num_workers", GRIDS)
@pytest.mark.parametrize("n", [0, 1, 7, 101])
@pytest.mark.parametrize("shuffle, block_size", [(False, 1), (True, 1), (True, 4)])
def test_disjoint_and_complete_every_epoch(n, world_size, num_workers, shuffle, block_size):
    for epoch in range(3):
        parts = all_parts(n, world_size, num_workers, epoch=epoch, seed=11, shuffle=shuffle,
                          block_size=block_size)
        seen = np.bincount(np.concatenate(list(parts.values())).astype(np.int64), minlength=n)
        assert seen.tolist() == [1] * n  # every cell exactly once
        sizes = [len(p) for p in parts.values()]
        assert max(sizes) - min(sizes) <= 1  # balanced


def test_deterministic_and_changes_with_epoch_and_seed():
    a = shard_indices(1000, 1, 2, 0, 2, epoch=3, seed=5, shuffle=True)
    assert np.array_equal(a, shard_indices(1000, 1, 2, 0, 2, epoch=3, seed=5, shuffle=True))
    assert not np.array_equal(a, shard_indices(1000, 1, 2, 0, 2, epoch=4, seed=5, shuffle=True))
    assert not np.array_equal(a, shard_indices(1000, 1, 2, 0, 2, epoch=3, seed=6, shuffle=True))


def test_rank_split_does_not_depend_on_num_workers():
    for rank in range(3):
        per_rank = [np.concatenate([shard_indices(50, rank, 3, w, nw, epoch=1, shuffle=True) for w in range(nw)])
                    for nw in (1, 2, 4)]
        assert all(np.array_equal(per_rank[0], p) for p in per_rank[1:])


def test_unshuffled_parts_are_contiguous_ranges():
    parts = all_parts(10, 2, 2)
    assert [p.tolist() for p in parts.values()] == [[0, 1, 2], [3, 4], [5, 6, 7], [8, 9]]


def test_drop_last_gives_ranks_equal_counts():
    for epoch in range(4):
        per_rank = [np.concatenate([shard_indices(103, r, 4, w, 3, epoch=epoch, shuffle=True, drop_last=True)
                                    for w in range(3)]) for r in range(4)]
        assert [len(p) for p in per_rank] == [25] * 4
        cells = np.concatenate(per_rank)
        assert len(np.unique(cells)) == 100


def test_block_shuffle_keeps_blocks_contiguous():
    order = epoch_order(103, epoch=2, seed=0, shuffle=True, block_size=10)
    assert sorted(order.tolist()) == list(range(103))
    position = np.argsort(order)  # where each cell is visited
    for start in range(0, 103, 10):
        assert np.all(np.diff(position[start:start + 10]) == 1)  # a block is read as one run
    assert not np.array_equal(order, np.arange(103))


@pytest.mark.parametrize("args, match", [
    ({"rank": 2, "world_size": 2}, "rank must be in"),
    ({"worker_id": -1, "num_workers": 2}, "worker_id must be in"),
    ({"num_workers": 0}, "worker_id must be in"),
    ({"block_size": 0, "shuffle": True}, "block_size"),
])
def test_invalid_positions_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        shard_indices(10, **args)


def test_grid_union_is_independent_of_grid():
    # the same epoch order whatever the grid: concatenating parts in (rank, worker) order gives it back
    order = epoch_order(77, epoch=5, seed=3, shuffle=True)
    for ws, nw in itertools.product((1, 2, 3), (1, 2, 4)):
        parts = all_parts(77, ws, nw, epoch=5, seed=3, shuffle=True)
        assert np.array_equal(np.concatenate([parts[k] for k in sorted(parts)]), order)

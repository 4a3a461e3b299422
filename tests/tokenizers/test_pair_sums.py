"""Streaming (row, column) sums against a dense brute force (hypothesis), merges forced."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atacformer._core.sums import PairSums

BLOCKS = st.lists(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 6)), max_size=40), max_size=8)


@settings(max_examples=200, deadline=None)
@given(BLOCKS, st.integers(1, 50))
def test_sums_equal_dense_brute_force(blocks, merge_min):
    s = PairSums(n_cols=7, merge_min_entries=merge_min)
    dense = np.zeros((10, 7), dtype=np.int64)
    for blk in blocks:
        r = np.array([p[0] for p in blk], dtype=np.int64)
        c = np.array([p[1] for p in blk], dtype=np.int64)
        s.add(r, c)
        np.add.at(dense, (r, c), 1)
        distinct = int((dense > 0).sum())
        assert s.n_entries <= distinct + max(merge_min, distinct)  # the output, at most twice
    m = s.csr(10)
    assert m.has_canonical_format
    assert (m.toarray() == dense).all()
    m.sort_indices()  # already sorted: scipy's check agrees
    assert (m.toarray() == dense).all()


def test_memory_follows_the_output_not_the_pairs():
    """A million pairs over 100 distinct keys: the held entries stay near the merge size."""
    s = PairSums(n_cols=10, merge_min_entries=10_000)
    rng = np.random.default_rng(0)
    peak = 0
    for _ in range(100):
        s.add(rng.integers(0, 10, 10_000), rng.integers(0, 10, 10_000))
        peak = max(peak, s.n_entries)
    assert peak <= 20_100
    assert s.csr(10).sum() == 1_000_000


def test_rows_out_of_range_and_overflow():
    s = PairSums(n_cols=3)
    s.add(np.array([5]), np.array([1]))
    with pytest.raises(ValueError, match="row 5"):
        s.csr(2)
    with pytest.raises(OverflowError):
        PairSums(n_cols=2**40).add(np.array([2**30]), np.array([0]))

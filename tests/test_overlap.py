"""The overlap kernel against a naive double loop (hypothesis), edge cases included."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from atacformer._core.overlap import IntervalIndex, bin_span_pairs, expand_ranges


def naive_pairs(rs, re_, qs, qe):
    return sorted((i, j) for i in range(len(qs)) for j in range(len(rs)) if max(qs[i], rs[j]) < min(qe[i], re_[j]))


intervals = st.lists(st.tuples(st.integers(0, 300), st.integers(0, 120)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(regions=intervals, queries=intervals, huge=st.booleans())
def test_interval_index_matches_naive(regions, queries, huge):
    if huge:  # one region spanning everything must not break exactness
        regions = regions + [(0, 10_000)]
    rs = np.array([s for s, _ in regions], dtype=np.int64)
    re_ = np.array([s + n for s, n in regions], dtype=np.int64)
    qs = np.array([s for s, _ in queries], dtype=np.int64)
    qe = np.array([s + n for s, n in queries], dtype=np.int64)
    q, r = IntervalIndex(rs, re_).query(qs, qe)
    assert sorted(zip(q.tolist(), r.tolist())) == naive_pairs(rs, re_, qs, qe)


def test_touching_and_zero_length():
    idx = IntervalIndex(np.array([100, 200, 150]), np.array([200, 300, 150]))  # last is zero-length
    # a query ending at a region's start, one starting at a region's end, a zero-length query
    q, r = idx.query(np.array([50, 300, 120, 199]), np.array([100, 350, 120, 201]))
    assert sorted(zip(q.tolist(), r.tolist())) == [(3, 0), (3, 1)]


def test_empty_index_and_queries():
    q, r = IntervalIndex(np.array([], np.int64), np.array([], np.int64)).query(np.array([1]), np.array([5]))
    assert len(q) == len(r) == 0
    q, r = IntervalIndex(np.array([1]), np.array([5])).query(np.array([], np.int64), np.array([], np.int64))
    assert len(q) == 0


@settings(max_examples=300, deadline=None)
@given(queries=intervals, bin_size=st.integers(1, 50))
def test_bin_span_pairs_matches_naive(queries, bin_size):
    qs = np.array([s for s, _ in queries], dtype=np.int64)
    qe = np.array([s + n for s, n in queries], dtype=np.int64)
    q, b = bin_span_pairs(qs, qe, bin_size)
    want = sorted((i, k) for i in range(len(qs)) for k in range(0, 500 // bin_size + 2)
                  if max(qs[i], k * bin_size) < min(qe[i], (k + 1) * bin_size))
    assert sorted(zip(q.tolist(), b.tolist())) == want


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 5)), max_size=20))
def test_expand_ranges(ranges):
    lo = np.array([a for a, _ in ranges], dtype=np.int64)
    hi = np.array([a + n for a, n in ranges], dtype=np.int64)
    o, v = expand_ranges(lo, hi)
    want = [(i, x) for i in range(len(lo)) for x in range(lo[i], hi[i])]
    assert list(zip(o.tolist(), v.tolist())) == want


@settings(max_examples=200, deadline=None)
@given(queries=intervals, bin_size=st.integers(1, 50), insertion=st.booleans(),
       drop=st.lists(st.booleans(), min_size=40, max_size=40))
def test_fused_bin_pairs_matches_numpy_path(queries, bin_size, insertion, drop):
    from atacformer._core.binning import bin_pairs

    qs = np.array([s for s, _ in queries], dtype=np.int64)
    qe = np.array([s + n for s, n in queries], dtype=np.int64)
    n = len(qs)
    cells = np.where(np.array(drop[:n], dtype=bool), -1, np.arange(n) % 3).astype(np.int64)
    nb = 400 // bin_size  # bins past the chromosome end give no token
    n_cols = 7 + nb + 5
    keys = np.empty(500 * n + 16, np.int64)
    n_frag = np.zeros(3, np.int64)
    k = bin_pairs(np.zeros(n, np.int32), qs, qe, cells, np.array([7]), np.array([nb]), bin_size, insertion,
                  n_cols, keys, n_frag)
    assert k >= 0
    assert (n_frag == np.bincount(cells[cells >= 0], minlength=3)).all()
    if k > 0:  # too little room: -1 and nothing counted, so the caller can fall back
        small = np.zeros(3, np.int64)
        assert bin_pairs(np.zeros(n, np.int32), qs, qe, cells, np.array([7]), np.array([nb]), bin_size,
                         insertion, n_cols, keys[:k - 1], small) == -1
        assert small.sum() == 0
    rows, toks = keys[:k] // n_cols, keys[:k] % n_cols
    if insertion:
        keep = qe > qs
        s = np.concatenate([qs[keep], qe[keep] - 1])
        owner = np.concatenate([np.flatnonzero(keep)] * 2)
        q, b = bin_span_pairs(s, s + 1, bin_size)
        q = owner[q]
    else:
        q, b = bin_span_pairs(qs, qe, bin_size)
    ok = (cells[q] >= 0) & (b < nb)
    want = sorted(zip(cells[q][ok].tolist(), (b[ok] + 7).tolist()))
    assert sorted(zip(rows[:k].tolist(), toks[:k].tolist())) == want
    assert n_frag.tolist() == np.bincount(cells[cells >= 0], minlength=3).tolist()

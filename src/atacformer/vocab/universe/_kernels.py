"""Compiled per-base kernels of the flexible universes: the maximum-likelihood path (LH)
and the Viterbi path of the 4-state HMM, over the covered stretches of one chromosome.

States: 0 start, 1 core, 2 end, 3 background. Each stretch ``[seg_start[k], seg_end[k])`` of
the concatenated per-base arrays is decoded on its own; the work is linear in its length.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def lh_paths(cove, seg_start, seg_end, model_start, model_core, model_end, out):
    """Best path through start -> core -> end -> background, by dynamic programming.

    ``cove`` is (n, 3) per-base start / core / end coverage; ``model_*`` hold, per coverage
    value, the log10 likelihood of background (column 0) and of the track's own state
    (column 1). A state may only stay or pass to the next one (background -> start), at no
    cost. Ties go to the same state as in geniml's ``ml_universe``.
    """
    for k in range(len(seg_start)):
        a, b = seg_start[k], seg_end[k]
        n = b - a
        if n <= 0:
            continue
        mat = np.empty((n, 4))
        for i in range(n):
            s = cove[a + i, 0]
            c = cove[a + i, 1]
            e = cove[a + i, 2]
            start_b = model_start[s, 0]
            core_b = model_core[c, 0]
            end_b = model_end[e, 0]
            mat[i, 0] = model_start[s, 1] + core_b + end_b
            mat[i, 1] = start_b + model_core[c, 1] + end_b
            mat[i, 2] = start_b + core_b + model_end[e, 1]
            mat[i, 3] = start_b + core_b + end_b
        for i in range(1, n):
            for j in range(4):
                p = j - 1 if j > 0 else 3
                mat[i, j] += max(mat[i - 1, j], mat[i - 1, p])
        best = 0
        for j in range(1, 4):
            if mat[n - 1, j] > mat[n - 1, best]:
                best = j
        out[b - 1] = best
        for i in range(n - 2, -1, -1):
            nxt = out[a + i + 1]
            p = nxt - 1 if nxt > 0 else 3
            out[a + i] = p if mat[i, p] > mat[i, nxt] else nxt


@njit(cache=True)
def viterbi_paths(obs, seg_start, seg_end, log_start, log_trans, log_pmf, out):
    """Viterbi path of an HMM with independent per-track emissions.

    ``obs`` is (n, n_tracks) integer observations, ``log_pmf[state, track, value]`` the
    emission log-probabilities, ``log_start`` / ``log_trans`` natural logs (``-inf`` where a
    transition is impossible). The lattice and back-tracking follow hmmlearn's ``viterbi``
    (ties in the last column to the lowest state, ties while back-tracking to the highest),
    so both give the same path on the same numbers.
    """
    n_states = log_trans.shape[0]
    n_tracks = obs.shape[1]
    # each state's possible predecessors (a transition of probability 0 never wins)
    preds = np.zeros((n_states, n_states), np.int64)
    n_preds = np.zeros(n_states, np.int64)
    for i in range(n_states):
        for j in range(n_states):
            if log_trans[j, i] > -np.inf:
                preds[i, n_preds[i]] = j
                n_preds[i] += 1
    for k in range(len(seg_start)):
        a, b = seg_start[k], seg_end[k]
        n = b - a
        if n <= 0:
            continue
        lat = np.empty((n, n_states))
        for t in range(n):
            for i in range(n_states):
                f = 0.0
                for r in range(n_tracks):
                    f += log_pmf[i, r, obs[a + t, r]]
                if t == 0:
                    lat[0, i] = log_start[i] + f
                else:
                    m = -np.inf
                    for q in range(n_preds[i]):
                        j = preds[i, q]
                        v = lat[t - 1, j] + log_trans[j, i]
                        if v > m:
                            m = v
                    lat[t, i] = m + f
        best = 0
        for i in range(1, n_states):
            if lat[n - 1, i] > lat[n - 1, best]:
                best = i
        out[b - 1] = best
        prev = best
        for t in range(n - 2, -1, -1):
            bi = 0
            bv = -np.inf
            for i in range(n_states):
                v = lat[t, i] + log_trans[i, prev]
                if v >= bv:
                    bv = v
                    bi = i
            out[a + t] = bi
            prev = bi


@njit(cache=True)
def expand_runs(pos, val, seg_start, seg_end, out, col):
    """Write the run-length track (``pos``, ``val``) per base over the sorted, disjoint
    stretches ``[seg_start[k], seg_end[k])`` into ``out[:, col]``, stretches one after another."""
    r = 0
    n_runs = len(pos)
    o = 0
    for k in range(len(seg_start)):
        a = seg_start[k]
        b = seg_end[k]
        while r + 1 < n_runs and pos[r + 1] <= a:
            r += 1
        x = a
        while x < b:
            stop = pos[r + 1] if r + 1 < n_runs else b
            if stop > b:
                stop = b
            v = val[r]
            for i in range(x, stop):
                out[o, col] = v
                o += 1
            x = stop
            if x < b:
                r += 1


@njit(cache=True)
def path_regions(path, seg_start, seg_end):
    """Regions of a decoded path: each run of non-background states (3) inside a stretch that
    holds a core (1) and ends in the end state (2). Returns (start, end, core_start, core_end)
    with the core from the first core base to the first end base, as geniml writes them."""
    n = 0
    for i in range(len(path)):
        if path[i] != 3 and (i == 0 or path[i - 1] == 3):
            n += 1
    rs = np.empty(n, np.int64)
    re = np.empty(n, np.int64)
    cs = np.empty(n, np.int64)
    ce = np.empty(n, np.int64)
    m = 0
    o = 0
    for k in range(len(seg_start)):
        a = seg_start[k]
        L = seg_end[k] - a
        i = 0
        while i < L:
            if path[o + i] == 3:
                i += 1
                continue
            j = i
            first_core = -1
            first_end = -1
            while j < L and path[o + j] != 3:
                s = path[o + j]
                if s == 1 and first_core < 0:
                    first_core = j
                if s == 2 and first_end < 0:
                    first_end = j
                j += 1
            if first_core >= 0 and first_end >= 0 and path[o + j - 1] == 2:
                rs[m] = a + i
                re[m] = a + j
                cs[m] = a + first_core
                ce[m] = a + first_end
                m += 1
            i = j
        o += L
    return rs[:m], re[:m], cs[:m], ce[:m]


@njit(cache=True)
def _room(rs, re, cs, ce, m):
    """The four output arrays, doubled when ``m`` entries fill them."""
    if m < len(rs):
        return rs, re, cs, ce
    return (np.concatenate((rs, np.empty(m, np.int64))), np.concatenate((re, np.empty(m, np.int64))),
            np.concatenate((cs, np.empty(m, np.int64))), np.concatenate((ce, np.empty(m, np.int64))))


@njit(cache=True)
def ccf_regions(vals, seg_start, seg_end, upper, split, last_is_final):
    """Flexible-cutoff regions of stretches covered at least the lower cutoff (per-base core
    coverage ``vals``, stretches one after another): the core is where coverage exceeds
    ``upper``; cores ``split`` or more bases apart become separate regions, cut at the first
    coverage minimum between them. Coordinates, edge rules and the zero-width cores kept only
    on the chromosome's last stretch follow geniml's ``ccf_universe``."""
    rs = np.empty(16, np.int64)
    re = np.empty(16, np.int64)
    cs = np.empty(16, np.int64)
    ce = np.empty(16, np.int64)
    m = 0
    o = 0
    n_seg = len(seg_start)
    for k in range(n_seg):
        a = seg_start[k]
        n = seg_end[k] - a
        final = last_is_final and k == n_seg - 1
        first = -1
        prev = -1
        r_start = a
        c_start = 0
        for i in range(n):
            if vals[o + i] > upper:
                if first < 0:
                    first = i
                    c_start = a + i + (1 if i == 0 else 0)
                elif i - prev >= split:
                    lo = prev
                    for j in range(prev, i):
                        if vals[o + j] < vals[o + lo]:
                            lo = j
                    c_end = a + prev
                    r_end = a + lo
                    if c_start != c_end or final:
                        rs, re, cs, ce = _room(rs, re, cs, ce, m)
                        rs[m] = r_start
                        re[m] = r_end + 1
                        cs[m] = c_start
                        ce[m] = c_end
                        m += 1
                    r_start = r_end + 1
                    c_start = a + i + (1 if a + i == r_start else 0)
                prev = i
        if first >= 0:
            c_end = a + prev - (1 if prev == n - 1 else 0)
            if c_start != c_end or final:
                rs, re, cs, ce = _room(rs, re, cs, ce, m)
                rs[m] = r_start
                re[m] = a + n
                cs[m] = c_start
                ce[m] = c_end
                m += 1
        o += n
    return rs[:m], re[:m], cs[:m], ce[:m]

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
                    for j in range(n_states):
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

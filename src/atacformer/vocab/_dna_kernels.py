"""Compiled kernels of :mod:`atacformer.vocab.dna`: PSSM scanning and score thresholds (numba).

Sequences are 2-bit codes (``A C G T`` = ``0 1 2 3``; any other letter = 4) of one
chromosome span; regions are ``[start, end)`` offsets into it. Motif scanning is a
best-first branch and bound over 5-mer lookup tables and a 5-mer index of each region's
positions, bounded by the region's best score so far as well as the hit threshold, so that
the maximum and the hit count come out of one search; survivors are rescored exactly
(double sums, as Bio.motifs).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

CHUNK = 5  # bases per lookup table: 4^5 float32 scores of every 5-mer (4 KB, in L1)
MARGIN = 1e-3  # above float32 rounding of scores (|score| < 100: < 1e-5) and table sums


@njit(nogil=True, cache=True)
def chunk_codes(seq, k):
    """Big-endian ``k``-mer code starting at every position (bases past the end, and
    non-ACGT bases, read as A: windows holding those are checked apart)."""
    n = len(seq)
    out = np.zeros(n, dtype=np.uint16)
    mask = (1 << (2 * k)) - 1
    code = 0
    for i in range(n + k - 1):  # the code of the window ending at i + k - 1 is written at i
        b = seq[i] if i < n else 0
        if b > 3:
            b = 0
        code = ((code << 2) | b) & mask
        j = i - k + 1
        if j >= 0:
            out[j] = code
    return out


@njit(nogil=True, cache=True)
def _exact(seq, i, M, L):
    """Bio.motifs' window score: the double sum of the columns in order, as float32; NaN
    when the window holds a non-ACGT base."""
    sc = 0.0
    for j in range(L):
        b = seq[i + j]
        if b > 3:
            return np.float32(np.nan)
        sc += M[j, b]
    return np.float32(sc)


@njit(nogil=True, cache=True)
def _kmer_index(codes, a, n, start, pos):
    """Positions ``a .. a + n`` grouped by their 5-mer code (a counting sort): the offsets
    from ``a`` of code ``c`` are ``pos[start[c]:start[c + 1]]``, ascending (``start`` holds
    4^5 + 1 zeros on entry)."""
    n_codes = 1 << (2 * CHUNK)
    for p in range(a, a + n):
        start[codes[p] + 1] += 1
    for c in range(n_codes):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    for p in range(n):
        c = codes[a + p]
        pos[fill[c]] = p
        fill[c] += 1


@njit(nogil=True, cache=True)
def _scan_strand(seq, codes, start, pos, a, n_win, M, L, tab, order, ranked, g_col, g_shift, g_tab, g_rest, g_order, q0, nq,
                 thr, best, cnt):
    """One strand of one motif over windows ``a .. a + n_win``, best first; returns the
    updated (best, count).

    The first block's codes are visited from the highest score down (``order``), each
    through the positions where it occurs (``start`` / ``pos``); the search stops at the
    first code whose score plus the best the other blocks can add falls below the cut, as
    every later one does too. A window found is bounded block by block and scored exactly
    if it survives."""
    c1, s1 = g_col[q0], g_shift[q0]
    r1 = g_rest[q0]
    c2, s2 = np.uint64(g_col[q0 + 1]), np.uint16(g_shift[q0 + 1])  # every matrix has two blocks or more
    t2 = tab[g_tab[q0 + 1]:g_tab[q0 + 1] + (1 << (2 * CHUNK))]
    r2 = g_rest[q0 + 1]
    cut = min(thr, np.float64(best)) - MARGIN
    o = g_order[q0]
    lo, hi = c1, c1 + n_win  # offsets of the first block of a window inside the region
    for k in range(1 << (2 * CHUNK - s1)):  # the first block's w-mers
        c = np.int64(order[o + k])
        b1 = np.float64(ranked[o + k])
        if b1 + r1 <= cut:
            break
        lim = cut - r2 - b1
        for j in range(start[c << s1], start[(c + 1) << s1]):
            p = np.int64(pos[j])
            if p < lo or p >= hi:
                continue
            i = np.uint64(a + p - c1)
            b2 = t2[np.uint64(codes[i + c2] >> s2)]
            if b2 <= lim:
                continue
            bound = b1 + b2
            alive = True
            for g in range(q0 + 2, q0 + nq):
                bound += tab[g_tab[g] + (codes[i + np.uint64(g_col[g])] >> g_shift[g])]
                if bound + g_rest[g] <= cut:
                    alive = False
                    break
            if not alive:
                continue
            f = _exact(seq, i, M, L)
            if f == f:  # not NaN: only ACGT in the window
                if f >= thr:
                    cnt += 1
                if f > best:
                    best = f
                    cut = min(thr, np.float64(best)) - MARGIN
                    lim = cut - r2 - b1
    return best, cnt


@njit(nogil=True, cache=True, parallel=True)
def scan_motifs(seq, codes, starts, ends, groups, mats, mot_off, mot_len, tab, order, ranked, g_col, g_shift, g_tab, g_rest,
                g_order, q_first, q_n, thresholds, out_max, out_count):
    """Max score and number of windows scoring ``>= threshold`` of every (region, motif).

    Motif ``m`` has forward rows ``mats[mot_off[m] : + L]`` and reverse-complement rows
    ``mats[mot_off[m] + L : + 2L]`` (``L = mot_len[m]``). A window's score is Bio.motifs'
    ``calculate``: the double sum of its columns in order, rounded to float32; windows
    holding a non-ACGT base are skipped; a region without any valid window gets NaN and 0.

    Best-first branch and bound: matrix ``q = 2m + strand`` is cut into blocks of up to 5
    columns, the most informative first (block ``g`` of ``q_first[q] .. + q_n[q]``: columns
    from ``g_col[g]``, its 5-mer code shifted by ``g_shift[g]``, its table at
    ``tab[g_tab[g]:]``, ``g_rest[g]`` the best the blocks after it can add, and for a first
    block its codes by falling score at ``order[g_order[g]:]``, their scores in ``ranked``). Each region's positions are
    indexed by 5-mer once and shared by all motifs; each motif visits only the positions
    whose first block can still reach ``min(threshold, best so far)`` (less a margin above
    rounding), so that the maximum and the hits come out of one search. Regions go in groups
    ``groups[k] .. groups[k + 1]``, every motif over a group before the next, so that a
    motif's tables are read from memory once per group.
    """
    n_mot = len(thresholds)
    n_codes = 1 << (2 * CHUNK)
    for k in prange(len(groups) - 1):
        r0, r1 = groups[k], groups[k + 1]
        index_start = np.zeros((r1 - r0, n_codes + 1), dtype=np.int32)
        base = 0
        for r in range(r0, r1):
            base += ends[r] - starts[r]
        index_pos = np.empty(base, dtype=np.uint32)
        index_off = np.zeros(r1 - r0, dtype=np.int64)
        base = 0
        for r in range(r0, r1):
            n = ends[r] - starts[r]
            _kmer_index(codes, starts[r], n, index_start[r - r0], index_pos[base:base + n])
            index_off[r - r0] = base
            base += n
        for m in range(n_mot):
            L = mot_len[m]
            o = mot_off[m]
            thr = thresholds[m]
            for r in range(r0, r1):
                a = starts[r]
                n_win = ends[r] - a - L + 1
                best = np.float32(-np.inf)
                cnt = 0
                if n_win > 0:
                    for strand in range(2):
                        q = 2 * m + strand
                        best, cnt = _scan_strand(seq, codes, index_start[r - r0], index_pos[index_off[r - r0]:], a, n_win,
                                                 mats[o + strand * L:o + (strand + 1) * L], L, tab, order, ranked, g_col,
                                                 g_shift, g_tab, g_rest, g_order, q_first[q], q_n[q], thr, best, cnt)
                out_max[r, m] = best if best > -np.inf else np.float32(np.nan)
                out_count[r, m] = cnt


@njit(nogil=True, cache=True)
def _fpr_threshold(diffs, n_points, start, fpr):
    """Bio.motifs ``ScoreDistribution`` background density and ``threshold_fpr``, with the same
    floating-point operations in the same order (uniform background); returns the index."""
    dens = np.zeros(n_points)
    dens[start] = 1.0
    L = diffs.shape[0]
    for pos in range(L):
        new = np.zeros(n_points)
        for a in range(4):
            d = diffs[pos, a]
            for i in range(n_points):
                t = i + d
                if t < 0:
                    t = 0
                elif t > n_points - 1:
                    t = n_points - 1
                new[t] += dens[i] * 0.25
        dens = new
    i = n_points
    prob = 0.0
    while prob < fpr:
        i -= 1
        prob += dens[i]
    return i


@njit(nogil=True, cache=True, parallel=True)
def fpr_thresholds(all_diffs, diff_off, lengths, n_points, starts, fpr, out_index):
    """:func:`_fpr_threshold` of many motifs (``all_diffs`` rows ``diff_off[m]`` ..)."""
    for m in prange(len(lengths)):
        d = all_diffs[diff_off[m]:diff_off[m] + lengths[m]]
        out_index[m] = _fpr_threshold(d, n_points[m], starts[m], fpr)

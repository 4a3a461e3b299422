"""Compiled kernels of :mod:`atacformer.vocab.dna`: PSSM scanning and score thresholds (numba).

Sequences are 2-bit codes (``A C G T`` = ``0 1 2 3``; any other letter = 4) of one
chromosome span; regions are ``[start, end)`` offsets into it. Motif scanning is a
best-first branch and bound over 5-mer lookup tables and a 5-mer index of each region's
positions (each entry carrying its neighbouring 5-mers), bounded by the region's best score
so far as well as the hit threshold, so that the maximum and the hit count come out of one
search; survivors are rescored exactly (double sums, as Bio.motifs).
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
    """Bio.motifs' window score: the double sum of the columns in order, as float32 (the
    window holds only ACGT bases: callers check it first)."""
    sc = 0.0
    for j in range(L):
        sc += M[j, seq[i + j]]
    return np.float32(sc)


SEG = 1 << 16  # first-block positions per index segment: offsets fit 16 bits beside a neighbour code
RUN_CAP = (1 << 16) - 1  # valid-run lengths are stored capped (every motif is far shorter)


@njit(nogil=True, cache=True)
def _kmer_index(codes, a, n, s0, m, start, nbp, nbm):
    """Positions ``s0 .. s0 + m`` of the region ``codes[a : a + n]`` grouped by their 5-mer code
    (a counting sort): entry ``j`` of code ``c`` (``start[c] <= j < start[c + 1]``) packs the
    position's offset from ``s0`` (low 16 bits) with the code 5 bases after it in ``nbp`` and
    5 bases before it in ``nbm`` (high 16 bits; 0 past the region's ends), so that the second
    block of a window is read beside its position (``start`` holds 4^5 + 1 zeros on entry)."""
    n_codes = 1 << (2 * CHUNK)
    for p in range(a + s0, a + s0 + m):
        start[codes[p] + 1] += 1
    for c in range(n_codes):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    for p in range(s0, s0 + m):
        c = codes[a + p]
        j = fill[c]
        fill[c] += 1
        after = np.uint32(codes[a + p + CHUNK]) if p + CHUNK < n else np.uint32(0)
        before = np.uint32(codes[a + p - CHUNK]) if p >= CHUNK else np.uint32(0)
        nbp[j] = (after << np.uint32(16)) | np.uint32(p - s0)
        nbm[j] = (before << np.uint32(16)) | np.uint32(p - s0)


@njit(nogil=True, cache=True)
def _valid_runs(seq, a, n, run):
    """``run[p]``: the number of ACGT bases from ``a + p`` on inside the region (capped at
    ``RUN_CAP``); returns the longest."""
    nx = n
    longest = 0
    for p in range(n - 1, -1, -1):
        if seq[a + p] > 3:
            nx = p
        d = min(nx - p, RUN_CAP)
        run[p] = d
        longest = max(longest, d)
    return longest


@njit(nogil=True, cache=True)
def _scan_strand(seq, codes, start, nb, s0, run, a, n_win, M, L, tab, order, ranked, g_col, g_shift, g_tab, g_rest, g_order,
                 q0, nq, thr, best, cnt):
    """One strand of one motif over the windows of region ``a`` (``n_win`` of them) whose
    first block starts in one index segment (offset ``s0``), best first; returns the updated
    (best, count).

    The first block's codes are visited from the highest score down (``order``), each
    through the positions where it occurs (``start`` / ``nb``); the search stops at the
    first code whose score plus the best the other blocks can add falls below the cut, as
    every later one does too. The second block (a neighbour of the first) is read from the
    index entry itself; a window that survives it is checked for non-ACGT bases, bounded by
    the remaining blocks and scored exactly."""
    c1, s1 = g_col[q0], g_shift[q0]
    r1 = g_rest[q0]
    s2 = np.uint32(g_shift[q0 + 1])  # every matrix has two blocks or more
    t2 = tab[g_tab[q0 + 1]:g_tab[q0 + 1] + (1 << (2 * CHUNK))]
    r2 = g_rest[q0 + 1]
    cut = min(thr, np.float64(best)) - MARGIN
    o = g_order[q0]
    lo, hi = c1 - s0, c1 - s0 + n_win  # segment offsets of the first block of a window
    for k in range(1 << (2 * CHUNK - s1)):  # the first block's w-mers
        c = np.int64(order[o + k])
        b1 = np.float64(ranked[o + k])
        if b1 + r1 <= cut:
            break
        lim = cut - r2 - b1
        for j in range(start[c << s1], start[(c + 1) << s1]):
            v = nb[j]
            b2 = t2[(v >> np.uint32(16)) >> s2]
            if b2 <= lim:
                continue
            p = np.int64(v & np.uint32(0xFFFF))
            if p < lo or p >= hi:
                continue
            w = p + s0 - c1  # the window's offset in the region
            if run[w] < L:  # a non-ACGT base in the window
                continue
            i = np.uint64(a + w)
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
            if f >= thr:
                cnt += 1
            if f > best:
                best = f
                cut = min(thr, np.float64(best)) - MARGIN
                lim = cut - r2 - b1
    return best, cnt


@njit(nogil=True, cache=True, parallel=True)
def scan_motifs(seq, codes, starts, ends, groups, mats, mot_off, mot_len, tab, order, ranked, g_col, g_shift, g_tab, g_rest,
                g_order, q_first, q_n, q_after, thresholds, out_max, out_count):
    """Max score and number of windows scoring ``>= threshold`` of every (region, motif).

    Motif ``m`` has forward rows ``mats[mot_off[m] : + L]`` and reverse-complement rows
    ``mats[mot_off[m] + L : + 2L]`` (``L = mot_len[m]``). A window's score is Bio.motifs'
    ``calculate``: the double sum of its columns in order, rounded to float32; windows
    holding a non-ACGT base are skipped; a region without any valid window gets NaN and 0.

    Best-first branch and bound: matrix ``q = 2m + strand`` is cut into blocks of up to 5
    columns, the most selective first and a neighbour of it second (after it when
    ``q_after[q]``), the rest by selectivity (block ``g`` of ``q_first[q] .. + q_n[q]``:
    columns from ``g_col[g]``, its 5-mer code shifted by ``g_shift[g]``, its table at
    ``tab[g_tab[g]:]``, ``g_rest[g]`` the best the blocks after it can add, and for a first
    block its codes by falling score at ``order[g_order[g]:]``, their scores in ``ranked``).
    Each region's positions are indexed by 5-mer once (in segments of ``SEG``) and shared by
    all motifs; each motif visits only the positions whose first block can still reach
    ``min(threshold, best so far)`` (less a margin above rounding), so that the maximum and
    the hits come out of one search. Regions go in groups ``groups[k] .. groups[k + 1]``,
    every motif over a group before the next, so that a motif's tables are read from memory
    once per group.
    """
    n_mot = len(thresholds)
    n_codes = 1 << (2 * CHUNK)
    for k in prange(len(groups) - 1):
        r0, r1 = groups[k], groups[k + 1]
        n_seg = 0
        base = 0
        for r in range(r0, r1):
            n = max(ends[r] - starts[r], 0)
            n_seg += (n + SEG - 1) // SEG
            base += n
        seg_start = np.zeros((n_seg, n_codes + 1), dtype=np.int32)
        nbp = np.empty(base, dtype=np.uint32)
        nbm = np.empty(base, dtype=np.uint32)
        run = np.empty(base, dtype=np.uint16)
        first_seg = np.zeros(r1 - r0 + 1, dtype=np.int64)
        off = np.zeros(r1 - r0, dtype=np.int64)
        longest = np.zeros(r1 - r0, dtype=np.int64)
        sg = 0
        base = 0
        for r in range(r0, r1):
            a, n = starts[r], max(ends[r] - starts[r], 0)
            off[r - r0] = base
            first_seg[r - r0] = sg
            longest[r - r0] = _valid_runs(seq, a, n, run[base:base + n])
            for s0 in range(0, n, SEG):
                m = min(SEG, n - s0)
                _kmer_index(codes, a, n, s0, m, seg_start[sg], nbp[base + s0:base + s0 + m], nbm[base + s0:base + s0 + m])
                sg += 1
            base += n
        first_seg[r1 - r0] = sg
        for m in range(n_mot):
            L = mot_len[m]
            o = mot_off[m]
            thr = thresholds[m]
            for r in range(r0, r1):
                a = starts[r]
                n_win = ends[r] - a - L + 1
                best = np.float32(-np.inf)
                cnt = 0
                if n_win > 0 and longest[r - r0] >= L:
                    b0 = off[r - r0]
                    for strand in range(2):
                        q = 2 * m + strand
                        nb = nbp if q_after[q] else nbm
                        for sg in range(first_seg[r - r0], first_seg[r - r0 + 1]):
                            s0 = (sg - first_seg[r - r0]) * SEG
                            best, cnt = _scan_strand(seq, codes, seg_start[sg], nb[b0 + s0:], s0, run[b0:], a, n_win,
                                                     mats[o + strand * L:o + (strand + 1) * L], L, tab, order, ranked,
                                                     g_col, g_shift, g_tab, g_rest, g_order, q_first[q], q_n[q], thr,
                                                     best, cnt)
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

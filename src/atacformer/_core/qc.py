"""Per-barcode quality-control counters of a fragments block (numba, GIL released).

One pass over a parsed block adds, for every fragment of a barcode, to that barcode's
counters (indexed by the file-wide barcode id the reader already gives):

- ``n_total``: the read pairs behind it (the fifth, duplicate-count column; 1 when absent);
- ``n_nfr`` / ``n_mono``: whether its length ``end - start`` is nucleosome free (< 147 bp) or
  mono-nucleosomal (147-294 bp);
- ``n_prom``: whether it overlaps a promoter (disjoint sorted intervals per chromosome);
- ``tss_center`` / ``tss_flank``: its two Tn5 insertion sites (``start`` and ``end - 1``)
  relative to every TSS within +-2 kb, strand-aware, at the profile's centre (offsets
  -5..+5) or its two 100-bp ends (offsets -2000..-1901 and +1901..+2000), the counts that
  SnapATAC2's TSS enrichment uses; the whole +-2 kb profile is summed over all barcodes.

The fragment length histogram is kept over all barcodes. Counts of fragments per barcode
are the tokenizer's own.
"""

from __future__ import annotations

from numba import njit

FLANK = 2000  # the TSS profile covers offsets -FLANK..+FLANK
CENTER = 5  # offsets -CENTER..+CENTER are the TSS signal
EDGE = 100  # the first and last EDGE offsets are the background
NFR_MAX = 147  # nucleosome-free: length < 147 bp
MONO_MAX = 294  # mono-nucleosomal: 147 <= length <= 294 bp
MAX_LENGTH = 1000  # the length histogram's last bin holds everything longer
# columns of the per-barcode counter rows: one 64-byte row per barcode, so a fragment
# touches one cache line of them
TOTAL, NFR, MONO, PROM, TSS_FRAG, TSS_CENTER, TSS_FLANK, PEAK = range(8)
N_COUNTERS = 8


@njit(nogil=True, cache=True, inline="always")
def _add_insertion(x, lo, hi, tss_pos, tss_fwd, c, acc, profile):
    """Count insertion ``x`` against the TSSs ``lo..hi`` of its chromosome (sorted); returns
    whether any lies within +-FLANK."""
    # first TSS >= x - FLANK
    a, b = lo, hi
    while a < b:
        m = (a + b) >> 1
        if tss_pos[m] < x - FLANK:
            a = m + 1
        else:
            b = m
    hit = False
    j = a
    while j < hi and tss_pos[j] <= x + FLANK:
        d = x - tss_pos[j] if tss_fwd[j] else tss_pos[j] - x
        r = d + FLANK
        profile[r] += 1
        if d >= -CENTER and d <= CENTER:
            acc[c, TSS_CENTER] += 1
        elif r < EDGE or r > 2 * FLANK - EDGE:
            acc[c, TSS_FLANK] += 1
        hit = True
        j += 1
    return hit


@njit(nogil=True, cache=True, inline="always")
def _overlaps(iv_s, iv_e, lo, hi, s, e):
    """Whether ``[s, e)`` overlaps one of the disjoint sorted intervals ``iv_s[lo:hi]``,
    ``iv_e[lo:hi]``: the last interval starting before ``e`` does iff it ends after ``s``."""
    if lo >= hi or e <= s:
        return False
    a, b = lo, hi
    while a < b:
        m = (a + b) >> 1
        if iv_s[m] < e:
            a = m + 1
        else:
            b = m
    return a > lo and iv_e[a - 1] > s


@njit(nogil=True, cache=True)
def overlap_block(chrom_codes, starts, ends, cells, lo, hi, iv_s, iv_e, acc, col):
    """``acc[cell, col] += 1`` for every fragment overlapping one of the disjoint sorted
    intervals ``iv_s[lo[k]:hi[k]]``, ``iv_e[...]`` of its chromosome k."""
    for i in range(len(starts)):
        c = cells[i]
        if c < 0:
            continue
        s = starts[i]
        e = ends[i]
        k = chrom_codes[i]
        if _overlaps(iv_s, iv_e, lo[k], hi[k], s, e):
            acc[c, col] += 1


@njit(nogil=True, cache=True)
def qc_block(chrom_codes, starts, ends, counts, cells, tss_lo, tss_hi, tss_pos, tss_fwd,
             prom_lo, prom_hi, prom_s, prom_e, acc, profile, length_hist):
    """Add one block's fragments to the per-barcode counter rows ``acc`` (n, N_COUNTERS)
    (see the module docstring).

    ``cells[i] < 0`` skips fragment i; ``tss_lo[k]:tss_hi[k]`` (``prom_lo[k]:prom_hi[k]``)
    are chromosome k's TSSs (promoters) in the sorted arrays, empty for a chromosome
    without any. ``counts`` may be empty (every fragment then counts once).
    """
    has_counts = len(counts) > 0
    for i in range(len(starts)):
        c = cells[i]
        if c < 0:
            continue
        s = starts[i]
        e = ends[i]
        k = chrom_codes[i]
        acc[c, TOTAL] += counts[i] if has_counts else 1
        L = e - s
        if L < NFR_MAX:
            acc[c, NFR] += 1
        elif L <= MONO_MAX:
            acc[c, MONO] += 1
        length_hist[min(L, MAX_LENGTH)] += 1
        if _overlaps(prom_s, prom_e, prom_lo[k], prom_hi[k], s, e):
            acc[c, PROM] += 1
        lo, hi = tss_lo[k], tss_hi[k]
        if lo < hi and e > s:
            h1 = _add_insertion(s, lo, hi, tss_pos, tss_fwd, c, acc, profile)
            h2 = _add_insertion(e - 1, lo, hi, tss_pos, tss_fwd, c, acc, profile)
            if h1 or h2:
                acc[c, TSS_FRAG] += 1

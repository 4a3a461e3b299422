"""Fused fragment -> (cell, bin) pairs for fixed-width bin vocabularies (numba, GIL released).

One pass over a parsed block replaces a chain of numpy temporaries: per fragment it looks up
its chromosome's bin offset, emits one pair per overlapped bin (``mode="fragment"``) or per
Tn5 insertion site (``s`` and ``e - 1``, ``mode="insertion"``), and counts the fragment for
its cell. Semantics are those of :func:`atacformer._core.overlap.bin_span_pairs` (tested
against it and against brute force).
"""

from __future__ import annotations

from numba import njit


@njit(nogil=True, cache=True)
def bin_pairs(chrom_codes, starts, ends, cells, chrom_off, chrom_nbins, bin_size, insertion,
              n_cols, keys_out, n_frag):
    """Fill ``keys_out`` with (cell, token) pairs as keys ``cell * n_cols + token`` (the form
    :class:`atacformer._core.sums.PairSums` sums); returns how many, or -1 when they do not
    fit (a fragment spanning many bins), in which case nothing is counted.

    ``cells[i] < 0`` drops fragment i (barcode not in the whitelist); ``chrom_off[k] < 0``
    drops chromosome k (absent from the vocabulary). ``n_frag[cell]`` is incremented for
    every fragment of a kept cell, whatever it overlaps.
    """
    cap = len(keys_out)
    m = 0
    for i in range(len(starts)):
        c = cells[i]
        if c < 0:
            continue
        k = chrom_codes[i]
        off = chrom_off[k]
        s = starts[i]
        e = ends[i]
        if off < 0 or e <= s:
            continue
        nb = chrom_nbins[k]
        if insertion:
            b = s // bin_size
            if b < nb:
                if m >= cap:
                    return -1
                keys_out[m] = c * n_cols + off + b
                m += 1
            b = (e - 1) // bin_size
            if b < nb:
                if m >= cap:
                    return -1
                keys_out[m] = c * n_cols + off + b
                m += 1
        else:
            b = s // bin_size
            last = (e - 1) // bin_size
            while b <= last and b < nb:
                if m >= cap:
                    return -1
                keys_out[m] = c * n_cols + off + b
                m += 1
                b += 1
    for i in range(len(starts)):
        if cells[i] >= 0:
            n_frag[cells[i]] += 1
    return m


@njit(nogil=True, cache=True)
def first_past_end(chrom_codes, ends, chrom_length):
    """Index of the first fragment whose end lies past its chromosome's length, else -1."""
    for i in range(len(ends)):
        if ends[i] > chrom_length[chrom_codes[i]]:
            return i
    return -1

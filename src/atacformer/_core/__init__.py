"""Vectorised interval kernels: numpy only, no AnnData, no torch.

All intervals are 0-based half-open ``[start, end)``. Two intervals overlap when
``max(s1, s2) < min(e1, e2)``: touching ends do not overlap, and a zero-length interval
overlaps nothing.
"""

from atacformer._core.overlap import IntervalIndex, bin_span_pairs, expand_ranges

__all__ = ["IntervalIndex", "bin_span_pairs", "expand_ranges"]

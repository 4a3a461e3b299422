"""Readers: fragments files (streamed), BED/narrowPeak, peak-by-cell matrices."""

from atacformer.io.bed import read_bed
from atacformer.io.fragments import iter_fragment_blocks

__all__ = ["iter_fragment_blocks", "read_bed"]

"""Readers: fragments files (streamed), BED/narrowPeak, gene annotations, peak-by-cell matrices."""

from atacformer.io.bed import read_bed
from atacformer.io.fragments import iter_fragment_blocks
from atacformer.io.genes import read_genes

__all__ = ["iter_fragment_blocks", "read_bed", "read_genes"]

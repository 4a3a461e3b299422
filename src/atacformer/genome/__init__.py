"""Genomes: chromosome sizes and chromosome-name normalisation.

Built in: ``hg38``, ``hg19``, ``mm10``, ``mm39`` (primary assembly: autosomes, X, Y, M).
Any other genome comes from a ``.chrom.sizes`` file (``name<TAB>length`` per line).
"""

from atacformer.genome._genome import (
    BUILTIN_GENOMES,
    Genome,
    get_genome,
    is_contig,
    normalize_chrom,
    normalize_chroms,
)

__all__ = ["BUILTIN_GENOMES", "Genome", "get_genome", "is_contig", "normalize_chrom", "normalize_chroms"]

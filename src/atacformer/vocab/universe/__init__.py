"""Consensus region sets ("universes") built from a collection of region sets.

Coverage tracks of the collection (:class:`CoverageTracks`, run lengths, bigWig in and out),
then one builder per method: :func:`union`, :func:`intersection`, :func:`cc` (coverage
cutoff), :func:`ccf` (flexible cutoff), :func:`lh` (maximum likelihood) and :func:`hmm`
(Rymuza 2024; LeRoy 2025 dissertation, ch. 3). :mod:`.assess` scores a universe against a
collection; :func:`.recipe.from_cells` runs the published recipe from single cells.

Examples
--------
>>> from atacformer.vocab.universe import CoverageTracks, hmm
>>> cov = CoverageTracks.from_beds(["a.bed", "b.bed", "c.bed"], genome="hg38")  # doctest: +SKIP
>>> hmm(cov).write("universe.bed.gz")  # doctest: +SKIP
"""

from atacformer.vocab.universe.coverage import CoverageTracks, Track
from atacformer.vocab.universe.methods import METHODS, Universe, build, cc, ccf, hmm, intersection, lh, union

__all__ = ["METHODS", "CoverageTracks", "Track", "Universe", "build", "cc", "ccf", "hmm", "intersection", "lh",
           "union"]

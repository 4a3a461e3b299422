"""The published universe recipe from single cells (LeRoy 2025 dissertation, ch. 3): cells ->
clusters -> pseudo-bulk peaks per cluster (MACS3) -> coverage-cutoff and HMM universes of the
cluster peak sets -> their merge, ready to be a :class:`~atacformer.vocab.Vocabulary`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from atacformer.errors import AtacformerError
from atacformer.vocab.universe.cells import MIN_CELLS, MIN_FRAGMENTS, cluster_peak_sets
from atacformer.vocab.universe.coverage import CoverageTracks, merge_intervals
from atacformer.vocab.universe.methods import Universe, cc, hmm

log = logging.getLogger(__name__)


def merge_universes(*universes: Universe, method: str = "merged") -> Universe:
    """The union of several universes, overlapping or touching regions merged (BED3)."""
    if not universes:
        raise ValueError("give at least one universe")
    from atacformer.vocab.universe.methods import _version_key

    g = universes[0].genome
    frames = pd.concat([u.regions[["chrom", "start", "end"]] for u in universes], ignore_index=True)
    parts = []
    for chrom in sorted(frames["chrom"].unique(), key=_version_key):
        sub = frames[frames["chrom"] == chrom]
        s, e = merge_intervals(sub["start"].to_numpy(np.int64), sub["end"].to_numpy(np.int64))
        parts.append(pd.DataFrame({"chrom": chrom, "start": s, "end": e}))
    regions = pd.concat(parts, ignore_index=True) if parts else frames.iloc[:0]
    return Universe(regions, method, g, {"from": [u.method for u in universes]})


def from_cells(data, output=None, *, genome, groupby=None, n_clusters: int | None = None, resolution: float = 1.0,
               min_fragments: int = MIN_FRAGMENTS, min_cells: int = MIN_CELLS, qvalue: float = 0.01,
               cutoff: float | None = None, workdir=None, overwrite: bool = False, seed: int = 0,
               progress: bool | None = None) -> Universe:
    """Build a universe from single cells, the way the published Atacformer universe was made.

    1. Cluster the cells (Leiden on LSI of 5 kb bins; or ``groupby`` labels).
    2. Pool each cluster's fragments and call peaks with MACS3 (a peak matrix has no
       fragments: a cluster's peak set is then the peaks open in enough of its cells; see
       :func:`~atacformer.vocab.universe.cells.cluster_peak_sets`).
    3. Coverage tracks of the cluster peak sets; the coverage-cutoff (CC) and HMM universes;
       their union, overlapping regions merged.

    Parameters
    ----------
    data
        Fragments file or peak matrix (path or AnnData).
    output
        Universe BED to write (``.gz`` for gzip); ``None`` writes nothing.
    genome
        Genome name or ``.chrom.sizes`` path.
    groupby, n_clusters, resolution, min_fragments, min_cells, qvalue, seed
        Clustering and peak calling (:func:`~atacformer.vocab.universe.cells.cluster_peak_sets`).
    cutoff
        CC cutoff in cluster peak sets (default: each chromosome's mean coverage, as geniml).
    workdir
        Keep the cluster labels, peak files and coverage bigWigs here; by default they go to
        a temporary folder that is removed.

    Returns
    -------
    The merged :class:`~atacformer.vocab.universe.Universe`; ``.to_vocabulary()`` makes it a
    vocabulary to tokenize and pretrain on.

    Examples
    --------
    >>> u = from_cells("fragments.tsv.gz", "universe.bed.gz", genome="hg38")  # doctest: +SKIP
    >>> vocab = u.to_vocabulary()  # doctest: +SKIP
    """
    if output is not None:
        output = Path(os.fspath(output))
        if output.exists() and not overwrite:
            raise AtacformerError(f"{output} exists; pass overwrite=True (--overwrite) to replace it")
        if not output.parent.exists():
            raise AtacformerError(f"{output.parent}: the output folder does not exist")
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="atacformer-universe-")) if own else Path(workdir)
    try:
        work.mkdir(parents=True, exist_ok=True)
        peaks = cluster_peak_sets(data, work / "peaks", genome=genome, groupby=groupby, n_clusters=n_clusters,
                                  resolution=resolution, min_fragments=min_fragments, min_cells=min_cells,
                                  qvalue=qvalue, seed=seed, overwrite=True, progress=progress)
        beds = [p for p in peaks.values() if os.path.getsize(p) > 0]
        if len(beds) < len(peaks):
            log.warning("%d of %d clusters gave no peaks and are left out", len(peaks) - len(beds), len(peaks))
        if not beds:
            raise AtacformerError(f"{data}: no cluster gave any peaks; nothing to build a universe from")
        cov = CoverageTracks.from_beds(beds, genome=genome, clip=True, progress=progress)
        if not own:
            cov.write_bigwig(work / "coverage")
        parts = [cc(cov, cutoff, progress=progress), hmm(cov, progress=progress)]
        for u in parts:
            log.info("%s universe: %d regions", u.method, len(u))
        merged = merge_universes(*parts, method="cc+hmm")
        merged.params.update({"clusters": len(peaks), "peak_sets": len(beds), "cutoff": cutoff})
        if not len(merged):
            raise AtacformerError(f"{data}: the universe is empty; nothing written")
        if output is not None:
            merged.write(output, overwrite=True)
        return merged
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)

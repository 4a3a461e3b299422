"""Datasets: the shared real-data folder, a registry of public files, and synthetic data.

- :func:`shared_data_dir` finds ``../shared/data`` (or ``$ATACFORMER_DATA``).
- :func:`fetch` downloads a public file listed in :data:`REGISTRY` (URL + sha256) with pooch,
  into the user cache; files already present are verified, not downloaded again.
- :func:`synthetic_fragments` writes a clearly labelled synthetic fragments file with known
  cell types, for running everything without any download.
"""

from atacformer.datasets._registry import REGISTRY, fetch, shared_data_dir
from atacformer.datasets._synthetic import synthetic_fragments

__all__ = ["REGISTRY", "fetch", "shared_data_dir", "synthetic_fragments"]

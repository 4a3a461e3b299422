from __future__ import annotations

import os
from pathlib import Path

# name -> (url, sha256, genome, description). Checksums are of the exact public files.
REGISTRY: dict[str, tuple[str, str, str, str]] = {
    "archr_pbsmall_fragments": (
        "https://github.com/GreenleafLab/ArchR/raw/6feec354ad6c8052ddbc4626a2ca2d858ed465bf/inst/testdata/PBSmall.tsv.gz",
        "3d026bdbd2675a63bbbdceddcc219826f22c991a30bc8c579d22f7f42c6246d4", "hg19",
        "ArchR PBSmall: 150 PBMC cells (B/Mono/T, 50 each), chr5 + chr11 fragments"),
    "macs3_chr22_fragments": (
        "https://github.com/macs3-project/MACS/raw/a341a2f0ede26735f744d6d5e3b0f7ac1861cfe9/test/test.fragments.tsv.gz",
        "f06c4acc3705a65a69f6e3c7ee082b7a9fbf286a0c0b5526e9d1a5ff9456a780", "hg38",
        "MACS3 test fragments: 100 barcodes, chr22"),
    "muon_pbmc_fragments": (
        "https://github.com/scverse/muon/raw/03c762e5ebe44b5aa23392b1f31d27c41f2e0b44/tests/data/atac/test_rna_atac_fragments.tsv.gz",
        "e97ddd8c9e8953a5a0476f57f192b797e0d55744522cbcb3308cfe508843e952", "hg38",
        "muon 10x multiome PBMC fragments: 24,508 barcodes, 367,439 fragments"),
    "signac_pbmc_fragments": (
        "https://github.com/stuart-lab/signac/raw/12d1ff82774890b08e55b3101f36fab83e674b88/inst/extdata/fragments.tsv.gz",
        "461fc1a0917b0cf10bfb73bdf28436ca6166c18794416718d35143d982c3c65a", "hg19",
        "Signac test fragments: 100 fragments, chr1"),
}

# Where each registry file lies inside ../shared/data, when that folder is present.
SHARED_PATHS = {
    "archr_pbsmall_fragments": "archr_pbsmall_fragments_labeled/PBSmall.tsv.gz",
    "macs3_chr22_fragments": "fragments_macs3_chr22_100cells/test.fragments.tsv.gz",
    "muon_pbmc_fragments": "muon_pbmc_multiome_fragments_hg38/test_rna_atac_fragments.tsv.gz",
    "signac_pbmc_fragments": "signac_pbmc_small/fragments.tsv.gz",
}


def shared_data_dir(start=None) -> Path | None:
    """The real-data folder: ``$ATACFORMER_DATA``, else ``../shared/data`` next to the working
    directory or the source checkout; ``None`` when absent."""
    env = os.environ.get("ATACFORMER_DATA")
    if env:  # an explicit setting wins, present or not
        return Path(env).resolve() if Path(env).is_dir() else None
    here = Path(start or os.getcwd()).resolve()
    cands = [here / ".." / "shared" / "data", here / "shared" / "data",
              Path(__file__).resolve().parents[3] / ".." / "shared" / "data"]
    for c in cands:
        if c.is_dir():
            return c.resolve()
    return None


def fetch(name: str, cache_dir=None, url: str | None = None) -> Path:
    """Path of registry file ``name``: the shared copy when present, else a verified download.

    Parameters
    ----------
    name
        A key of :data:`REGISTRY`.
    cache_dir
        Download folder (default: pooch's OS cache for ``atacformer``).
    url
        Override the registry URL (a mirror, or a ``file://`` URL); the checksum still applies.

    Examples
    --------
    >>> path = fetch("archr_pbsmall_fragments")  # doctest: +SKIP
    """
    if name not in REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}")
    src, sha, _, _ = REGISTRY[name]
    shared = shared_data_dir()
    if shared is not None and url is None and (shared / SHARED_PATHS[name]).exists():
        return shared / SHARED_PATHS[name]
    import pooch

    fname = Path(src).name
    path = pooch.retrieve(url=url or src, known_hash=f"sha256:{sha}", fname=f"{name}-{fname}",
                          path=cache_dir or pooch.os_cache("atacformer"), progressbar=False)
    return Path(path)

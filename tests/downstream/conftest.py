"""Shared fixtures of the downstream tests: the real data sets, loaded once per session."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT.parent / "shared" / "data"
SCHEP = DATA / "schep2017_celllines_atacCoGAPS" / "schep2017_celllines_600.h5ad"
BM0828 = DATA / "buenrostro2018_BM0828_ra3" / "buenrostro2018_BM0828_533cells.h5ad"

logger = logging.getLogger("atacformer.tests.downstream")


def _load(path: Path) -> ad.AnnData:
    if not path.exists():
        pytest.skip(f"real test data not found: {path} (expected ../shared/data next to the "
                    f"repository, see shared/data/README.md)")
    return ad.read_h5ad(path)


@pytest.fixture(scope="session")
def schep() -> ad.AnnData:
    """Schep 2017 cell lines: 600 cells x 5,036 peaks, 12 labels of 50 cells."""
    return _load(SCHEP)


@pytest.fixture(scope="session")
def bm0828() -> ad.AnnData:
    """Buenrostro 2018 BM0828: 533 cells x 35,983 peaks, 7 FACS-sorted types."""
    return _load(BM0828)


@pytest.fixture(scope="session")
def schep_lsi(schep) -> ad.AnnData:
    """Schep 600 with the default LSI in ``obsm["X_lsi"]`` (do not modify in tests)."""
    from atacformer import tools as tl

    a = schep.copy()
    tl.lsi(a)
    return a


@pytest.fixture()
def blobs():
    """Three well separated Gaussian blobs in 5-D, 60 cells each, with labels."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array(["a", "b", "c"]), 60)
    centers = {"a": 0.0, "b": 8.0, "c": -8.0}
    x = rng.normal(size=(180, 5)) + np.array([centers[v] for v in labels])[:, None] * np.eye(5)[
        np.repeat([0, 1, 2], 60)]
    a = ad.AnnData(np.zeros((180, 1), dtype=np.float32))
    a.obs_names = [f"c{i}" for i in range(180)]
    a.obs["label"] = labels
    a.obsm["X_emb"] = x.astype(np.float32)
    return a

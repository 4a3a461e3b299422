"""Fixtures for the corpus tests: a small vocabulary, random count matrices, real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atacformer.vocab import Vocabulary

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SCHEP = DATA / "schep2017_celllines_atacCoGAPS" / "schep2017_celllines_600.h5ad"


@pytest.fixture
def vocab() -> Vocabulary:
    """50 regions on two chromosomes."""
    chroms = ["chr1"] * 30 + ["chr2"] * 20
    starts = np.concatenate([np.arange(30) * 100, np.arange(20) * 100])
    return Vocabulary(chroms, starts, starts + 50)


def random_counts(n_cells: int, n_regions: int, seed: int = 0, density: float = 0.2,
                  max_count: int = 5) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    X = sp.random(n_cells, n_regions, density=density, format="csr", random_state=rng,
                  data_rvs=lambda k: rng.integers(1, max_count + 1, size=k)).astype(np.int64)
    X.sort_indices()
    return X


def random_obs(n_cells: int, prefix: str, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"cell_type": rng.choice(["B", "T", "Mono"], n_cells), "n_fragments": rng.integers(100, 1000, n_cells),
         "tss_score": rng.random(n_cells)},
        index=[f"{prefix}{i:04d}" for i in range(n_cells)],
    )


@pytest.fixture(scope="session")
def schep_path() -> Path:
    """Path of the Schep 2017 ``.h5ad`` (skips when the shared data folder is absent)."""
    if not SCHEP.is_file():
        pytest.skip(f"real test data not found: {SCHEP} (the shared/data folder is absent)")
    return SCHEP


@pytest.fixture(scope="session")
def schep():
    """The Schep 2017 cell-line matrix (600 cells x 5,036 peaks), read into memory."""
    if not SCHEP.is_file():
        pytest.skip(f"real test data not found: {SCHEP} (the shared/data folder is absent)")
    import anndata as ad

    return ad.read_h5ad(SCHEP)


@pytest.fixture(scope="session")
def schep_vocab(schep) -> Vocabulary:
    return Vocabulary(schep.var["chrom"].to_numpy(), schep.var["start"].to_numpy(), schep.var["end"].to_numpy())


@pytest.fixture
def make_counts():
    """``make_counts(n_cells, n_regions, seed=0, density=0.2, max_count=5)`` -> int64 CSR."""
    return random_counts


@pytest.fixture
def make_obs():
    """``make_obs(n_cells, barcode_prefix, seed=0)`` -> obs with cell_type and extra columns."""
    return random_obs


def snapshot(path: Path) -> dict:
    """Every file under ``path`` (relative name -> bytes), to show a folder did not change."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def folder_snapshot():
    return snapshot

"""Fixtures of the model tests: tiny vocabularies and real tokenized cells.

Real cells come from peak matrices in ``../shared/data``: the peaks are the vocabulary and
each cell's non-zero columns are its tokens. Tests needing them skip when the folder is
absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from atacformer.vocab import Vocabulary

HERE = Path(__file__).resolve().parent
SHARED_DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


def pytest_collection_modifyitems(config, items):
    """GPU tests of this folder skip without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords and HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)



@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (see ../shared/data/README.md)")
    return SHARED_DATA


def _peak_cells(path: Path, chrom_col: str):
    import anndata as ad

    if not path.is_file():
        pytest.skip(f"{path} is absent")
    a = ad.read_h5ad(path)
    vocab = Vocabulary(a.var[chrom_col].astype(str).to_numpy(), a.var["start"].to_numpy(),
                       a.var["end"].to_numpy())
    x = a.X.tocsr()
    x.sort_indices()
    return vocab, x, a.obs["cell_type"].astype(str).to_numpy()


@pytest.fixture(scope="session")
def pbmc(shared_data):
    """20 PBMC cells x 1,000 hg38 peaks (geniml's test fixture): (vocab, CSR, labels)."""
    return _peak_cells(shared_data / "geniml_pbmc_hg38_tiny" / "pbmc_hg38.h5ad", "chr")


@pytest.fixture(scope="session")
def schep(shared_data):
    """600 cells x 5,036 hg19 peaks (Schep 2017), first 120 cells: (vocab, CSR, labels)."""
    vocab, x, labels = _peak_cells(
        shared_data / "schep2017_celllines_atacCoGAPS" / "schep2017_celllines_600.h5ad", "chrom")
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(x.shape[0], size=120, replace=False))
    return vocab, x[rows], labels[rows]


@pytest.fixture
def tiny_vocab() -> Vocabulary:
    """100 regions of 5 kb on three chromosomes (50, 30, 20)."""
    chroms = ["chr1"] * 50 + ["chr2"] * 30 + ["chrX"] * 20
    starts = np.concatenate([np.arange(50), np.arange(30), np.arange(20)]) * 5000
    return Vocabulary(chroms, starts, starts + 5000)


@pytest.fixture
def random_cells():
    """Six random cells over 100 regions, 3 to 40 tokens each."""
    rng = np.random.default_rng(1)
    return [np.sort(rng.choice(100, size=n, replace=False)) for n in (3, 40, 17, 25, 9, 33)]

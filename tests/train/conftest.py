"""Fixtures of the pretraining tests: a small synthetic labelled peak matrix (two cell types
with different open regions), its corpus, and helpers to run the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
SCHEP = SHARED_DATA / "schep2017_celllines_atacCoGAPS" / "schep2017_celllines_600.h5ad"



def make_adata(n_cells: int = 48, n_peaks: int = 240, seed: int = 0):
    """Two cell types over peaks on chr1/chr2: each type opens mostly its own half of the
    peaks; cell lengths vary from a few to ~80 tokens."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    types = np.where(np.arange(n_cells) % 2 == 0, "A", "B")
    rows, cols = [], []
    for i, t in enumerate(types):
        own = np.arange(n_peaks // 2) + (0 if t == "A" else n_peaks // 2)
        k = int(rng.integers(4, 60))
        picks = np.concatenate([rng.choice(own, size=k, replace=False),
                                rng.choice(n_peaks, size=k // 4, replace=False)])
        picks = np.unique(picks)
        rows += [i] * len(picks)
        cols += picks.tolist()
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_cells, n_peaks))
    half = n_peaks // 2
    var = pd.DataFrame({"chrom": ["chr1"] * half + ["chr2"] * (n_peaks - half),
                        "start": np.r_[np.arange(half), np.arange(n_peaks - half)] * 2000 + 1000})
    var["end"] = var["start"] + 500
    var.index = [f"{c}:{s}-{e}" for c, s, e in zip(var.chrom, var.start, var.end)]
    obs = pd.DataFrame({"cell_type": types}, index=[f"cell{i:03d}" for i in range(n_cells)])
    return ad.AnnData(X=X, obs=obs, var=var)


@pytest.fixture(scope="session")
def toy_h5ad(tmp_path_factory) -> Path:
    """Path of the synthetic labelled ``.h5ad`` (48 cells x 240 peaks)."""
    path = tmp_path_factory.mktemp("toy") / "toy.h5ad"
    make_adata().write_h5ad(path)
    return path


@pytest.fixture(scope="session")
def toy_corpus(toy_h5ad, tmp_path_factory) -> Path:
    """The synthetic matrix as an on-disk corpus (its peaks are the vocabulary)."""
    from atacformer.corpus import Corpus

    path = tmp_path_factory.mktemp("toy_corpus") / "corpus"
    Corpus.from_anndata(toy_h5ad, path)
    return path


@pytest.fixture(scope="session")
def schep_h5ad() -> Path:
    if not SCHEP.is_file():
        pytest.skip(f"real data {SCHEP} is absent (see ../shared/data/README.md)")
    return SCHEP


def cli_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def run_cli(args: list[str], cwd=None, timeout: int = 300, torchrun: int = 0, check: bool = True
            ) -> subprocess.CompletedProcess:
    """Run ``python -m atacformer ARGS`` (under ``torchrun`` with that many processes); with
    ``check`` a non-zero exit fails the test."""
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(torchrun),
               "--standalone", "-m", "atacformer", *args]
    else:
        cmd = [sys.executable, "-m", "atacformer", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def cli():
    """``cli(args, torchrun=0)``: run ``python -m atacformer ARGS`` (see :func:`run_cli`)."""
    return run_cli


@pytest.fixture(scope="session")
def subprocess_env() -> dict:
    """Environment for CLI subprocesses (one thread each, no inherited torchrun variables)."""
    return cli_env()

"""Reading a cell memory-maps the shard: it never loads a whole token file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.lib.format as npf
import pandas as pd
import pytest

from atacformer.corpus import Corpus

N_TOKENS = 150_000_000  # 600 MB of int32 ids + 150 MB of counts, as sparse files


def _resident_bytes() -> int:
    statm = Path("/proc/self/statm")
    if not statm.exists():
        pytest.skip("needs /proc/self/statm (Linux) to measure resident memory")
    return int(statm.read_text().split()[1]) * 4096


def _huge_shard(corpus_path: Path) -> None:
    """Register a two-cell shard whose second cell has ~N_TOKENS tokens, without writing them."""
    folder = corpus_path / "shards" / "00000-00000000"
    folder.mkdir()
    ip = npf.open_memmap(folder / "indptr.npy", mode="w+", dtype=np.int64, shape=(3,))
    ip[:] = [0, 3, N_TOKENS]
    ip.flush()
    ind = npf.open_memmap(folder / "indices.npy", mode="w+", dtype=np.int32, shape=(N_TOKENS,))
    ind[:3] = [2, 17, 40]
    ind.flush()
    cnt = npf.open_memmap(folder / "counts.npy", mode="w+", dtype=np.uint8, shape=(N_TOKENS,))
    cnt[:3] = [1, 4, 2]
    cnt.flush()
    del ip, ind, cnt
    pd.DataFrame({"barcode": ["a", "b"], "dataset": "huge", "batch": "huge",
                  "cell_type": [None, None]}).to_parquet(folder / "obs.parquet")
    m = json.loads((corpus_path / "manifest.json").read_text())
    m["shards"] = [{"name": folder.name, "dataset": "huge", "n_cells": 2, "n_tokens": N_TOKENS,
                    "counts_dtype": "uint8", "max_count": 4}]
    (corpus_path / "manifest.json").write_text(json.dumps(m))


def test_reading_one_cell_does_not_load_the_token_files(tmp_path, vocab):
    Corpus.create(tmp_path / "c", vocab)
    _huge_shard(tmp_path / "c")
    before = _resident_bytes()
    c = Corpus.open(tmp_path / "c")
    ids, counts = c[0]
    X = c.get_rows([0, 0])
    grown = _resident_bytes() - before
    assert ids.tolist() == [2, 17, 40] and counts.tolist() == [1, 4, 2]
    assert X.nnz == 6 and len(c) == 2 and c.n_tokens == N_TOKENS
    assert isinstance(c._shard(0).indices, np.memmap)
    assert grown < 50 * 2**20, f"resident memory grew by {grown / 2**20:.0f} MB reading one cell"

"""Dataset registry (pooch download path, tested on local files) and synthetic data."""

import hashlib
import shutil

import numpy as np
import pytest

from atacformer.datasets import REGISTRY, fetch, shared_data_dir, synthetic_fragments
from atacformer.datasets._registry import SHARED_PATHS
from atacformer.tokenizers import tokenize_fragments
from atacformer.vocab import Vocabulary


def test_registry_checksums_match_the_shared_copies(data_dir):
    for name, (url, sha, genome, _) in REGISTRY.items():
        local = data_dir / SHARED_PATHS[name]
        assert hashlib.sha256(local.read_bytes()).hexdigest() == sha, name
        assert url.startswith("https://") and genome in ("hg19", "hg38")


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server on the loopback address serving ``tmp_path / 'mirror'``."""
    import functools
    import http.server
    import threading

    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_fetch_downloads_and_verifies(tmp_path, data_dir, mirror):
    """The real pooch download path, from a mirror on the loopback address (no network here)."""
    root, base = mirror
    name = "archr_pbsmall_fragments"
    shutil.copy(data_dir / SHARED_PATHS[name], root / "PBSmall.tsv.gz")
    got = fetch(name, cache_dir=tmp_path / "cache", url=f"{base}/PBSmall.tsv.gz")
    assert got.parent == tmp_path / "cache" and got.read_bytes() == (root / "PBSmall.tsv.gz").read_bytes()
    # a corrupted mirror is refused by the checksum, and nothing is left in the cache
    (root / "bad.tsv.gz").write_bytes((root / "PBSmall.tsv.gz").read_bytes()[:-10])
    with pytest.raises(ValueError, match="SHA256|hash"):
        fetch(name, cache_dir=tmp_path / "cache2", url=f"{base}/bad.tsv.gz")
    assert not any((tmp_path / "cache2").glob("*.tsv.gz"))
    with pytest.raises(KeyError, match="unknown dataset"):
        fetch("nope")


def test_shared_data_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ATACFORMER_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path.resolve()
    monkeypatch.setenv("ATACFORMER_DATA", str(tmp_path / "absent"))
    assert shared_data_dir() is None


def test_synthetic_fragments_are_labelled_and_tokenize(tmp_path):
    path, labels = synthetic_fragments(tmp_path / "syn.tsv.gz", n_cells=60, n_types=3, fragments_per_cell=300)
    assert all(b.startswith("SYN-") for b in labels.index)
    cells = tokenize_fragments(path, Vocabulary.from_bins("hg38", 5000, chroms=["chr1", "chr2", "chr3"]),
                               progress=False)
    assert set(cells.barcodes) == set(labels.index) and cells.X.nnz > 0
    # cells of one type share more open bins than cells of different types
    X = (cells.X > 0).astype(np.float32)
    t = labels.loc[cells.barcodes, "cell_type"].to_numpy()
    sim = (X @ X.T).toarray()
    same = sim[t[:, None] == t[None, :]].mean()
    diff = sim[t[:, None] != t[None, :]].mean()
    assert same > 1.5 * diff

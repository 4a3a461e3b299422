"""The h5py-only .h5ad writer reads back, through anndata, as what anndata itself writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atacformer.tokenizers import tokenize_fragments
from atacformer.tokenizers._h5ad import write_cells_h5ad
from atacformer.vocab import Vocabulary


def _same(x, y, where=""):
    assert type(x) is type(y), (where, type(x), type(y))
    if isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for k in x:
            _same(x[k], y[k], f"{where}/{k}")
    elif isinstance(x, np.ndarray):
        assert x.dtype == y.dtype, (where, x.dtype, y.dtype)
        np.testing.assert_array_equal(x, y)
    else:
        assert x == y or (x != x and y != y), (where, x, y)


@pytest.mark.parametrize("qc", [False, True])
def test_writer_equals_anndata(data_dir, tmp_path, qc):
    import anndata as ad

    frag = data_dir / "fragments_macs3_chr22_100cells" / "test.fragments.tsv.gz"
    gtf = data_dir / "gencode_v33_chr22_gtf" / "gencode.v33.basic.annotation.chr22.hg38.gtf.gz"
    cells = tokenize_fragments(frag, Vocabulary.from_bins("hg38", 5000, chroms=["chr21", "chr22"]),
                               tss=gtf if qc else None, min_fragments=300, progress=False)
    cells.obs["dataset"] = "test"
    write_cells_h5ad(cells, tmp_path / "ours.h5ad")
    cells.to_anndata().write_h5ad(tmp_path / "anndata.h5ad")
    a, b = ad.read_h5ad(tmp_path / "ours.h5ad"), ad.read_h5ad(tmp_path / "anndata.h5ad")
    assert a.X.dtype == b.X.dtype and (a.X != b.X).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    _same(a.uns, b.uns)
    assert list(tmp_path.iterdir()) and not list(tmp_path.glob("*.tmp*"))


def test_string_conversions_equal_numpys():
    """The fast ASCII <-> UCS-4 conversions of barcodes equal numpy's astype."""
    from atacformer._core.names import ascii_to_unicode, unicode_to_ascii

    rng = np.random.default_rng(0)
    alphabet = np.array(list("ACGT-1_x:"))
    words = ["".join(rng.choice(alphabet, rng.integers(1, 25))) for _ in range(2000)] + ["A", "AC\x00G"]
    u = np.array(words)
    s = unicode_to_ascii(u)
    assert s.dtype == u.astype("S").dtype and (s == u.astype("S")).all()
    back = ascii_to_unicode(s.view(np.uint8).reshape(len(s), -1))
    assert back.dtype == u.dtype and (back == u).all()
    assert unicode_to_ascii(np.array(["AAC", "\u00e9"])) is None  # not ASCII: the caller falls back
    empty = unicode_to_ascii(np.array(["x"])[:0])
    assert empty is not None and len(empty) == 0

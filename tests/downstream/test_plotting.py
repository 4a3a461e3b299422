"""UMAP plots: PNG files written headless, UMAP computed when missing."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from atacformer import plotting as pl

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def embedded():
    rng = np.random.default_rng(0)
    n = 240
    a = ad.AnnData(np.zeros((n, 1), dtype=np.float32),
                   obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]))
    a.obs["label"] = pd.Categorical(np.repeat(["x", "y", "z"], n // 3))
    a.obs["batch"] = np.where(np.arange(n) % 2, "b1", "b2")
    a.obs["depth"] = rng.random(n)
    a.obsm["X_lsi"] = rng.normal(size=(n, 6)) + 5 * np.eye(6)[np.repeat([0, 1, 2], n // 3)]
    return a


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC


def test_umap_png_computes_missing_umap(embedded, tmp_path):
    path = tmp_path / "out" / "umap.png"
    fig = pl.umap(embedded, ["label", "batch", "depth"], path=path, title="test")
    assert _is_png(path)
    assert "X_umap" in embedded.obsm and embedded.uns["X_umap"]["params"]["use_rep"] == "X_lsi"
    assert len([ax for ax in fig.axes if ax.get_title()]) == 3


def test_umap_grid_shares_colours(embedded, tmp_path):
    other = embedded.copy()
    other.obsm["X_umap"] = np.random.default_rng(1).normal(size=(other.n_obs, 2))
    other.obs["label"] = other.obs["label"].cat.remove_categories("x")  # "x" missing here
    pl.umap(embedded, "label")
    path = tmp_path / "grid.png"
    fig = pl.umap_grid({"one": embedded, "two": other}, ["label", "batch"], path=path)
    assert _is_png(path)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles.count("one: label") == 1 and "two: batch" in titles
    legend_colour = {}
    for ax in fig.axes:
        if ax.get_title().endswith("label"):
            for handle, text in zip(ax.get_legend().legend_handles, ax.get_legend().get_texts()):
                legend_colour.setdefault(text.get_text(), set()).add(
                    tuple(np.round(handle.get_facecolor()[0], 4)))
    assert all(len(c) == 1 for c in legend_colour.values())


def test_umap_errors(embedded):
    bare = ad.AnnData(np.zeros((5, 1)), obs=pd.DataFrame(index=list("abcde")))
    with pytest.raises(ValueError, match="use_rep"):
        pl.umap(bare, "x")
    embedded.obsm["X_umap"] = np.zeros((embedded.n_obs, 2))
    with pytest.raises(ValueError, match="not an obs column"):
        pl.umap(embedded, "missing")


def test_umap_grid_wraps_into_rows(tmp_path):
    import anndata as ad
    import numpy as np
    import pandas as pd

    from atacformer import plotting as pl

    a = ad.AnnData(np.zeros((40, 1)), obs=pd.DataFrame({"t": list("ab") * 20, "u": list("xyz" * 13 + "x")},
                                                      index=np.arange(40).astype(str)))
    a.obsm["X_umap"] = np.random.default_rng(0).normal(size=(40, 2))
    grid = {f"m{i}": a.copy() for i in range(6)}
    fig = pl.umap_grid(grid, ["t", "u"], tmp_path / "g.png", max_cols=4)
    # 6 entries at 4 per row -> 2 rows per colour key, 2 keys -> 4 x 4 axes, 12 drawn
    drawn = [ax for ax in fig.axes if ax.axison]
    titles = sorted(ax.get_title() for ax in drawn)
    assert len(titles) == 12 and titles[0] == "m0: t" and (tmp_path / "g.png").stat().st_size > 0

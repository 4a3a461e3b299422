"""``atacformer annotate`` as a user runs it: real labelled cells split into a reference and a
query half, a model exported before any training step, OUT.h5ad and the confusion PNG."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch

from atacformer import tools as tl
from atacformer.cli import main

SCHEP = "schep2017_celllines_atacCoGAPS/schep2017_celllines_600.h5ad"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def files(data_dir, tmp_path_factory):
    """Reference half (labelled), query half with its peaks in shuffled column order (so the
    command must tokenize it into the model's vocabulary), and the model of the reference."""
    from atacformer.train import TrainConfig, pretrain

    a = ad.read_h5ad(data_dir / SCHEP)
    rng = np.random.default_rng(0)
    y = a.obs["cell_type"].astype(str).to_numpy()
    is_ref = np.zeros(a.n_obs, dtype=bool)
    for v in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == v))
        is_ref[idx[: len(idx) // 2]] = True
    d = tmp_path_factory.mktemp("annotate_cli")
    ref, query = a[is_ref].copy(), a[~is_ref].copy()
    ref.write_h5ad(d / "ref.h5ad")
    query[:, rng.permutation(query.n_vars)].copy().write_h5ad(d / "query.h5ad")
    pretrain(TrainConfig(out=str(d / "run"), recipe="lsi-init-profile", max_steps=0, progress=False,
                         tensorboard=False), data=ref)
    yield {"dir": d, "model": d / "run" / "model", "ref": d / "ref.h5ad", "query": d / "query.h5ad",
           "ref_adata": ref, "query_adata": query}


def _args(f, out, *extra):
    return ["annotate", str(f["model"]), str(f["query"]), "-o", str(out), "--reference", str(f["ref"]), *extra]


def test_annotate_end_to_end(files, tmp_path, capsys):
    from atacformer.models import load_model

    out = tmp_path / "annotated.h5ad"
    assert main(_args(files, out, "--truth-key", "cell_type", "--min-confidence", "0.5")) == 0
    printed = capsys.readouterr().out
    got = ad.read_h5ad(out)
    assert {"predicted_label", "prediction_confidence"} <= set(got.obs.columns)
    assert got.obs["prediction_confidence"].between(0, 1).all()
    # the same model and cells through the library, on the query in its original column order
    q, r = files["query_adata"].copy(), files["ref_adata"].copy()
    scores = tl.annotate(q, load_model(files["model"]), reference=r, truth_key="cell_type")
    assert (got.obs["predicted_label"].astype(str).to_numpy()
            == q.obs.loc[got.obs_names, "predicted_label"].astype(str).to_numpy()).all()
    np.testing.assert_allclose(got.obs["prediction_confidence"], q.obs.loc[got.obs_names, "prediction_confidence"])
    assert "| type" in printed and "|   precision |" in printed
    assert f"macro-F1 {scores['macro_f1']:.3f}" in printed
    n_un = int((q.obs["predicted_label"] == "unassigned").sum())
    assert f"{300 - n_un:,} assigned, {n_un:,} unassigned" in printed
    png = tmp_path / "annotated.confusion.png"  # next to OUT when --truth-key is given
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.confusion.png", "annotated.h5ad"]


def test_plot_path_and_refusals(files, tmp_path, capsys):
    out, png = tmp_path / "a.h5ad", tmp_path / "cm.png"
    assert main(_args(files, out, "--truth-key", "cell_type", "--plot", str(png), "--k", "5")) == 0
    assert png.read_bytes()[:8] == PNG_MAGIC and not (tmp_path / "a.confusion.png").exists()
    before = out.stat().st_mtime_ns
    capsys.readouterr()
    # an existing OUT, OUT = an input, --plot without truth: refused before any work
    assert main(_args(files, out)) == 2
    assert "pass --overwrite" in capsys.readouterr().err and out.stat().st_mtime_ns == before
    assert main(_args(files, files["ref"])) == 2
    assert "is also an input" in capsys.readouterr().err
    assert main(_args(files, tmp_path / "b.h5ad", "--plot", str(tmp_path / "b.png"))) == 2
    assert "--truth-key" in capsys.readouterr().err
    assert main(_args(files, out, "--overwrite", "--min-confidence", "0")) == 0
    assert (ad.read_h5ad(out).obs["predicted_label"] != "unassigned").all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5ad", "cm.png"]


def _nan_model(model_dir, dest):
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, dest)
    state = load_file(dest / "model.safetensors")
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()},
              dest / "model.safetensors")
    return dest


@pytest.mark.parametrize("case", ["labels key", "one class", "no reference", "NaN weights"])
def test_bad_inputs_write_nothing(files, tmp_path, tmp_path_factory, capsys, case):
    one = files["ref_adata"].copy()
    one.obs["cell_type"] = "K562"
    one.write_h5ad(tmp_path / "one.h5ad")
    out = tmp_path / "o.h5ad"
    model = str(files["model"])
    if case == "NaN weights":
        model = str(_nan_model(files["model"], tmp_path_factory.mktemp("nan") / "model"))
    query, ref = str(files["query"]), str(files["ref"])
    args, pattern = {
        "labels key": (["--reference", ref, "--labels-key", "nope", "--truth-key", "cell_type"], "labels_key='nope'"),
        "one class": (["--reference", str(tmp_path / "one.h5ad")], "one class only"),
        "no reference": ([], "pass a labelled reference"),
        "NaN weights": (["--reference", ref, "--truth-key", "cell_type"], "no cell has a finite embedding"),
    }[case]
    args = ["annotate", model, query, "-o", str(out), *args]
    assert main(args) == 2
    assert pattern in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.h5ad"]

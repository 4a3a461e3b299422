"""The commands as a careful user meets them: each case asserts the exit code, the one-line
``atacformer: error: ...`` message (the traceback only under ``-v``) and that nothing was left
behind or changed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import anndata as ad
import numpy as np
import pytest
from _cases import DATA, SCHEP, snapshot

from atacformer.cli import main

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} is absent")
CHROMVAR = DATA / "chromvar_example_gm12878_h1" / "chromvar_gm12878_h1_50.h5ad"
TINY = ["--set", "hidden_size=16", "--set", "num_heads=2", "--set", "intermediate_size=32"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _run(args, **kw):
    return subprocess.run([sys.executable, "-m", "atacformer", *args], capture_output=True, text=True,
                          env=_env(), timeout=300, **kw)


def _one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("atacformer: error:")]
    assert len(err) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in err[0], err[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["pretrain", "--data", str(CHROMVAR), "--out", str(out), "--max-steps", "1", "--no-progress",
                 "--no-tensorboard", *TINY]) == 0
    return out / "model"


def test_embed_refuses_an_existing_output_and_the_input(model_dir, tmp_path):
    out = tmp_path / "emb.h5ad"
    out.write_text("precious")
    before = snapshot(tmp_path)
    _one_line_error(_run(["embed", str(model_dir), str(CHROMVAR), "-o", str(out)]), "exists", "--overwrite")
    assert snapshot(tmp_path) == before
    copy = tmp_path / "cells.h5ad"
    ad.read_h5ad(CHROMVAR).write_h5ad(copy)
    before = snapshot(tmp_path)
    _one_line_error(_run(["embed", str(model_dir), str(copy), "-o", str(copy), "--overwrite"]), "also an input")
    assert snapshot(tmp_path) == before
    assert main(["embed", str(model_dir), str(CHROMVAR), "-o", str(out), "--overwrite"]) == 0
    assert ad.read_h5ad(out).obsm["X_atacformer"].shape[0] == 50


def test_embed_checks_the_output_before_any_work(model_dir, tmp_path):
    _one_line_error(_run(["embed", str(model_dir), str(CHROMVAR), "-o", str(tmp_path / "no" / "x.h5ad")]),
                    "does not exist")
    _one_line_error(_run(["embed", str(model_dir), str(CHROMVAR), "-o", str(tmp_path)]), "is a folder")
    assert list(tmp_path.iterdir()) == []


def test_embed_of_a_run_folder_uses_and_names_its_model(model_dir, tmp_path):
    import anndata as ad

    proc = _run(["embed", str(model_dir.parent), str(CHROMVAR), "-o", str(tmp_path / "e.h5ad")])
    assert proc.returncode == 0, proc.stderr
    assert f"using {model_dir}" in proc.stderr and "training run" in proc.stderr
    direct = _run(["embed", str(model_dir), str(CHROMVAR), "-o", str(tmp_path / "d.h5ad")])
    assert direct.returncode == 0, direct.stderr
    np.testing.assert_array_equal(ad.read_h5ad(tmp_path / "e.h5ad").obsm["X_atacformer"],
                                  ad.read_h5ad(tmp_path / "d.h5ad").obsm["X_atacformer"])


def test_embed_with_nan_weights_writes_nothing(model_dir, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    state = load_file(bad / "model.safetensors")
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, bad / "model.safetensors")
    _one_line_error(_run(["embed", str(bad), str(CHROMVAR), "-o", str(tmp_path / "e.h5ad")]), "NaN")
    assert not (tmp_path / "e.h5ad").exists()


def test_tokenize_refuses_to_overwrite(tmp_path):
    out = tmp_path / "t.h5ad"
    out.write_text("precious")
    _one_line_error(_run(["tokenize", str(CHROMVAR), "--genome", "hg19", "-o", str(out)]), "--overwrite")
    assert out.read_text() == "precious"
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("x")
    _one_line_error(_run(["tokenize", str(CHROMVAR), "--genome", "hg19", "-o", str(notes)]),
                    "not a corpus folder")


def test_pretrain_into_a_folder_of_other_files(tmp_path):
    mine = tmp_path / "mine"
    (mine / "model").mkdir(parents=True)
    (mine / "metrics.csv").write_text("precious")
    (mine / "model" / "weights.bin").write_text("precious")
    (mine / "summary.json").write_text("{}")
    (mine / "paper.tex").write_text("x")
    before = snapshot(mine)
    _one_line_error(_run(["pretrain", "--data", str(CHROMVAR), "--out", str(mine), "--max-steps", "1"]),
                    "not a training run")
    assert snapshot(mine) == before


def test_verbose_shows_the_traceback(tmp_path):
    proc = _run(["-v", "embed", str(tmp_path / "nomodel"), str(CHROMVAR), "-o", str(tmp_path / "e.h5ad")])
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "atacformer: error:" in proc.stderr


def test_demo_unknown_labels_key_leaves_no_folder(tmp_path):
    out = tmp_path / "results"
    _one_line_error(_run(["demo", "--input", str(SCHEP), "--labels-key", "nope", "--out", str(out)]), "nope")
    assert not out.exists()


def test_interrupted_pretrain_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "atacformer", "pretrain", "--data", str(SCHEP), "--out",
                             str(out), "--max-steps", "100000", "--save-every", "5", "--no-progress",
                             "--no-tensorboard", *TINY], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # as from a terminal: Ctrl-C's default handling, whatever a library in
                            # this test process did to SIGINT (an ignored SIGINT is inherited)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300  # a loaded 2-core machine is slow to start a run
    while time.time() < deadline and not (out / "checkpoints").exists():
        time.sleep(0.1)
    assert (out / "checkpoints").exists(), "the run wrote no checkpoint in 5 minutes"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert not (out / "model").exists()
    assert main(["pretrain", "--data", str(SCHEP), "--out", str(out), "--max-steps", "6", "--resume",
                 "--no-progress", "--no-tensorboard", *TINY]) == 0
    assert np.isfinite(__import__("json").loads((out / "summary.json").read_text())["final_loss"])


def test_bad_flag_values_are_refused(tmp_path):
    _one_line_error(_run(["pretrain", "--data", str(CHROMVAR), "--out", str(tmp_path / "r"), "--max-steps", "-1"]),
                    "max_steps")
    _one_line_error(_run(["pretrain", "--data", str(CHROMVAR), "--out", str(tmp_path / "r"), "--lr", "0"]), "lr")
    assert not (tmp_path / "r").exists()

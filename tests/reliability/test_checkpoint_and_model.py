"""Damaged training checkpoints and model folders: resume falls back to the newest sound
checkpoint; a damaged model.safetensors is named in one line; model folders are written
with the modes a plain open() gives."""

from __future__ import annotations

import logging
import os
import stat

import numpy as np
import pytest
import torch
from _cases import CASES, DATA, run_case, tiny_model

from atacformer.errors import AtacformerError
from atacformer.models import load_model
from atacformer.train import TrainConfig, pretrain
from atacformer.train.checkpoint import (
    check_checkpoint_file, checkpoint_path, export_model, latest_checkpoint, list_checkpoints, load_checkpoint,
)
from atacformer.train.tracking import read_metrics

TINY = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32, "dropout": 0.2}



@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import importlib.util
    from pathlib import Path

    # the training tests' synthetic labelled matrix (48 cells x 240 peaks)
    spec = importlib.util.spec_from_file_location("_train_fixtures",
                                                  Path(__file__).resolve().parents[1] / "train" / "conftest.py")
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    from atacformer.corpus import Corpus

    make_adata = fixtures.make_adata

    path = tmp_path_factory.mktemp("ckpt_corpus") / "corpus"
    Corpus.from_anndata(make_adata(), path, dataset="toy")
    return path


def _cfg(data, out, **kw):
    base = dict(data=[str(data)], out=str(out), max_steps=6, batch_size=8, save_every=3, keep_checkpoints=5,
                progress=False, max_length=48, warmup_steps=2, tensorboard=False)
    return TrainConfig(model="atacformer", model_overrides=dict(TINY), **{**base, **kw})


def test_truncated_newest_checkpoint_resumes_from_the_older_one(corpus, tmp_path, caplog):
    pretrain(_cfg(corpus, tmp_path / "a"))
    pretrain(_cfg(corpus, tmp_path / "b"))
    newest = checkpoint_path(tmp_path / "b", 6)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) * 2 // 3])
    assert check_checkpoint_file(newest) is not None
    with caplog.at_level(logging.WARNING, logger="atacformer"):
        summary = pretrain(_cfg(corpus, tmp_path / "b", resume=True))
    assert summary["resumed_from"] == 3 and summary["steps"] == 6
    assert any(str(newest) in r.getMessage() and "falling back" in r.getMessage() for r in caplog.records)
    # the resumed run recomputed steps 4-6 exactly: same losses, same final weights
    a = read_metrics(tmp_path / "a" / "metrics.csv")
    b = read_metrics(tmp_path / "b" / "metrics.csv")
    assert [r["step"] for r in b] == list(range(1, 7))
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=0, atol=1e-6)
    wa = load_model(tmp_path / "a" / "model").state_dict()
    wb = load_model(tmp_path / "b" / "model").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert check_checkpoint_file(newest) is None  # rewritten by the resumed run


def test_corrupt_but_complete_newest_checkpoint_falls_back_on_load(tmp_path, caplog):
    """A file whose zip structure is intact but whose pickle is damaged passes the cheap check;
    load_checkpoint finds out and loads the older one."""
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    for step in (2, 4):
        p = checkpoint_path(tmp_path, step)
        p.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            model.weight.fill_(step)
        torch.save({"model": model.state_dict(), "optimizer": {"state": {}, "param_groups": opt.state_dict()["param_groups"]},
                    "scheduler": sched.state_dict(), "state": {"step": step}, "rng": []}, p)
    bad = checkpoint_path(tmp_path, 4)
    raw = bytearray(bad.read_bytes())
    at = raw.find(b"data.pkl") + 60  # inside the pickle record
    raw[at:at + 8] = b"\xff" * 8
    bad.write_bytes(bytes(raw))
    assert latest_checkpoint(tmp_path) == bad
    with caplog.at_level(logging.WARNING, logger="atacformer"):
        loaded = load_checkpoint(bad, model, opt, sched, is_main=True)
    assert loaded["state"]["step"] == 2
    assert torch.all(model.weight == 2)
    assert any(str(bad) in r.getMessage() for r in caplog.records)


def test_every_checkpoint_damaged_names_them_all(tmp_path):
    err = run_case(CASES["checkpoints-all-damaged"], tmp_path)
    assert "checkpoints" in str(err)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(AtacformerError, match="no loadable checkpoint.*step-00000006.pt.*step-00000003.pt"):
        load_checkpoint(checkpoint_path(tmp_path / "run", 6), model, opt, sched, is_main=True)


def test_no_checkpoint_is_still_none(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert list_checkpoints(tmp_path) == []


@pytest.mark.parametrize("name", ["safetensors-truncated", "safetensors-garbage"])
def test_damaged_model_safetensors_is_named_in_one_line(tmp_path, name):
    err = run_case(CASES[name], tmp_path)
    assert err.__cause__ is None and err.__suppress_context__


def _modes(folder):
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_model_folder_modes_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    model = tiny_model()
    old = os.umask(umask)
    try:
        model.save_pretrained(tmp_path / "saved")
        export_model(tiny_model(), model.state_dict(), tmp_path / "exported")
        export_model(tiny_model(), model.state_dict(), tmp_path / "exported")  # replacing a folder
    finally:
        os.umask(old)
    for folder in (tmp_path / "saved", tmp_path / "exported"):
        modes = _modes(folder)
        assert "model.safetensors" in modes and "config.json" in modes and "universe.bed.gz" in modes
        for name, mode in modes.items():
            assert mode == (dir_mode if (folder / name).is_dir() else file_mode), (folder, name, oct(mode))
    assert sorted(os.listdir(tmp_path)) == ["exported", "saved"]  # no temporary folder left
    assert load_model(tmp_path / "exported").state_dict().keys() == model.state_dict().keys()


def test_modes_repaired_after_a_private_write(tmp_path):
    """Files made through tempfile (0600/0700) get the usual modes back."""
    import tempfile

    from atacformer.models._pretrained import set_default_modes

    d = tmp_path / "m"
    d.mkdir()
    fd, name = tempfile.mkstemp(dir=d)
    os.close(fd)
    sub = tempfile.mkdtemp(dir=d)
    old = os.umask(0o022)
    try:
        set_default_modes(d)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(name).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(sub).st_mode) == 0o755


pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} is absent")

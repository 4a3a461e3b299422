"""Models on non-cell examples train through the same loop (``pretrain(cfg, task=...)``):
the loss falls, a resumed run equals an uninterrupted one, and the exported folder loads."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from atacformer.models._pretrained import ModelConfig, PretrainedMixin
from atacformer.train import TrainConfig, pretrain
from atacformer.train.task import ArrayExamples, Task


@dataclass
class _RegConfig(ModelConfig):
    model_type = "test-regression"
    n_features: int = 5


class _Regression(PretrainedMixin, nn.Module):
    config_class = _RegConfig

    def __init__(self, config, vocab=None):
        super().__init__()
        self.config, self.vocab = config, None
        self.linear = nn.Linear(config.n_features, 1)

    def forward(self, x, y):
        return SimpleNamespace(loss=((self.linear(x).squeeze(-1) - y) ** 2).mean())


def _task(seed_data=0):
    rng = np.random.default_rng(seed_data)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    w = np.arange(1, 6, dtype=np.float32)
    y = (x @ w + 0.5).astype(np.float32)

    def build(seed):
        if seed is not None:
            torch.manual_seed(seed)
        return _Regression(_RegConfig())

    def batcher(rows, rng, labels):
        return {"x": torch.from_numpy(rows["x"]), "y": torch.from_numpy(rows["y"])}, len(rows["y"])

    return Task(build=build, examples=ArrayExamples({"x": x, "y": y}), batcher=batcher), x, y


def _cfg(out, **kw):
    return TrainConfig(**{**dict(model="tosica", out=str(out), max_steps=60, batch_size=20, lr=0.3,
                                 warmup_steps=1, save_every=30, progress=False, tensorboard=False), **kw})


def test_task_trains_resumes_and_exports(tmp_path):
    task, x, y = _task()
    full = pretrain(_cfg(tmp_path / "full"), task=task)
    assert full["steps"] == 60
    model = _Regression.from_pretrained(tmp_path / "full" / "model")
    with torch.no_grad():
        mse = float(((model.linear(torch.from_numpy(x)).squeeze(-1) - torch.from_numpy(y)) ** 2).mean())
    assert mse < 0.05 * float(np.var(y))  # least squares has an exact fit: the loop must get close

    # drop the last checkpoint and the export, as if the run had been killed after step 30;
    # resuming (with a freshly built task) gives the same weights as the uninterrupted run
    import shutil

    from atacformer.train import checkpoint as ckpt

    steps = dict(ckpt.list_checkpoints(tmp_path / "full"))
    assert sorted(steps) == [30, 60]
    steps[60].unlink() if steps[60].is_file() else shutil.rmtree(steps[60])
    shutil.rmtree(tmp_path / "full" / "model")
    again = pretrain(_cfg(tmp_path / "full", resume=True), task=_task()[0])
    assert again["resumed_from"] == 30
    a = _Regression.from_pretrained(tmp_path / "full" / "model").state_dict()
    b = model.state_dict()
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_task_model_needs_a_task(tmp_path):
    with pytest.raises(ValueError, match="its own command"):
        pretrain(_cfg(tmp_path / "x"))
    with pytest.raises(ValueError, match="pass data, not a task"):
        pretrain(TrainConfig(out=str(tmp_path / "y"), progress=False), task=_task()[0])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_array_examples_checks_shapes():
    with pytest.raises(ValueError, match="same number of rows"):
        ArrayExamples({"a": np.zeros((3, 2)), "b": np.zeros(4)})

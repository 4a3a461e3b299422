"""Exact resume after SIGKILL: ``atacformer pretrain`` killed mid-run, run again with
``--resume``, gives the loss curve (and weights) of the uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import torch

from atacformer.train.checkpoint import list_checkpoints
from atacformer.train.tracking import read_metrics


def _args(data, out):
    # dropout on (the RNG state must be restored), 2 epochs of 6 steps, 2 data-loader workers
    return ["pretrain", "--model", "atacformer", "--data", str(data), "--out", str(out), "--max-steps", "40",
            "--save-every", "5", "--batch-size", "8", "--max-length", "64", "--num-workers", "2",
            "--set", "dropout=0.1", "--set", "hidden_size=64", "--set", "intermediate_size=256",
            "--no-progress", "--no-tensorboard"]


def test_sigkill_then_resume_equals_uninterrupted(toy_corpus, tmp_path, cli, subprocess_env):
    cli(_args(toy_corpus, tmp_path / "full"))
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "atacformer", *_args(toy_corpus, out)], env=subprocess_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # a checkpoint exists and steps after it were logged
            steps = [s for s, _ in list_checkpoints(out)]
            rows = read_metrics(out / "metrics.csv")
            if steps and rows and rows[-1]["step"] > steps[-1] and rows[-1]["step"] > 12:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists(), "the run finished before it could be killed"
    killed_at = read_metrics(out / "metrics.csv")[-1]["step"]
    resumed_from = list_checkpoints(out)[-1][0]
    assert 0 < resumed_from < killed_at < 40

    cli(_args(toy_corpus, out) + ["--resume"])
    full = read_metrics(tmp_path / "full" / "metrics.csv")
    again = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in again] == list(range(1, 41))
    np.testing.assert_allclose([r["loss"] for r in again], [r["loss"] for r in full], rtol=0, atol=1e-6)
    assert [r["tokens_seen"] for r in again] == [r["tokens_seen"] for r in full]
    a = torch.load(tmp_path / "full" / "checkpoints" / "step-00000040.pt", weights_only=True)["model"]
    b = torch.load(out / "checkpoints" / "step-00000040.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)


class _CtrlCWhilePickled:
    """Sends this process SIGINT while torch.save is writing it."""

    def __reduce__(self):
        import os

        os.kill(os.getpid(), signal.SIGINT)
        return (int, (7,))


def test_ctrl_c_inside_a_checkpoint_write_finishes_it_first(tmp_path):
    from atacformer.train.checkpoint import _atomic_torch_save

    path = tmp_path / "checkpoints" / "step-00000005.pt"
    obj = {"w": torch.arange(1000.0), "x": _CtrlCWhilePickled()}
    try:
        _atomic_torch_save(obj, path)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the interrupt was swallowed")
    back = torch.load(path, weights_only=False)  # complete and loadable; no temporary left
    assert back["x"] == 7 and torch.equal(back["w"], torch.arange(1000.0))
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

"""``torchrun`` with 2 CPU processes (gloo), DDP and FSDP2, against the single-process run
with the same global batch.

Same global batch: batch_size 8 cells per step split into world_size x grad_accum = 2 parts;
the single process runs both parts as 2 accumulated micro-batches, each rank of the 2-process
run one of them. The parts, their random corruption / masking draws and the global loss
normalisation are identical by construction (see atacformer.train.batching), so the only
differences are float32 rounding in the gradient all-reduce (a sum in another order) and in
FSDP2's sharded norm / optimizer arithmetic: relative ~1e-7 per step, so 1e-5 on the losses
of a few steps is a bound with room, far below any real discrepancy (a wrong normalisation
or a different batch changes the loss at the 1e-3 level). Dropout is off (debug preset):
ranks draw dropout masks from their own generators.
"""

from __future__ import annotations

import numpy as np
import pytest

from atacformer.train.checkpoint import list_checkpoints
from atacformer.train.tracking import read_metrics

STEPS = 5


def _args(model, data, out, extra=()):
    a = ["pretrain", "--model", model, "--data", str(data), "--out", str(out), "--max-steps", str(STEPS),
         "--batch-size", "8", "--max-length", "48", "--warmup-steps", "2", "--no-progress", "--no-tensorboard",
         "--set", "hidden_size=16", "--set", "intermediate_size=32", "--set", "num_heads=2"]
    if model == "masked-bin":
        a += ["--set", "embedding_dim=8", "--set", "decoder_dim=8", "--set", "decoder_hidden_size=8"]
    return a + list(extra)


def _losses(out):
    rows = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    return np.array([r["loss"] for r in rows]), rows[-1]["tokens_seen"]


def _single(args):
    """The reference run in this process, from the same command line."""
    from atacformer.cli import build_parser
    from atacformer.train.cli import config_from_args
    from atacformer.train.trainer import pretrain

    pretrain(config_from_args(build_parser().parse_args(args)))


MASKED_BIN = ["--set", "closed_bin_sampling=true", "--set", "decoder=cross_attention", "--supervised"]


@pytest.mark.parametrize("model,parallel,extra", [
    ("atacformer", "ddp", []),
    ("masked-bin", "fsdp", MASKED_BIN + ["--activation-checkpointing"]),
    pytest.param("atacformer", "fsdp", [], marks=pytest.mark.slow),
    pytest.param("masked-bin", "ddp", MASKED_BIN, marks=pytest.mark.slow),
])
def test_torchrun_matches_single_process(toy_h5ad, tmp_path, cli, model, parallel, extra):
    _single(_args(model, toy_h5ad, tmp_path / "single", extra + ["--grad-accum", "2"]))
    ref, ref_tokens = _losses(tmp_path / "single")
    cli(_args(model, toy_h5ad, tmp_path / parallel, extra + ["--parallel", parallel]), torchrun=2)
    losses, tokens = _losses(tmp_path / parallel)
    np.testing.assert_allclose(losses, ref, rtol=1e-5, atol=0)
    assert tokens == ref_tokens
    assert (tmp_path / parallel / "model" / "model.safetensors").exists()
    assert ref[0] != ref[-1]  # it trained


@pytest.mark.parametrize("objective,parallel", [
    ("triplet", "ddp"),
    pytest.param("batch-adversarial", "fsdp", marks=pytest.mark.slow),
])
def test_torchrun_finetune_matches_single_process(toy_h5ad, tmp_path, cli, objective, parallel):
    """Fine-tuning runs under torchrun too: each rank mines its triplets (or scores its
    batches) in its own micro-batch, as the single process does in each accumulated one."""
    from atacformer.train import TrainConfig, pretrain

    tiny = {"hidden_size": 16, "intermediate_size": 32, "num_heads": 2}
    pretrain(TrainConfig(data=[str(toy_h5ad)], out=str(tmp_path / "base"), preset="debug", max_steps=0,
                         model_overrides=tiny, progress=False, tensorboard=False))
    base = str(tmp_path / "base" / "model")
    common = ["--objective", objective, "--batch-key", "cell_type", "--max-steps", str(STEPS), "--batch-size", "8",
              "--warmup-steps", "2", "--no-progress"]
    from atacformer.cli import build_parser

    args = build_parser().parse_args(["finetune", base, "--data", str(toy_h5ad), "-o", str(tmp_path / "single"),
                                      "--grad-accum", "2", *common])
    args.func(args)
    ref, ref_tokens = _losses(tmp_path / "single")
    cli(["finetune", base, "--data", str(toy_h5ad), "-o", str(tmp_path / parallel), "--parallel", parallel,
         *common], torchrun=2)
    losses, tokens = _losses(tmp_path / parallel)
    np.testing.assert_allclose(losses, ref, rtol=1e-5, atol=0)
    assert tokens == ref_tokens and ref[0] != ref[-1]


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_under_fsdp_and_in_one_process(toy_h5ad, tmp_path, cli):
    """A 2-rank FSDP2 checkpoint (gathered to full state dicts) resumes exactly under FSDP2
    and in a single process with grad_accum 2 (the same micro-batches)."""
    extra = ["--parallel", "fsdp", "--save-every", "2", "--keep-checkpoints", "10"]
    cli(_args("masked-bin", toy_h5ad, tmp_path / "full", extra), torchrun=2)
    ref, _ = _losses(tmp_path / "full")
    run = tmp_path / "run"
    cli(_args("masked-bin", toy_h5ad, run, extra), torchrun=2)
    for resume in (lambda: cli(_args("masked-bin", toy_h5ad, run, extra + ["--resume"]), torchrun=2),
                   lambda: _single(_args("masked-bin", toy_h5ad, run, ["--grad-accum", "2", "--resume"]))):
        for step, path in list_checkpoints(run):
            if step > 2:
                path.unlink()
        resume()
        losses, _ = _losses(tmp_path / "run")
        np.testing.assert_allclose(losses, ref, rtol=1e-5, atol=0)

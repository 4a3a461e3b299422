"""The pretraining loop: one function, :func:`pretrain`, for a laptop CPU or many GPUs.

A step: this rank's ``grad_accum`` micro-batches (built by data-loader workers, see
:mod:`atacformer.train.batching`) run forward and backward under bf16 autocast on CUDA;
gradients are synchronised on the last one only; then gradient clipping, AdamW and the
learning-rate schedule. Loss normalisation is global: micro-batch ``i`` of rank ``r``
contributes ``loss_i * w_i / W``, where ``w_i`` counts what its loss averages over (tokens
for Atacformer, cells for the masked-bin model) and ``W`` is the sum of ``w`` over the
step's micro-batches on all ranks. A step's gradient is then the same however its cells
are spread over ranks and micro-batches, which is what makes ``torchrun`` runs equal the
single-process run with the same global batch.

Outputs in ``OUT``: ``train_config.json``, ``metrics.csv`` (and ``tensorboard/``),
``checkpoints/step-*.pt`` (see :mod:`atacformer.train.checkpoint`), ``model/`` (the
exported model folder) and ``summary.json``.

This is the package's only training loop: every objective (replaced-token detection, profile
reconstruction, the masked-bin model; later fine-tuning heads) is a model whose forward
returns a loss, and a batcher that turns cells into its inputs; the benchmark, the demo and
experiments all train through :func:`pretrain`. A step whose loss or gradient norm is not
finite stops the run (:class:`NonFiniteLossError`): the last good checkpoint stays and no
model is exported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import types
from pathlib import Path

import numpy as np
import torch

from atacformer.train import checkpoint as ckpt
from atacformer.train.batching import MicroBatches, make_loader, part_rng, plan_epoch
from atacformer.errors import AtacformerError, OutputError
from atacformer.train.build import build_model, describe, model_inputs, save_json, token_probabilities
from atacformer.train.collate import make_batcher, torch_generator
from atacformer.train.config import FINETUNE_OBJECTIVES, PAIRED_OBJECTIVES, RESUMABLE_FIELDS, TrainConfig
from atacformer.train.data import check_label_column, prepare_corpora
from atacformer.train.optim import build_optimizer, build_scheduler
from atacformer.train.parallelize import (
    all_reduce_sum, barrier, clip_grad_norm, gather_objects, grad_sync, init_distributed, parallelize,
    shutdown,
)
from atacformer.train.task import TASK_MODELS
from atacformer.train.tracking import METRICS_FILE, MetricsLogger, read_metrics

logger = logging.getLogger(__name__)

CONFIG_FILE = "train_config.json"
#: Files of a run in OUT (what ``overwrite`` replaces; anything else in OUT is refused).
RUN_FILES = (CONFIG_FILE, METRICS_FILE, "summary.json", "model", ckpt.CHECKPOINT_DIR, "tensorboard", "corpus")
#: Steps timed before a time budget sizes the run.
CALIBRATION_STEPS = 5


class NonFiniteLossError(AtacformerError):
    """A training step produced a NaN or infinite loss or gradient."""


def pretrain(cfg: TrainConfig, data=None, rna=None, task=None) -> dict:
    """Run (or resume) pretraining as configured; returns the run summary.

    Parameters
    ----------
    cfg
        The run's settings (:class:`TrainConfig`).
    data
        Cells in memory instead of (or besides) ``cfg.data`` paths: an AnnData (its own peaks
        are the vocabulary unless ``cfg.bins`` / ``cfg.universe`` say otherwise), a
        :class:`~atacformer.tokenizers.TokenizedCells`, or a list of them. They are written
        once into ``OUT/corpus``.
    rna
        A paired objective (``"craft"``, ``"multimodal"``): the RNA counts as an AnnData instead
        of ``cfg.rna``.
    task
        A :class:`~atacformer.train.task.Task`: a model trained on examples that are not
        tokenized cells (TOSICA, GET, the DNA ranker; ``cfg.model`` names it). Its examples,
        batcher and model builder stand in for the corpus; the loop is the same.

    Launch several processes with ``torchrun --nproc-per-node N -m atacformer pretrain ...``
    (or call this function in each): DDP by default, FSDP2 with ``parallel="fsdp"``.

    Examples
    --------
    >>> summary = pretrain(TrainConfig(out="run"), data=adata)  # doctest: +SKIP
    >>> load_model("run/model")  # doctest: +SKIP
    """
    info = init_distributed(cfg.device)
    try:
        return _Run(cfg, info, data, rna, task).run()
    finally:
        shutdown(info)


def check_paired_inputs(cfg: TrainConfig, data=None, rna=None):
    """The RNA AnnData of a paired run, after checking that it holds counts and that some
    training cell (of inputs with cell names) has an RNA partner outside the excluded cells."""
    from atacformer.train.data import input_obs
    from atacformer.train.paired import check_pairing, excluded_cells, read_rna

    if rna is None and not cfg.rna:
        raise ValueError(f"objective {cfg.objective!r} needs the paired RNA counts (--rna RNA.h5ad)")
    adata = read_rna(rna if rna is not None else cfg.rna)
    named = [(name, obs) for name, obs in input_obs(cfg.data, data) if obs is not None]
    if named:
        names = np.concatenate([obs.index.astype(str).to_numpy() for _, obs in named])
        check_pairing(names, adata, excluded_cells(cfg.exclude_cells), ", ".join(n for n, _ in named))
    return adata


def base_vocabulary(init_from):
    """The vocabulary of the ``init_from`` model folder (training data is tokenized into it)."""
    from atacformer.models._pretrained import load_folder_vocab, resolve_model_dir

    vocab = load_folder_vocab(resolve_model_dir(init_from))
    if vocab is None:
        raise ValueError(f"{init_from}: the model folder has no vocabulary (universe.bed.gz) to tokenize the "
                         "training cells into")
    return vocab


def check_output_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to write a run into a folder that holds anything else, or an earlier run
    (unless ``resume``, or ``overwrite`` which removes the earlier run's files first)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder; choose another --out")
    entries = {p.name for p in out.iterdir()}
    # a config being written, or a corpus build an interrupted run left (the next build removes it)
    foreign = sorted(e for e in entries - set(RUN_FILES) - {f"{CONFIG_FILE}.tmp"}
                     if not e.startswith(".corpus.build-"))
    if foreign:
        raise OutputError(f"{out} holds files that are not a training run's ({', '.join(foreign[:5])}"
                              f"{', ...' if len(foreign) > 5 else ''}); choose a new or empty --out")
    if not entries or resume:
        return
    if CONFIG_FILE in entries and not overwrite:
        raise OutputError(f"{out} holds an earlier run: pass --resume to continue it, --overwrite to "
                              "replace it, or choose a new --out")
    import shutil

    for name in RUN_FILES:
        if name == "corpus":
            continue  # a tokenized corpus is reused when its inputs are the same
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def settle_config(cfg: TrainConfig, out: Path) -> TrainConfig:
    """The resolved config of a new run, or of a resumed one (saved values for resumable
    fields the new config leaves unset; any other difference is an error)."""
    path = out / CONFIG_FILE
    if not (cfg.resume and path.exists()):
        return cfg.resolved()
    saved = TrainConfig.load(path)
    fill = {k: getattr(saved, k) for k in RESUMABLE_FIELDS if getattr(cfg, k) is None}
    merged = TrainConfig.from_dict({**cfg.to_dict(), **fill}).resolved()
    merged.check_resumable(saved)
    return merged


class _Run:
    def __init__(self, cfg: TrainConfig, info, data=None, rna=None, task=None):
        self.t_created = time.perf_counter()
        self.info = info
        self.out = Path(cfg.out)
        self.task = task
        if (task is None) != (cfg.model not in TASK_MODELS):
            raise ValueError(f"model {cfg.model!r} " + ("trains on tokenized cells: pass data, not a task"
                             if task is not None else "trains through its own command (a Task of examples)"))
        if info.is_main:
            check_output_folder(self.out, cfg.resume, cfg.overwrite)
        if task is not None:
            self._setup_task(cfg, task)
        else:
            self._setup_cells(cfg, data, rna)
        self._setup_optimisation()

    def _setup_task(self, cfg: TrainConfig, task) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg = settle_config(cfg, self.out)
        if not cfg.resume and ckpt.list_checkpoints(self.out):
            raise ValueError(f"{self.out} holds checkpoints of an earlier run: pass --resume to continue "
                             "it, or choose a new --out")
        self.corpus = task.examples
        self.mi = types.SimpleNamespace(labels=task.labels, cell_mask=None)
        self.model_raw = task.build(cfg.seed)
        self.batcher = task.batcher
        self.lengths = np.asarray(task.examples.lengths(), np.int64)

    def _setup_cells(self, cfg: TrainConfig, data, rna) -> None:
        info = self.info
        if cfg.objective in FINETUNE_OBJECTIVES:  # bad labels are refused before anything is written
            check_label_column(cfg.data, data, cfg.batch_key if cfg.objective == "batch-adversarial"
                               else cfg.label_key)
        self.rna = None
        if cfg.objective in PAIRED_OBJECTIVES:  # RNA that is not counts, or no pair, before writing
            self.rna = check_paired_inputs(cfg, data, rna)
        if cfg.init_from:
            cfg.base_config()  # a missing or foreign base model too
        self.out.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg = settle_config(cfg, self.out)
        if not cfg.resume and ckpt.list_checkpoints(self.out):
            raise ValueError(f"{self.out} holds checkpoints of an earlier run: pass --resume to continue "
                             "it, or choose a new --out")
        barrier(info)
        vocab = base_vocabulary(cfg.init_from) if cfg.init_from else None
        if info.is_main:
            self.corpus = prepare_corpora(cfg.data, self.out, cfg.bins, cfg.universe, cfg.genome, build=True,
                                          cells=data, vocab=vocab)
        barrier(info)
        if not info.is_main:
            self.corpus = prepare_corpora(cfg.data, self.out, cfg.bins, cfg.universe, cfg.genome, build=False,
                                          cells=data, vocab=vocab)
        self.mi = model_inputs(cfg, self.corpus, self.rna)
        model = self.model_raw = build_model(cfg, self.mi, seed=cfg.seed)
        probs = token_probabilities(self.mi) if cfg.model == "atacformer" and cfg.replacement == "frequency" \
            else None
        self.batcher = make_batcher(model, cfg.context, cfg.order, probs)
        self.lengths = self.batcher.effective_lengths(self.corpus.lengths())
        if self.mi.cell_mask is not None:  # cells a run must not train on (unpaired, held out)
            self.lengths = np.where(self.mi.cell_mask, self.lengths, 0)

    def _fresh_model(self):
        """An untrained model of the run's config (the exported folder's skeleton)."""
        return self.task.build(None) if self.task is not None else build_model(self.cfg, self.mi)

    def _setup_optimisation(self) -> None:
        cfg, info, model = self.cfg, self.info, self.model_raw
        if info.is_main:
            logger.info("%s", describe(model))
        self.n_parts = info.world_size * cfg.grad_accum
        if cfg.batch_size < self.n_parts:
            raise ValueError(f"batch_size {cfg.batch_size} is smaller than world_size x grad_accum = "
                             f"{self.n_parts}: every micro-batch needs at least one cell")
        self.sampling = bool(getattr(model.config, "closed_bin_sampling", False))
        self.model = parallelize(model.to(info.device), info, parallel=cfg.parallel, compile=cfg.compile,
                                 activation_checkpointing=cfg.activation_checkpointing)
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), cfg.eps,
                                         info.device, embedding_lr_scale=cfg.embedding_lr_scale or 1.0)
        self.planned = cfg.max_steps is None  # sized from the data: epochs, then the time budget
        if self.planned:
            n_cells = int(np.count_nonzero(self.lengths))
            steps = max(1, int(np.ceil(cfg.epochs * n_cells / cfg.batch_size)), cfg.min_steps or 0)
            self.cfg = cfg = dataclasses.replace(cfg, max_steps=steps, warmup_steps=min(cfg.warmup_steps,
                                                                                         max(steps // 10, 1)))
        self.scheduler = build_scheduler(self.optimizer, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
        if info.is_main and not (cfg.resume and (self.out / CONFIG_FILE).exists()):
            cfg.save(self.out / CONFIG_FILE)
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and info.device.type == "cuda")
        self.autocast = (torch.autocast(info.device.type, dtype=torch.bfloat16) if bf16
                         else contextlib.nullcontext())
        self.state = {"epoch": 0, "step_in_epoch": 0, "tokens_seen": 0, "step": 0}

    # -- resume ---------------------------------------------------------------------------
    def _signature(self) -> dict:
        return {"n_cells": len(self.lengths), "length_sum": int(self.lengths.sum()),
                "batch_size": self.cfg.batch_size, "n_parts": self.n_parts}

    def _resume(self) -> None:
        path = ckpt.latest_checkpoint(self.out) if self.cfg.resume else None
        if path is None:
            if self.cfg.resume:
                logger.warning("%s: no checkpoint to resume from; starting at step 0", self.out)
            return
        loaded = ckpt.load_checkpoint(path, self.model, self.optimizer, self.scheduler, self.info.is_main)
        saved = loaded["state"]
        mismatch = {k: (saved.get(k), v) for k, v in self._signature().items() if saved.get(k) != v}
        if mismatch:
            raise ValueError(f"{path}: the data or batch layout changed since this checkpoint "
                             f"(saved, now): {mismatch}; world_size x grad_accum, batch_size and the corpus "
                             "must stay the same for an exact resume")
        self.state = {k: saved[k] for k in self.state}
        rngs = loaded["rng"]
        if len(rngs) != self.info.world_size:
            logger.warning("resuming %d ranks from %d: dropout draws will differ", self.info.world_size, len(rngs))
        ckpt.set_rng_state(rngs[self.info.rank % len(rngs)], self.info.device)
        if self.info.is_main:
            logger.info("resumed from %s (step %d, epoch %d)", path, saved["step"], saved["epoch"])

    def _save(self) -> None:
        rngs = gather_objects(ckpt.rng_state(self.info.device), self.info)
        ckpt.save_checkpoint(self.out, self.state["step"], self.model, self.optimizer, self.scheduler,
                             {**self.state, **self._signature(), "world_size": self.info.world_size}, rngs,
                             self.info.is_main, self.cfg.keep_checkpoints)
        barrier(self.info)

    # -- one step -------------------------------------------------------------------------
    def _step(self, micro: list[dict]) -> dict:
        info, model = self.info, self.model
        metas = [m.pop("meta") for m in micro]
        local = [sum(m["weight"] for m in metas), sum(m["tokens"] for m in metas),
                 sum(m["slots"] for m in metas)]
        total_w, tokens, slots = all_reduce_sum(local, info)
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=info.device)
        for i, (batch, meta) in enumerate(zip(micro, metas)):
            inputs = {k: v.to(info.device, non_blocking=True) for k, v in batch.items()}
            if self.sampling:  # closed-bin draws, seeded by the micro-batch's position
                rng = part_rng(self.cfg.seed + 1, self.state["epoch"], meta["step"], meta["part"])
                inputs["generator"] = torch_generator(rng, info.device)
            with grad_sync(model, i == len(micro) - 1):
                with self.autocast:
                    loss = model(**inputs).loss
                (loss * (meta["weight"] * info.world_size / total_w)).backward()
            loss_sum += loss.detach().double() * meta["weight"]
        grad_norm = clip_grad_norm(model, self.cfg.max_grad_norm)
        loss_value = all_reduce_sum([float(loss_sum)], info)[0] / total_w
        if not (np.isfinite(loss_value) and np.isfinite(grad_norm)):
            step = self.state["step"] + 1
            raise NonFiniteLossError(
                f"step {step}: the loss is {loss_value} and the gradient norm {grad_norm}; training stopped "
                f"before this step changed the weights. Nothing was exported; the last good checkpoint (if "
                f"any) is kept in {self.out / ckpt.CHECKPOINT_DIR}. Lower --lr (now {self.cfg.lr}) or check "
                "the inputs")
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss_value, "lr": lr, "grad_norm": grad_norm, "tokens": tokens, "slots": slots}

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> dict:
        cfg, info = self.cfg, self.info
        self._resume()
        start_step = self.state["step"]
        tracker = MetricsLogger(self.out, resume_step=start_step if start_step else None,
                                tensorboard=cfg.tensorboard, enabled=info.is_main)
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=start_step, unit="step", desc="pretraining",
                   disable=not (info.is_main and cfg.progress), dynamic_ncols=True)
        totals = {"data": 0.0, "time": 0.0, "tokens": 0, "slots": 0}
        window = {"data": 0.0, "time": 0.0, "tokens": 0, "slots": 0}
        t_start = time.perf_counter()
        last_saved, row = start_step, None
        try:
            while self.state["step"] < cfg.max_steps:
                plan = plan_epoch(self.lengths, cfg.batch_size, self.state["epoch"], cfg.seed, cfg.batching,
                                  cfg.bucket_window, cfg.block_size, min_cells=self.n_parts)
                ds = MicroBatches(self.corpus, plan, self.batcher, seed=cfg.seed, rank=info.rank,
                                  world_size=info.world_size, grad_accum=cfg.grad_accum,
                                  start_step=self.state["step_in_epoch"], labels=self.mi.labels)
                it = iter(make_loader(ds, cfg.num_workers, pin_memory=info.device.type == "cuda"))
                while self.state["step"] < cfg.max_steps and self.state["epoch"] == plan.epoch:
                    t0 = time.perf_counter()
                    micro = [next(it) for _ in range(cfg.grad_accum)]
                    t_data = time.perf_counter() - t0
                    out = self._step(micro)
                    dt = time.perf_counter() - t0
                    self._advance(plan.n_steps, out["tokens"])
                    for acc in (totals, window):
                        acc["data"] += t_data
                        acc["time"] += dt
                        acc["tokens"] += out["tokens"]
                        acc["slots"] += out["slots"]
                    step = self.state["step"]
                    bar.update(1)
                    if self.planned and cfg.time_budget and step == start_step + CALIBRATION_STEPS:
                        self._fit_time_budget(totals["time"] / CALIBRATION_STEPS, bar)
                        cfg = self.cfg
                    if step % cfg.log_every == 0 or step == cfg.max_steps:
                        row = self._row(out, window, time.perf_counter() - t_start)
                        tracker.log(row)
                        bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
                        window = dict.fromkeys(window, 0)
                    if step % cfg.save_every == 0 or step == cfg.max_steps:
                        self._save()
                        last_saved = step
                del it
        finally:
            bar.close()
            tracker.close()
        if last_saved != self.state["step"]:
            self._save()
        return self._finish(totals, row, time.perf_counter() - t_start, start_step)

    def _fit_time_budget(self, step_s: float, bar) -> None:
        """Shorten a data-sized plan to what fits in ``time_budget`` minutes (counted from
        the start of the run, tokenization included) at the measured step time."""
        cfg = self.cfg
        left = cfg.time_budget * 60 - (time.perf_counter() - self.t_created) - 10.0  # 10 s to export
        fit = self.state["step"] + max(int(left / max(step_s, 1e-6)), 0)
        if fit >= cfg.max_steps:
            return
        planned = cfg.max_steps
        self.cfg = dataclasses.replace(cfg, max_steps=max(fit, self.state["step"]))
        for fn in self.scheduler.lr_lambdas:
            fn.max_steps = self.cfg.max_steps
        bar.total = self.cfg.max_steps
        bar.refresh()
        if self.info.is_main:
            self.cfg.save(self.out / CONFIG_FILE)
            per_epoch = max(int(np.count_nonzero(self.lengths)), 1) / cfg.batch_size
            logger.warning("the %g-minute time budget fits %d of the %d planned steps (%.1f s a step, %.1f of "
                           "%.1f passes over the cells); pass --time-budget MINUTES or --max-steps N to train "
                           "longer (a GPU run takes --device cuda)", cfg.time_budget, self.cfg.max_steps, planned,
                           step_s, self.cfg.max_steps / per_epoch, planned / per_epoch)

    def _advance(self, n_steps: int, tokens: float) -> None:
        s = self.state
        s["step"] += 1
        s["step_in_epoch"] += 1
        s["tokens_seen"] += int(tokens)
        if s["step_in_epoch"] >= n_steps:  # the data position is always a step still to run
            s["epoch"] += 1
            s["step_in_epoch"] = 0

    def _row(self, out: dict, window: dict, elapsed: float) -> dict:
        return {"step": self.state["step"], "loss": float(out["loss"]), "lr": float(out["lr"]),
                "tokens_seen": self.state["tokens_seen"],
                "tokens_per_s": window["tokens"] / max(window["time"], 1e-9),
                "grad_norm": float(out["grad_norm"]),
                "padding": 1.0 - window["tokens"] / max(window["slots"], 1),
                "data_wait": window["data"] / max(window["time"], 1e-9),
                "epoch": self.state["epoch"], "elapsed_s": elapsed}

    def _finish(self, totals: dict, row: dict | None, elapsed: float, start_step: int) -> dict:
        state = ckpt.full_model_state(self.model)
        if row is None:  # nothing left to run (a finished run resumed): its last logged row
            rows = read_metrics(self.out / METRICS_FILE)
            row = rows[-1] if rows else None
        summary = {
            "steps": self.state["step"], "resumed_from": start_step, "epochs": self.state["epoch"],
            "final_loss": None if row is None else row["loss"], "tokens_seen": self.state["tokens_seen"],
            "tokens_per_s": totals["tokens"] / max(totals["time"], 1e-9),
            "padding": 1.0 - totals["tokens"] / max(totals["slots"], 1),
            "data_wait": totals["data"] / max(totals["time"], 1e-9), "elapsed_s": elapsed,
            "world_size": self.info.world_size, "device": str(self.info.device),
            "model_dir": str(self.out / "model"), "cells": int(np.count_nonzero(self.lengths)),
        }
        if self.info.is_main:
            fresh = self._fresh_model()
            ckpt.export_model(fresh, state, self.out / "model")
            save_json(self.out / "summary.json", summary)
            logger.info("exported %s; %d steps, final loss %s, %.0f tokens/s, padding %.1f%%, data wait %.1f%%",
                        self.out / "model", summary["steps"], summary["final_loss"], summary["tokens_per_s"],
                        100 * summary["padding"], 100 * summary["data_wait"])
        barrier(self.info)
        return summary

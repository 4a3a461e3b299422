"""Pretraining recipes compared in the benchmark, and the one small training loop they share.

A :class:`Recipe` names an objective (replaced-token detection, the masked-bin objective of
seed 000, or no training at all) and the quality switches of
:mod:`atacformer.models._quality`: replacement tokens drawn from corpus frequencies, a
cell-level contrastive term between two token subsets of a cell, token embeddings
initialised from LSI loadings, TF-IDF-weighted or ``<cls>`` pooling and removal of the
depth-driven direction. :func:`pretrain_cells` trains in-process on a CSR of cells (no
labels ever); it is the single adapter between the benchmark / main job and training, kept
small so that it can later defer to :func:`atacformer.train.pretrain` once that accepts
these switches.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """One way to pretrain and pool an atacformer model (see module notes).

    Examples
    --------
    >>> Recipe("rtd-freq", replacement="frequency").objective
    'rtd'
    """

    name: str
    objective: str = "rtd"  # "rtd", "masked-bin" or "none" (the initialised model, no steps)
    replacement: str = "uniform"  # "uniform" or "frequency"
    replace_prob: float = 0.45
    contrastive: float = 0.0  # weight of the two-view InfoNCE term (0 = off)
    temperature: float = 0.1
    lsi_init: bool = False
    lsi_components: int | None = None  # LSI components in the token table (default: all dims)
    lsi_offset: float = 0.0  # constant of the remaining dims (keeps LayerNorm from rescaling tokens)
    pooling: str = "mean"  # "mean", "idf" (TF-IDF-weighted mean) or "cls" (masked-bin only)
    remove_depth: bool = True
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    max_length: int = 256
    batch_size: int = 32
    steps: int = 200
    lr: float = 1e-3
    embedding_lr_scale: float = 1.0  # lr multiplier of the token table (LSI-initialised runs)
    seed: int = 0

    def replace(self, **kw) -> "Recipe":
        """A copy with fields changed."""
        return dataclasses.replace(self, **kw)


#: The recipes compared side by side (``atacformer benchmark --recipes``); the first is the
#: default of the main job. Step counts are CPU-scale; scale them with ``--steps``.
RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("lsi-offset+contrastive", lsi_init=True, lsi_components=30, lsi_offset=2.0, replacement="frequency",
           contrastive=1.0, pooling="idf", remove_depth=False, embedding_lr_scale=0.1),
    Recipe("lsi-init+contrastive", lsi_init=True, replacement="frequency", contrastive=1.0, pooling="idf",
           embedding_lr_scale=0.1),
    Recipe("rtd-uniform", pooling="mean", remove_depth=False),
    Recipe("rtd-frequency", replacement="frequency", pooling="mean"),
    Recipe("rtd-frequency+idf", replacement="frequency", pooling="idf"),
    Recipe("rtd+contrastive", replacement="frequency", contrastive=1.0, pooling="idf"),
    Recipe("lsi-init+rtd", lsi_init=True, replacement="frequency", pooling="idf", embedding_lr_scale=0.1),
    Recipe("lsi-init-untrained", objective="none", lsi_init=True, pooling="idf"),
    Recipe("lsi-offset-untrained", objective="none", lsi_init=True, lsi_components=30, lsi_offset=2.0,
           pooling="idf", remove_depth=False),
    Recipe("random-untrained", objective="none", pooling="mean", remove_depth=False),
    Recipe("masked-bin-cls", objective="masked-bin", pooling="cls"),
    Recipe("masked-bin-mean", objective="masked-bin", pooling="mean"),
]}


def build_model(recipe: Recipe, X, vocab):
    """A fresh model for ``recipe`` over ``vocab`` (LSI-initialised when asked)."""
    from atacformer.models import (
        AtacformerConfig, AtacformerForReplacedTokenDetection, MaskedBinForPretraining,
        init_embeddings_from_lsi,
    )

    torch.manual_seed(recipe.seed)
    common = dict(hidden_size=recipe.hidden_size, num_layers=recipe.num_layers, num_heads=recipe.num_heads,
                  intermediate_size=4 * recipe.hidden_size, max_length=recipe.max_length, dropout=0.0)
    if recipe.objective == "masked-bin":
        return MaskedBinForPretraining.from_vocab(vocab, closed_bin_sampling=True, **common)
    cfg = AtacformerConfig.for_vocab(vocab, replace_prob=recipe.replace_prob, **common)
    model = AtacformerForReplacedTokenDetection(cfg, vocab=vocab)
    if recipe.lsi_init:
        init_embeddings_from_lsi(model, X, seed=recipe.seed, n_components=recipe.lsi_components,
                                 offset=recipe.lsi_offset)
    return model


def _optimizer(model, recipe: Recipe):
    table = [p for n, p in model.named_parameters() if "token_embeddings" in n]
    rest = [p for n, p in model.named_parameters() if "token_embeddings" not in n]
    groups = [{"params": rest, "lr": recipe.lr}]
    if table:
        groups.append({"params": table, "lr": recipe.lr * recipe.embedding_lr_scale, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, weight_decay=0.01)


def pretrain_cells(recipe: Recipe, X, vocab, *, progress=None, device=None) -> tuple[object, dict]:
    """Pretrain a model on the cells of ``X`` (cells x regions CSR in ``vocab``), no labels.

    Parameters
    ----------
    recipe
        What to train (``steps`` optimizer steps of ``batch_size`` random cells).
    X, vocab
        Tokenized cells and their vocabulary.
    progress
        Optional callable ``progress(step, n_steps, loss)`` called every 10% of the run.
    device
        Where to train (default CPU).

    Returns
    -------
    model, info
        The trained model (eval mode) and ``{"steps", "seconds", "final_loss"}``.

    Examples
    --------
    >>> model, info = pretrain_cells(RECIPES["rtd-frequency"].replace(steps=5), cells.X, vocab)  # doctest: +SKIP
    """
    from atacformer.models import (
        ReplacedTokenCollator, as_token_lists, cell_contrastive_loss, pad_token_lists, token_frequencies,
        two_views,
    )

    t0 = time.perf_counter()
    model = build_model(recipe, X, vocab).to(device or "cpu")
    dev = next(model.parameters()).device
    cells = [t for t in as_token_lists(X) if len(t)]
    rng = np.random.default_rng(recipe.seed)
    info = {"steps": 0, "seconds": 0.0, "final_loss": float("nan")}
    if recipe.objective == "none" or recipe.steps <= 0 or not cells:
        info["seconds"] = time.perf_counter() - t0
        return model.eval(), info
    if recipe.objective == "masked-bin":
        collate = model.collator(max_length=recipe.max_length, seed=recipe.seed)
    else:
        probs = token_frequencies(X) if recipe.replacement == "frequency" else None
        collate = ReplacedTokenCollator(model.config, max_length=recipe.max_length, seed=recipe.seed,
                                        token_probs=probs)
    opt = _optimizer(model, recipe)
    warm = max(1, recipe.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, recipe.steps) / recipe.steps)))
    model.train()
    ema = None
    for step in range(recipe.steps):
        batch = [cells[i] for i in rng.choice(len(cells), min(recipe.batch_size, len(cells)), replace=False)]
        inputs = {k: v.to(dev) for k, v in collate(batch).items()}
        loss = model(**inputs).loss
        if recipe.contrastive > 0 and recipe.objective == "rtd":
            va, vb = two_views(batch, rng, max_length=recipe.max_length)
            pad = model.config.pad_token_id
            za = model.embed(*[t.to(dev) for t in pad_token_lists(va, pad, recipe.max_length, rng)])
            zb = model.embed(*[t.to(dev) for t in pad_token_lists(vb, pad, recipe.max_length, rng)])
            loss = loss + recipe.contrastive * cell_contrastive_loss(za, zb, recipe.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        val = float(loss.detach())
        ema = val if ema is None else 0.9 * ema + 0.1 * val
        if progress is not None and (step + 1) % max(1, recipe.steps // 10) == 0:
            progress(step + 1, recipe.steps, ema)
    info.update(steps=recipe.steps, seconds=time.perf_counter() - t0, final_loss=ema)
    logger.info("recipe %s: %d steps in %.1fs, loss %.4f", recipe.name, recipe.steps, info["seconds"], ema)
    return model.eval(), info


def embed_recipe(adata, model, recipe: Recipe, key_added: str = "X_atacformer") -> None:
    """Embed ``adata`` (tokens in ``X``) with ``model`` pooled as ``recipe`` says."""
    from atacformer.tools import embed

    masked_bin = recipe.objective == "masked-bin"
    embed(adata, model, pooling=("cls" if recipe.pooling == "cls" else "mean") if masked_bin else None,
          token_weights="idf" if recipe.pooling == "idf" and not masked_bin else None,
          remove_depth=recipe.remove_depth, key_added=key_added)

"""AdamW and its learning-rate schedule: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                    eps: float, device: torch.device, embedding_lr_scale: float = 1.0) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (linear weights, embedding tables) only: biases
    and LayerNorm parameters are not decayed (the nanoGPT / BERT rule). With
    ``embedding_lr_scale != 1`` the token table gets its own group at that multiple of the
    learning rate and no weight decay (an LSI-initialised table learns slowly). The fused
    CUDA kernel is used on CUDA."""
    decay, no_decay, table = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if embedding_lr_scale != 1.0 and "token_embeddings" in name:
            table.append(p)
        else:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if table:
        groups.append({"params": table, "weight_decay": 0.0, "lr": lr * embedding_lr_scale})
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=device.type == "cuda" or None)


def lr_factor(step: int, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based).

    Examples
    --------
    >>> [round(lr_factor(s, 2, 10, 0.1), 3) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.55, 0.1]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(max_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Picklable schedule function for :class:`torch.optim.lr_scheduler.LambdaLR`."""

    def __init__(self, warmup_steps: int, max_steps: int, min_ratio: float):
        self.warmup_steps, self.max_steps, self.min_ratio = warmup_steps, max_steps, min_ratio

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.warmup_steps, self.max_steps, self.min_ratio)


def build_scheduler(optimizer, warmup_steps: int, max_steps: int, min_ratio: float):
    """``LambdaLR`` following :func:`lr_factor` (stepped once per optimizer step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, max_steps, min_ratio))

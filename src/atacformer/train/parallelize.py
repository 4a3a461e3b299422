"""Everything that makes a single-device model run at scale, in one place (as in torchtitan).

The model code knows nothing of devices, ranks or compilers. Here:

- :func:`init_distributed` reads ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``) and starts a process group: NCCL on CUDA, gloo on CPU;
- :func:`parallelize` applies, in this order, activation checkpointing (each transformer
  block recomputed in the backward pass), ``torch.compile`` (each block, dynamic shapes,
  since bucketed batches change length), and data parallelism: DDP, or FSDP2
  (:func:`torch.distributed.fsdp.fully_shard` on each block, then on the whole model);
- :func:`grad_sync` turns gradient synchronisation off for all but the last micro-batch of
  a step (``no_sync`` for DDP, ``set_requires_gradient_sync`` for FSDP2);
- :func:`all_reduce_sum` / :func:`gather_objects` are the few collectives the trainer needs.

FSDP2 runs on CPU with gloo (it is tested that way); bf16 comes from ``torch.autocast``
in the trainer, the same for every wrapper.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from atacformer.models._layers import CrossAttentionBlock, EncoderBlock

logger = logging.getLogger(__name__)

BLOCK_TYPES = (EncoderBlock, CrossAttentionBlock)


@dataclass
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Start the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Parameters
    ----------
    device
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; default: ``cuda:LOCAL_RANK`` when CUDA is
        available, else CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        dev = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    here = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=60),
                                device_id=dev if dev.type == "cuda" else None)
        here = True
        logger.info("process group: rank %d of %d (%s) on %s", rank, world, backend, dev)
    return DistInfo(rank, world, local, dev, here)


def shutdown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def blocks(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """``(parent, name, block)`` of every transformer block (encoder and cross-attention)."""
    out = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, BLOCK_TYPES):
                out.append((parent, name, child))
    return out


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Wrap every block so that its activations are recomputed in the backward pass.
    State-dict keys are unchanged (the wrapper strips its own prefix)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    found = blocks(model)
    for parent, name, block in found:
        parent.register_module(name, checkpoint_wrapper(block, preserve_rng_state=True))
    return len(found)


def apply_compile(model: nn.Module) -> int:
    """``torch.compile`` each block (dynamic sequence length), torchtitan's per-block way:
    the same compiled code serves every layer and a graph break stays local."""
    found = blocks(model)
    for _, _, block in found:
        block.compile(dynamic=True)
    return len(found)


def apply_fsdp(model: nn.Module, info: DistInfo) -> nn.Module:
    """FSDP2: shard each block's parameters, then the rest with the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    # the pretraining models return dataclasses holding views (logits, hidden states); the
    # trainer only reads .loss and never writes into them, so FSDP2's view warning is moot
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(info.device.type, (info.world_size,))
    for _, _, block in blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def parallelize(model: nn.Module, info: DistInfo, *, parallel: str = "ddp", compile: bool = False,
                activation_checkpointing: bool = False) -> nn.Module:
    """Apply activation checkpointing, compile and DDP / FSDP2 (when distributed) to
    ``model`` (already on ``info.device``). Returns the module to train (the DDP wrapper,
    or ``model`` itself, sharded in place, for FSDP2)."""
    if activation_checkpointing:
        logger.info("activation checkpointing on %d blocks", apply_activation_checkpointing(model))
    if compile:
        logger.info("torch.compile on %d blocks", apply_compile(model))
    if not info.distributed:
        return model
    if parallel == "fsdp":
        return apply_fsdp(model, info)
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (FSDP2 shards in place: nothing to unwrap)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def grad_sync(model: nn.Module, enabled: bool):
    """Context in which backward passes synchronise gradients across ranks only if
    ``enabled`` (the last micro-batch of a step)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel) and not enabled:
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum each value over ranks (float64; identity without distribution)."""
    if not info.distributed:
        return [float(v) for v in values]
    dev = info.device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return t.cpu().tolist()


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order."""
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def clip_grad_norm(model: nn.Module, max_norm: float) -> float:
    """Clip the gradients' global norm (0 = only measure); the norm before clipping. Works on
    plain, DDP and FSDP2 (DTensor) parameters."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)

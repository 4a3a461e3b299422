"""Training checkpoints (to resume) and the exported model (to use), kept apart.

A training checkpoint ``OUT/checkpoints/step-NNNNNNNN.pt`` holds everything a resumed run
needs to compute exactly what the uninterrupted run computes: the full (unsharded) model and
optimizer state, the scheduler, the data position (epoch, step within the epoch), the
counters, and the random states (Python, numpy and torch of every rank; CUDA when used).
Model and optimizer state are gathered with :mod:`torch.distributed.checkpoint.state_dict`,
the same call for a plain model, DDP and FSDP2, so a run may be resumed under another
wrapper. Rank 0 writes the file under a temporary name, flushes it to disk and renames it:
a process killed at any moment (SIGKILL included) leaves either the previous checkpoint or
the new one, never a torn file. Files hold only tensors and plain Python values and load
with ``weights_only=True``.

The exported model is a model folder (``config.json`` + ``model.safetensors`` + vocabulary,
:meth:`save_pretrained`) written the same way, loadable by :func:`atacformer.models.load_model`
and ``atacformer embed``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, get_optimizer_state_dict, set_model_state_dict,
    set_optimizer_state_dict,
)

from atacformer.errors import AtacformerError
from atacformer.io._atomic import deferred_interrupt
from atacformer.models._pretrained import set_default_modes

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{8})\.pt$")


# -- random states -----------------------------------------------------------------------
def rng_state(device: torch.device) -> dict:
    """This process's random states as tensors and plain values."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _to_plain(x):
    if isinstance(x, tuple):
        return [_to_plain(v) for v in x]
    return x


# -- files -------------------------------------------------------------------------------
def checkpoint_path(out, step: int) -> Path:
    return Path(out) / CHECKPOINT_DIR / f"step-{step:08d}.pt"


def list_checkpoints(out) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``out``, oldest first."""
    d = Path(out) / CHECKPOINT_DIR
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


_KEYS = ("model", "optimizer", "scheduler", "state", "rng")


def check_checkpoint_file(path) -> str | None:
    """Why ``path`` cannot be a complete checkpoint (truncated, not a zip archive, a member
    reaching past the end of the file), or ``None`` when its structure is sound. Cheap: reads
    the zip directory and the member headers, not the tensors."""
    import zipfile

    path = Path(path)
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if not any(i.filename.endswith("data.pkl") for i in infos):
                return "no data.pkl record: not a torch checkpoint"
            for i in infos:
                if i.header_offset + i.compress_size > size:
                    return f"record {i.filename} reaches past the end of the file"
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
        return f"truncated or not a torch checkpoint ({type(e).__name__}: {e})"
    return None


def _read_checkpoint(path: Path) -> dict:
    """The checkpoint's contents, or :class:`AtacformerError` saying why it is unusable."""
    bad = check_checkpoint_file(path)
    if bad is not None:
        raise AtacformerError(f"{path}: {bad}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch/pickle/zip raise many types on a damaged file
        raise AtacformerError(f"{path}: cannot be loaded ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    missing = [k for k in _KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise AtacformerError(f"{path}: not a training checkpoint (missing {missing})")
    return ckpt


def latest_checkpoint(out) -> Path | None:
    """The newest checkpoint of ``out`` whose file is sound (see :func:`check_checkpoint_file`),
    or ``None`` when there is none at all.

    A damaged newer checkpoint (e.g. a disk that filled up, a file copied in part) is skipped
    with a warning naming it. When every checkpoint is damaged, :class:`AtacformerError`
    names them all, rather than starting the run again from step 0.
    """
    found = list_checkpoints(out)
    bad = []
    for _, path in reversed(found):
        why = check_checkpoint_file(path)
        if why is None:
            return path
        logger.warning("%s: %s; falling back to the previous checkpoint", path, why)
        bad.append(f"{path.name} ({why})")
    if bad:
        raise AtacformerError(f"{Path(out) / CHECKPOINT_DIR}: no loadable checkpoint: " + "; ".join(bad))
    return None


def _atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    # Ctrl-C waits for the checkpoint: an interrupt inside torch.save's writer surfaces as an
    # unrelated RuntimeError, and a finished checkpoint is what --resume needs
    with deferred_interrupt():
        try:
            with open(tmp, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)  # the rename itself survives a crash
            finally:
                os.close(dfd)
        finally:
            if tmp.exists():
                tmp.unlink()


def _full() -> StateDictOptions:
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def save_checkpoint(out, step: int, model, optimizer, scheduler, state: dict, rng_states: list[dict],
                    is_main: bool, keep: int = 2) -> Path:
    """Write the checkpoint of ``step`` (a collective call under FSDP: every rank calls it).

    Parameters
    ----------
    out
        Run folder.
    step
        Optimizer steps done.
    model, optimizer, scheduler
        The (possibly wrapped) model, its optimizer and LR scheduler.
    state
        Data position and counters (plain values).
    rng_states
        One :func:`rng_state` per rank, in rank order.
    is_main
        Only rank 0 writes.
    keep
        Older checkpoints beyond the ``keep`` newest are deleted.
    """
    model_sd = get_model_state_dict(model, options=_full())
    optim_sd = get_optimizer_state_dict(model, optimizer, options=_full())
    path = checkpoint_path(out, step)
    if is_main:
        _atomic_torch_save({"model": model_sd, "optimizer": optim_sd, "scheduler": scheduler.state_dict(),
                            "state": dict(state, step=step), "rng": rng_states}, path)
        for _, old in list_checkpoints(out)[:-keep]:
            old.unlink(missing_ok=True)
        for stale in path.parent.glob(".step-*.tmp-*"):
            stale.unlink(missing_ok=True)
        logger.info("checkpoint %s", path)
    return path


def load_checkpoint(path, model, optimizer, scheduler, is_main: bool) -> dict:
    """Load model, optimizer and scheduler state from ``path`` (rank 0 reads the file and
    broadcasts under distribution). Returns the checkpoint's ``state`` and ``rng`` entries.

    When ``path`` cannot be read (damaged past what :func:`latest_checkpoint` sees), the next
    older checkpoint of its run folder is used instead, with a warning; the returned
    ``state["step"]`` says which. Nothing is applied to the model before a file has been read
    in full. :class:`AtacformerError` names every file when none can be read.
    """
    path = Path(path)
    candidates = [path]
    m = _NAME.match(path.name)
    if m is not None and path.parent.name == CHECKPOINT_DIR:
        step = int(m.group(1))
        candidates += [p for s, p in reversed(list_checkpoints(path.parent.parent)) if s < step]
    errors = []
    for cand in candidates:
        try:
            ckpt = _read_checkpoint(cand)
            break
        except AtacformerError as e:
            logger.warning("%s%s", e, "; falling back to the previous checkpoint" if cand != candidates[-1] else "")
            errors.append(str(e))
    else:
        raise AtacformerError("no loadable checkpoint: " + "; ".join(errors))
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True, broadcast_from_rank0=distributed)
    set_model_state_dict(model, ckpt["model"] if (is_main or not distributed) else {}, options=opts)
    set_optimizer_state_dict(model, optimizer, ckpt["optimizer"] if (is_main or not distributed) else {},
                             options=opts)
    sched = dict(ckpt["scheduler"])
    if "lr_lambdas" in sched:  # the schedule follows this run's settings (e.g. a longer --max-steps)
        sched["lr_lambdas"] = [None] * len(sched["lr_lambdas"])
    scheduler.load_state_dict(sched)
    return {"state": ckpt["state"], "rng": ckpt["rng"]}


def full_model_state(model) -> dict[str, torch.Tensor]:
    """The unsharded, unwrapped state dict on CPU (collective under FSDP)."""
    return get_model_state_dict(model, options=_full())


def export_model(fresh_model, state: dict[str, torch.Tensor], target) -> Path:
    """Load ``state`` into ``fresh_model`` (an unwrapped model of the same config, with its
    vocabulary) and write it as a model folder at ``target``, atomically."""
    target = Path(target)
    for stale in [*target.parent.glob(f".{target.name}.tmp-*"), *target.parent.glob(f".{target.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)  # left by an export that was killed
    missing, unexpected = fresh_model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"exported weights do not fit the model: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        fresh_model.save_pretrained(tmp)
        set_default_modes(tmp)  # 0644/0755 under the usual umask, whatever wrote the files
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target

"""Experiment plans: a set of pretraining runs that differ by config switches, run one after
the other and reported side by side (Ge 2025's pretraining plan is
``examples/masked_bin_plan.toml``).

A plan is a TOML file::

    [experiment]
    name = "masked_bin"
    out = "masked_bin_debug"            # default output folder (relative to the plan file)

    [defaults]                       # settings of every run (TrainConfig fields)
    model = "masked-bin"
    preset = "debug"
    data = ["cells.h5ad"]

    [[evaluate]]                     # labelled sets: k-means on the embeddings -> ARI
    name = "schep"
    path = "cells.h5ad"
    label_key = "cell_type"

    [[stage]]
    name = "mask0"
    switches = { mask_ratio = 0.0 }  # switches of every run of the stage

    [[stage.run]]
    name = "baseline"

    [[stage.run]]
    name = "closed_sampling"
    switches = { closed_bin_sampling = true }

A stage may also hold ``grid = { decoder = ["mlp", "cross_attention"], ... }``: one run per
combination. A switch is a :class:`~atacformer.train.TrainConfig` field (``mask_ratio``,
``group_by``, ``dna_embeddings``, ``supervised``, ...) or else a model config field
(``closed_bin_sampling``, ``class_embedding``, ``embedding``, ``decoder_input``,
``decoder``, ...). Relative paths are relative to the plan file; ``$VARS`` are expanded.
A run whose input file is missing (e.g. no DNA embedding table) is reported as skipped, with
the reason. Runs that finished are reused when the experiment is run again; interrupted
ones resume from their last checkpoint.

Reported per run: the final loss (last step) and the mean of the last 10 % of logged
losses, throughput, and for each labelled set the Leiden ARI at the true number of labels
(:func:`atacformer.metrics.evaluate_embedding`, the package's one protocol) of the model's
embedding (:func:`atacformer.tools.embed`); a reference row gives the same score for LSI,
computed in the same run. Losses of runs with different objectives
(mask ratio, closed-bin sampling, supervised heads) are not comparable with each other; the
ARI is.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import re
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from atacformer.train.config import TrainConfig

logger = logging.getLogger(__name__)

_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
_PATH_FIELDS = ("data", "universe", "tss", "genes", "dna_embeddings")


def _resolve(value, base: Path):
    """Expand ``$VARS`` and make a relative path relative to the plan's folder."""
    if isinstance(value, list):
        return [_resolve(v, base) for v in value]
    if not isinstance(value, str) or not value:
        return value
    value = os.path.expandvars(value)
    return value if os.path.isabs(value) else str((base / value).resolve())


def _resolve_field(key: str, value, base: Path):
    if key in _PATH_FIELDS or (key == "genome" and isinstance(value, str) and value.endswith(".sizes")):
        return _resolve(value, base)
    return value


def _show(key: str, value) -> str:
    if key in _PATH_FIELDS and value:
        value = "+".join(Path(v).name for v in value) if isinstance(value, list) else Path(value).name
    return f"{key}={value}"


def load_plan(path) -> dict:
    """Read a plan: ``{"name", "out", "defaults", "evaluate", "runs"}`` where each run is
    ``{"stage", "name", "switches"}`` (the stage's switches merged with the run's)."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    base = path.parent.resolve()
    exp = raw.get("experiment", {})
    defaults = {k: _resolve_field(k, v, base) for k, v in raw.get("defaults", {}).items()}
    runs = []
    for stage in raw.get("stage", []):
        sname = str(stage.get("name", f"stage{len(runs)}"))
        common = dict(stage.get("switches", {}))
        for r in stage.get("run", []):
            runs.append({"stage": sname, "name": str(r["name"]), "switches": {**common, **r.get("switches", {})}})
        grid = stage.get("grid", {})
        if grid:
            keys = sorted(grid)
            for combo in itertools.product(*(grid[k] for k in keys)):
                sw = dict(zip(keys, combo))
                name = "-".join(f"{k}={v}" for k, v in sw.items())
                runs.append({"stage": sname, "name": name, "switches": {**common, **sw}})
    for r in runs:
        r["switches"] = {k: _resolve_field(k, v, base) for k, v in r["switches"].items()}
    evaluate = [{**e, "path": _resolve(e["path"], base)} for e in raw.get("evaluate", [])]
    names = [f"{r['stage']}/{r['name']}" for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: run names repeat within a stage: {sorted(n for n in names if names.count(n) > 1)}")
    return {"name": exp.get("name", path.stem), "out": _resolve(exp.get("out", path.stem), base),
            "defaults": defaults, "evaluate": evaluate, "runs": runs}


def run_config(defaults: dict, switches: dict, out: Path) -> TrainConfig:
    """The :class:`TrainConfig` of one run: defaults, then switches (model config fields go
    to ``model_overrides``)."""
    settings = dict(defaults)
    overrides = dict(settings.pop("model_overrides", {}))
    for k, v in switches.items():
        if k in _FIELDS:
            settings[k] = v
        else:
            overrides[k] = v
    settings.update(model_overrides=overrides, out=str(out), progress=settings.get("progress", False))
    return TrainConfig.from_dict(settings)


def _missing_input(cfg: TrainConfig) -> str | None:
    """Why a run cannot start (an input it needs is not there), or None."""
    needed = ["universe"] + (["tss", "genes"] if cfg.group_by == "class" else [])
    if cfg.dna_embeddings is not None:
        if not (cfg.dna_embeddings and Path(cfg.dna_embeddings).exists()):
            return (f"skipped: no DNA embedding table ({cfg.dna_embeddings!r}); it needs a .npy of "
                    "n_bins x d computed from a genome FASTA")
    for name in needed:
        value = getattr(cfg, name)
        if value and not Path(value).exists():
            return f"skipped: {name} file {value!r} not found"
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def _eval_cells(spec: dict, vocab):
    from atacformer.tokenizers import tokenize_input

    cells = tokenize_input(spec["path"], vocab)
    key = spec.get("label_key", "cell_type")
    if key not in cells.obs.columns:
        raise ValueError(f"{spec['path']}: no obs[{key!r}] labels to evaluate against")
    return cells.to_anndata(), key


def evaluate_model(model_dir, evaluate: list[dict], seed: int = 0) -> dict[str, float]:
    """Leiden ARI at the true k (:func:`atacformer.metrics.evaluate_embedding`) on each
    labelled set, for the model in ``model_dir`` embedded as its folder says
    (:func:`atacformer.tools.embed`); an ``[[evaluate]]`` entry may override ``pooling``."""
    from atacformer import tools as tl
    from atacformer.metrics import evaluate_embedding
    from atacformer.models import load_model

    model = load_model(model_dir)
    out = {}
    for spec in evaluate:
        adata, key = _eval_cells(spec, model.vocab)
        tl.embed(adata, model, pooling=spec.get("pooling"))
        out[f"ARI {spec['name']}"] = round(evaluate_embedding(adata, "X_atacformer", key, seed)["leiden_ari"], 4)
    return out


def _run_one(run: dict, plan: dict, out: Path, max_steps, progress: bool, shared_data) -> dict:
    from atacformer.train.checkpoint import list_checkpoints
    from atacformer.train.tracking import read_metrics
    from atacformer.train.trainer import pretrain

    run_dir = out / "runs" / _slug(f"{run['stage']}-{run['name']}")
    row = {"stage": run["stage"], "run": run["name"],
           "switches": ", ".join(_show(k, v) for k, v in run["switches"].items()) or "-"}
    defaults = dict(plan["defaults"])
    if max_steps is not None:
        defaults["max_steps"] = max_steps
    cfg = run_config(defaults, run["switches"], run_dir)
    if shared_data is not None and not {"data", "bins", "universe", "genome"} & set(run["switches"]):
        cfg = dataclasses.replace(cfg, data=[str(shared_data)])
    reason = _missing_input(cfg)
    if reason:
        return {**row, "status": reason}
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    if summary.get("steps") != cfg.resolved().max_steps:
        logger.info("run %s/%s -> %s", run["stage"], run["name"], run_dir)
        cfg = dataclasses.replace(cfg, resume=bool(list_checkpoints(run_dir)), overwrite=True, progress=progress)
        summary = pretrain(cfg)
        (run_dir / "eval.json").unlink(missing_ok=True)  # scores of the weights before this training
    losses = [r["loss"] for r in read_metrics(run_dir / "metrics.csv")]
    tail = losses[-max(len(losses) // 10, 1):]
    row.update(status="done", steps=summary["steps"], final_loss=round(losses[-1], 4),
               loss_last10pct=round(float(np.mean(tail)), 4), tokens_per_s=round(summary["tokens_per_s"]),
               padding=round(summary["padding"], 4))
    eval_file = run_dir / "eval.json"
    if plan["evaluate"]:
        scores = json.loads(eval_file.read_text()) if eval_file.exists() else {}
        if set(scores) != {f"ARI {e['name']}" for e in plan["evaluate"]}:
            scores = evaluate_model(run_dir / "model", plan["evaluate"], seed=cfg.seed)
            eval_file.write_text(json.dumps(scores, indent=2))
        row.update(scores)
    return row


def _reference_row(plan: dict, vocab) -> dict:
    from atacformer import tools as tl
    from atacformer.metrics import evaluate_embedding

    row = {"stage": "reference", "run": "LSI (atacformer.tl.lsi)", "switches": "-", "status": "done"}
    for spec in plan["evaluate"]:
        adata, key = _eval_cells(spec, vocab)
        tl.lsi(adata, n_components=min(30, min(adata.shape) - 2))
        row[f"ARI {spec['name']}"] = round(evaluate_embedding(adata, "X_lsi", key)["leiden_ari"], 4)
    return row


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table."""
    return df.to_markdown(index=False)


def run_experiment(plan_path, out=None, max_steps: int | None = None, only=None, progress: bool = False) -> str:
    """Run a plan (see the module docstring) and write ``OUT/results.csv`` and
    ``OUT/results.md``; returns the markdown table.

    Examples
    --------
    >>> print(run_experiment("examples/masked_bin_plan.toml"))  # doctest: +SKIP
    """
    from atacformer.train.data import prepare_corpora

    plan = load_plan(plan_path)
    out = Path(out or plan["out"])
    out.mkdir(parents=True, exist_ok=True)
    d = plan["defaults"]
    shared = prepare_corpora(d.get("data", []), out, d.get("bins"), d.get("universe"), d.get("genome"))
    shared_path = shared.corpora[0].path if len(shared.corpora) == 1 else None
    runs = [r for r in plan["runs"] if not only or r["name"] in only or f"{r['stage']}/{r['name']}" in only]
    rows = []
    for run in runs:
        try:
            rows.append(_run_one(run, plan, out, max_steps, progress, shared_path))
        except Exception as e:  # one failed switch must not lose the other runs' results
            logger.exception("run %s/%s failed", run["stage"], run["name"])
            rows.append({"stage": run["stage"], "run": run["name"], "status": f"failed: {type(e).__name__}: {e}"})
        pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    if plan["evaluate"]:
        rows.append(_reference_row(plan, shared.vocab))
    df = pd.DataFrame(rows)
    for col in ("steps", "tokens_per_s"):
        if col in df.columns:
            df[col] = df[col].astype("Int64")
    df.to_csv(out / "results.csv", index=False)
    table = to_markdown(df)
    (out / "results.md").write_text(f"# {plan['name']}\n\n{table}\n")
    return table

"""Context robustness: clustering of cell embeddings when a cell gets fewer tokens.

LeRoy 2025 (dissertation) found Atacformer's clustering robust down to a context of about
512 tokens. This script measures it for our models on the labelled sets with coordinates:
BM0828 (533 cells, median ~2,000 tokens a cell, longest ~17,000), Schep600 (600 cells,
median ~1,000) and Granja D6T1 (10,335 cells in a 10,000-peak subset, median ~150).

Per set, two models are trained with the one training loop (:func:`atacformer.train.pretrain`
through :func:`atacformer.evaluation.train_recipe`, labels never seen):

- ``profile``: the default recipe; on the ``cpu`` preset a set encoder (no attention layer,
  IDF-weighted pooling), trained at context 4,096;
- ``rtd``: replaced-token detection with 2 attention layers, trained at its preset's 512
  (``--rtd-context`` to change).

``--models-from DIR`` takes the models of an earlier ``atacformer benchmark --out DIR`` run
instead (``DIR/runs/SET-RECIPE/model``, e.g. the profile models of the README's benchmark,
trained 12 minutes each); pairs without a model there are trained as above.

Each model then goes through :func:`atacformer.evaluation.context_robustness`: embeddings at
every ``--contexts`` value with :func:`atacformer.tools.embed`, scored by
:func:`atacformer.metrics.evaluate_embedding` (Leiden / k-means at the true number of labels,
ARI/AMI/NMI, kNN transfer), with the fraction of cells truncated and each cell's cosine
similarity to its full-context embedding. LSI on all tokens is scored alongside as a
context-free reference. Writes ``context_robustness.csv``, ``.md`` and ``.png`` into
``--out`` (default ``benchmarks/out``, as the other benchmarks).

Costs on CPU: an attention layer costs the square of the tokens it attends over, and the
full-context reference embeds every token of every cell; on 2 busy cores one full-context
pass of the 2-layer model over BM0828 takes ~7 minutes. ``--attention-max-cells`` and
``--skip`` keep a CPU run short.

Usage::

    python benchmarks/bench_context.py [--datasets BM0828 Schep600 Granja-D6T1]
        [--models profile rtd] [--max-cells 2000] [--attention-max-cells 300]
        [--skip rtd:BM0828] [--time-budget 2] [--models-from results/benchmark] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("BM0828", "Schep600", "Granja-D6T1")
MODELS = ("profile", "rtd")
SHOWN = ["dataset", "model", "context", "frac_truncated", "median_tokens", "cosine_median", "cosine_p05",
         "leiden_ari", "leiden_nmi", "kmeans_ari", "transfer_acc", "embed_seconds"]


def _model_label(recipe: str, model, steps: int) -> str:
    c = model.config
    return f"{recipe} ({c.num_layers} layers, context {c.max_length:,}, {steps:,} steps)"


def _earlier_model(runs_dir, name: str, recipe: str):
    """``(model, summary)`` of ``runs_dir/runs/{name}-{recipe}`` (an ``atacformer benchmark
    --out`` folder), or ``(None, None)`` when there is none."""
    import json

    from atacformer.models import load_model

    if runs_dir is None:
        return None, None
    run = Path(runs_dir) / "runs" / f"{name}-{recipe}"
    if not (run / "model" / "config.json").is_file():
        print(f"{name} {recipe}: no model in {run}; training one", flush=True)
        return None, None
    summary = json.loads((run / "summary.json").read_text())
    print(f"{name} {recipe}: the model of {run} ({summary['steps']} steps)", flush=True)
    return load_model(run / "model"), summary


def _lsi_reference(name: str, tok, seed: int) -> dict:
    from atacformer import tools as tl
    from atacformer.evaluation import score_embedding

    tl.lsi(tok, n_components=min(30, min(tok.shape) - 2), seed=seed)
    return {"dataset": name, "method": "LSI (all tokens)", **score_embedding(tok, "X_lsi", seed)}


def run(args) -> tuple[pd.DataFrame, pd.DataFrame]:
    from atacformer.evaluation import (BenchmarkConfig, context_robustness, load_labelled_sets, tokenize_sets,
                                       train_recipe)
    from atacformer.evaluation.harness import _subsample

    sets = load_labelled_sets(args.data_dir, args.datasets, args.max_cells, args.seed)
    tokenized = {n: t for n, (t, _) in tokenize_sets(sets).items()}
    for n, t in tokenized.items():
        print(f"{n}: {t.n_obs:,} cells x {t.n_vars:,} peaks", flush=True)
    cfg = BenchmarkConfig(time_budget=args.time_budget, seed=args.seed)
    skip = {tuple(s.split(":", 1)) for s in args.skip}
    tables, lsi = [], []
    for name, tok in tokenized.items():
        lsi.append(_lsi_reference(name, tok, args.seed))
        for recipe in args.models:
            if (recipe, name) in skip:
                print(f"{name} {recipe}: skipped (--skip)", flush=True)
                continue
            t0 = time.perf_counter()
            model, summary = _earlier_model(args.models_from, name, recipe)
            if model is None:
                extra = {"max_length": args.rtd_context} if recipe == "rtd" and args.rtd_context else {}
                model, summary = train_recipe(recipe, tok, Path(args.out) / "context_runs" / f"{name}-{recipe}",
                                              cfg, **extra)
                summary["elapsed_s"] = time.perf_counter() - t0
            train_s = float(summary.get("elapsed_s", float("nan")))
            cells = tok
            if model.config.num_layers > 0 and args.attention_max_cells:
                cells = _subsample(tok, args.attention_max_cells, args.seed)
            label = _model_label(recipe, model, summary["steps"])
            print(f"{name} {label}: trained in {train_s:.0f}s; "
                  f"context robustness on {cells.n_obs} cells", flush=True)
            t1 = time.perf_counter()
            table = context_robustness(cells, model, args.contexts, seed=args.seed)
            table.insert(0, "model", label)
            table.insert(0, "dataset", name)
            table["train_steps"], table["train_seconds"] = summary["steps"], train_s
            tables.append(table)
            print(f"  {time.perf_counter() - t1:.0f}s: " + ", ".join(
                f"{r.context}: ARI {r.leiden_ari:.3f}" for r in table.itertuples()), flush=True)
    return pd.concat(tables, ignore_index=True), pd.DataFrame(lsi)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None, help="the labelled sets (default: ../shared/data)")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, help="recipes to train")
    p.add_argument("--contexts", nargs="+", type=int, default=None, help="default 8192 ... 256")
    p.add_argument("--max-cells", type=int, default=None, help="stratified subsample of larger sets (Granja)")
    p.add_argument("--attention-max-cells", type=int, default=None,
                   help="cells embedded by models with attention layers (their cost grows with tokens squared)")
    p.add_argument("--skip", nargs="*", default=[], metavar="MODEL:DATASET", help="pairs left out")
    p.add_argument("--time-budget", type=float, default=2.0, help="training minutes per model and set")
    p.add_argument("--models-from", default=None, metavar="DIR",
                   help="use the models of an earlier `atacformer benchmark --out DIR` run (DIR/runs/SET-RECIPE/"
                        "model) where present instead of training")
    p.add_argument("--rtd-context", type=int, default=None, help="rtd training context (default: its preset's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    args = p.parse_args(argv)

    import torch

    from atacformer.datasets import shared_data_dir
    from atacformer.evaluation import DEFAULT_CONTEXTS, plot_context_robustness

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    args.contexts = tuple(args.contexts or DEFAULT_CONTEXTS)
    args.data_dir = Path(args.data_dir or shared_data_dir() or REPO / ".." / "shared" / "data")
    if not args.data_dir.is_dir():
        print(f"{args.data_dir} not found: this benchmark needs ../shared/data (or --data-dir)", file=sys.stderr)
        return 2
    for s in args.skip:
        if s.count(":") != 1 or s.split(":")[0] not in MODELS:
            p.error(f"--skip {s!r}: expected MODEL:DATASET, e.g. rtd:BM0828")
    t0 = time.perf_counter()
    table, lsi = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "context_robustness.csv", index=False)
    md = (table[SHOWN].to_markdown(index=False, floatfmt=".3f") + "\n\nContext-free reference (same cells "
          "as the profile model):\n\n" + lsi[["dataset", "method", "leiden_ari", "leiden_nmi", "kmeans_ari",
                                              "transfer_acc"]].to_markdown(index=False, floatfmt=".3f") + "\n")
    (out / "context_robustness.md").write_text(md)
    plot_context_robustness(table, out / "context_robustness.png")
    print(md)
    print(f"wrote {out / 'context_robustness.csv'}, .md and .png in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``atacformer benchmark``: the embedding-quality benchmark from the command line."""

from __future__ import annotations

import argparse


def cmd_benchmark(args) -> int:
    """Run :func:`atacformer.evaluation.run_benchmark` with the parsed options."""
    from atacformer.datasets import shared_data_dir
    from atacformer.errors import AtacformerError
    from atacformer.evaluation import LABELLED_SETS, METHODS, BenchmarkConfig, run_benchmark
    from atacformer.train.config import RECIPES

    data_dir = args.data_dir or shared_data_dir()
    if data_dir is None:
        raise AtacformerError("the labelled sets were not found (../shared/data or $ATACFORMER_DATA); "
                              "pass --data-dir")
    recipes = list(RECIPES) if args.recipes == "all" else [r for r in args.recipes.split(",") if r]
    for what, given, known in (("recipe", recipes, RECIPES), ("dataset", args.datasets.split(","), LABELLED_SETS),
                               ("method", args.methods.split(","), METHODS)):
        unknown = [g for g in given if g not in known]
        if unknown:
            raise AtacformerError(f"unknown {what}(s) {unknown}; choose from {sorted(known)}")
    cfg = BenchmarkConfig(datasets=tuple(args.datasets.split(",")), methods=tuple(args.methods.split(",")),
                          recipes=recipes, steps=args.steps, time_budget=args.time_budget, vocab=args.vocab,
                          holdout=args.holdout, continue_minutes=args.continue_minutes, max_cells=args.max_cells, scembed_epochs=args.scembed_epochs,
                          peakvi_epochs=args.peakvi_epochs, peakvi_minutes=args.peakvi_minutes,
                          dropout=tuple(float(x) for x in args.dropout.split(",") if x), seed=args.seed,
                          umap=not args.no_umap)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    table = run_benchmark(data_dir, args.out, cfg, say=lambda m: print(m, flush=True))
    cols = ["dataset", "method", "dropout", "leiden_ari", "leiden_ari_gain", "kmeans_ari", "transfer_acc",
            "seconds"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def add_benchmark_commands(sub) -> None:
    """Register ``atacformer benchmark`` on an ``argparse`` sub-parser collection."""
    b = sub.add_parser("benchmark", help="LSI, scEmbed, SnapATAC2 spectral and atacformer side by side on "
                       "labelled sets (ARI/AMI/NMI/homogeneity, label transfer, UMAP grids)",
                       description="Embedding-quality benchmark on the labelled sets of ../shared/data. "
                       "atacformer pretrains on the cells only (labels are used for scoring alone).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--data-dir", help="folder with the labelled sets (default: ../shared/data or $ATACFORMER_DATA)")
    b.add_argument("--out", default="results/benchmark", help="output folder")
    b.add_argument("--datasets", default="BM0828,Schep600,chromVAR50", help="comma-separated")
    b.add_argument("--methods", default="lsi,scembed,snapatac2,peakvi,atacformer",
                   help="comma-separated (peakvi needs scvi-tools: pip install 'atacformer[peakvi]')")
    b.add_argument("--recipes", default="profile",
                   help="comma-separated atacformer recipes, or 'all' (atacformer.train.RECIPES); each is "
                   "reported untrained (max_steps 0) and trained")
    b.add_argument("--steps", type=int, default=None,
                   help="pretraining steps of every recipe (default: the cpu preset's data-sized plan)")
    b.add_argument("--time-budget", type=float, default=None, help="minutes per recipe and set (default 12)")
    b.add_argument("--peakvi-epochs", type=int, default=100)
    b.add_argument("--peakvi-minutes", type=float, default=10.0, help="PeakVI's training time limit per set")
    b.add_argument("--dropout", default="", help="comma-separated fractions of non-zeros dropped at random "
                   "(e.g. 0.5,0.8): every method re-scored on the thinned cells")
    b.add_argument("--vocab", choices=["peaks", "bins"], default="peaks",
                   help="each set's own peaks, or hg19 5 kb bins shared by all sets (one model for all)")
    b.add_argument("--holdout", action="store_true",
                   help="with --vocab bins: embed each set with a model pretrained on the other sets only")
    b.add_argument("--continue-minutes", type=float, default=None,
                   help="with --holdout: also pretrain each zero-shot model on the held-out set's own cells for "
                   "this many minutes (continued pretraining; labels unused)")
    b.add_argument("--max-cells", type=int, default=None, help="stratified subsample per set (quick runs)")
    b.add_argument("--scembed-epochs", type=int, default=20)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    b.add_argument("--no-umap", action="store_true", help="skip the UMAP grids")
    b.set_defaults(func=cmd_benchmark)

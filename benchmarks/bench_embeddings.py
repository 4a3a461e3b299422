"""Embedding quality: which atacformer recipe clusters real cells best, next to the peers.

On the labelled hg19 sets of ``../shared/data`` (Buenrostro 2018 BM0828, Schep 2017 cell
lines, chromVAR GM12878/H1), in one process: LSI, scEmbed, SnapATAC2 ``tl.spectral`` (the
peer) and every atacformer recipe of :data:`atacformer.evaluation.RECIPES` (or those named),
each clustered the same way (Leiden at the true k, k-means at the true k) and scored by ARI,
AMI, NMI and homogeneity, plus kNN label transfer on a half/half split. atacformer pretrains
on the cells only; labels are read for scoring alone.

The question: does atacformer reach SnapATAC2 spectral's ARI on every set in the same run?
The script prints, per set, the best atacformer recipe and its margin to the peer.

Usage::

    python benchmarks/bench_embeddings.py [--recipes all] [--steps 150] [--out benchmarks/out/embeddings]
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
import torch

from atacformer.evaluation import RECIPES, BenchmarkConfig, run_benchmark
from atacformer.datasets import shared_data_dir


def verdict(table: pd.DataFrame, col: str = "leiden_ari") -> pd.DataFrame:
    """Per set: the peer's score, the best atacformer recipe's, and the margin."""
    rows = []
    for name, t in table.groupby("dataset", sort=False):
        peer = t[t.method == "SnapATAC2"][col]
        ours = t[t.method.str.startswith("atacformer")].sort_values(col, ascending=False)
        if ours.empty:
            continue
        best = ours.iloc[0]
        p = float(peer.iloc[0]) if len(peer) else float("nan")
        rows.append({"dataset": name, "SnapATAC2": p, "best recipe": best.method, "atacformer": best[col],
                     "margin": best[col] - p})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="benchmarks/out/embeddings")
    ap.add_argument("--recipes", default="all")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--vocab", choices=["peaks", "bins"], default="peaks")
    ap.add_argument("--scembed-epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    data_dir = args.data_dir or shared_data_dir()
    if data_dir is None:
        print("the labelled sets (../shared/data) are absent: nothing to benchmark", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    recipes = list(RECIPES) if args.recipes == "all" else args.recipes.split(",")
    cfg = BenchmarkConfig(recipes=recipes, steps=args.steps, vocab=args.vocab, scembed_epochs=args.scembed_epochs)
    table = run_benchmark(data_dir, args.out, cfg, say=lambda m: print(m, flush=True))
    cols = ["dataset", "method", "leiden_ari", "kmeans_ari", "leiden_nmi", "transfer_acc", "seconds"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for col in ("leiden_ari", "kmeans_ari"):
        print(f"\n{col}: best atacformer recipe vs SnapATAC2 spectral")
        print(verdict(table, col).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

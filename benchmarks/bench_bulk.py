"""Bulk region sets as documents: pseudo-bulk sets classified by XGBoost from four embeddings.

On each labelled set, random groups of 10-50 cells of one type give pseudo-bulk region sets
(the regions open in any cell of the group; 30 per type). Each set is embedded as one
"cell" by an atacformer model pretrained self-supervised on the set's single cells (and the
same model untrained), by LSI of the sets and by scEmbed region vectors trained on the
cells; XGBoost classifies the sets' cell types under the same 5 stratified folds (LeRoy 2025
dissertation). See :mod:`atacformer.evaluation.bulk` for the protocol.

One run (2-minute pretraining per set, on 2 cores shared with other work; 375 s in all):
BM0828 (210 sets, 7 types) accuracy: atacformer 0.224, untrained 0.233, LSI 0.995, scEmbed
0.690; Schep 600 (360 sets, 12 types): 0.936, 0.947, 0.975, 0.964. The 2-minute budget
gave 35 steps on BM0828 (3 s a step) and 92 on Schep 600 of the 1,500 planned, so the
pretrained model is barely trained; sets are cut to the model's 4,096-token context.

Usage::

    python benchmarks/bench_bulk.py [--out benchmarks/out/bulk] [--datasets BM0828,Schep600]
        [--pretrain-minutes 2] [--sets-per-type 30] [--folds 5] [--threads 2]
"""

from __future__ import annotations

import time
from pathlib import Path

from _common import parse, parser


def main(argv=None) -> int:
    p = parser(__doc__, "bulk")
    p.add_argument("--datasets", default="BM0828,Schep600")
    p.add_argument("--pretrain-minutes", type=float, default=2.0, help="time budget of each pretraining")
    p.add_argument("--sets-per-type", type=int, default=30)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--scembed-epochs", type=int, default=10)
    args, data = parse(p, argv, threads=2)
    if data is None:
        return 2
    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    from atacformer.evaluation.bulk import format_bulk_table, run_bulk_benchmark

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tables = []
    for name in (n for n in args.datasets.split(",") if n):
        t = run_bulk_benchmark(name, data_dir=data, out_dir=out / "runs", sets_per_type=args.sets_per_type,
                               folds=args.folds, pretrain_minutes=args.pretrain_minutes,
                               scembed_epochs=args.scembed_epochs, seed=args.seed, say=lambda m: print(m, flush=True))
        t.to_csv(out / f"bulk_{name}.csv", index=False)  # kept should a later set fail
        tables.append(t)
    table = pd.concat(tables, ignore_index=True)
    text = format_bulk_table(table)
    table.to_csv(out / "bulk.csv", index=False)
    (out / "bulk.md").write_text(text)
    print(f"\n{text}\n{time.perf_counter() - t0:.0f}s in all; wrote {out / 'bulk.csv'} and {out / 'bulk.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

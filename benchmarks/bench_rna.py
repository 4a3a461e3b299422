"""ATAC -> RNA retrieval and RNA imputation from ATAC against their peers, in one run.

On each paired set (sci-CAR A549, NeurIPS 2021 BMMC multiome) one seeded split, stratified
by cell type, into training and held-out cells; retrieval of each held-out cell's RNA from
its ATAC (FOSCTTM, recall@1/5/10) and imputation of its expression (per-gene and per-cell
Pearson) by gene scores, MultiVI, kNN on LSI, CRAFT and a random floor. See
:mod:`atacformer.evaluation.rna` for the protocol.

Usage::

    python benchmarks/bench_rna.py [--datasets scicar,neurips] [--methods genescore,multivi,knn,craft]
        [--craft-minutes 5] [--multivi-epochs 500] [--multivi-minutes 10] [--out benchmarks/out/rna]
        [--threads 2] [--seed 0]
"""

from __future__ import annotations

import sys

from _common import parse, parser


def main(argv=None) -> int:
    p = parser(__doc__, "rna")
    p.add_argument("--datasets", default="scicar,neurips", help="paired sets: scicar, neurips")
    p.add_argument("--methods", default="genescore,multivi,knn,craft",
                   help="genescore, multivi, knn, craft (the random floor is always added)")
    p.add_argument("--craft-minutes", type=float, default=5.0, help="CRAFT training time budget per set")
    p.add_argument("--craft-base", help="pretrained model folder CRAFT starts from (default: none)")
    p.add_argument("--craft-pretrain-minutes", type=float, default=0.0,
                   help="without --craft-base: pretrain CRAFT's ATAC encoder on each set's training ATAC cells first")
    p.add_argument("--multivi-epochs", type=int, default=500, help="MultiVI epoch cap (early stopping on)")
    p.add_argument("--multivi-minutes", type=float, default=10.0, help="MultiVI time cap per set")
    p.add_argument("--train-fraction", type=float, default=0.5, help="share of each cell type used for training")
    args, data = parse(p, argv, threads=2)
    if data is None:
        return 2
    import torch

    torch.set_num_threads(args.threads)
    from atacformer.evaluation.rna import load_rna_pairs, run_rna_benchmark

    split = lambda s: tuple(x for x in s.split(",") if x)  # noqa: E731
    methods = tuple(dict.fromkeys(split(args.methods) + ("random",)))
    table = run_rna_benchmark(load_rna_pairs(data, split(args.datasets)), methods, args.out, seed=args.seed,
                              craft_minutes=args.craft_minutes, craft_base=args.craft_base,
                              craft_pretrain_minutes=args.craft_pretrain_minutes,
                              train_fraction=args.train_fraction, multivi_epochs=args.multivi_epochs,
                              multivi_minutes=args.multivi_minutes, say=lambda m: print(m, flush=True))
    from atacformer.evaluation.rna import format_rna_table

    print("\n" + format_rna_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fine-tuning, annotation and batch integration against their peers, in one run.

Annotation on each labelled set (reference / query halves by a fixed seed): kNN on LSI, kNN
on SnapATAC2 spectral, kNN on the base model, kNN on the triplet-fine-tuned model and the
fine-tuned label head; query macro-F1 and the query's own Leiden ARI. Integration on the
batch tasks: LSI, Harmony on LSI, PeakVI, Harmony on PeakVI, the base model and the
batch-adversarial model, scored with scib-metrics. See
:mod:`atacformer.evaluation.finetune` for the protocol.

Usage::

    python benchmarks/bench_finetune.py [--out benchmarks/out/finetune] [--datasets Granja-D6T1,BM0828,Schep600]
        [--batch-tasks BM0828+Schep600,NeurIPS-2donors] [--base-minutes 4] [--finetune-minutes 3]
        [--peakvi-minutes 5] [--max-cells N] [--threads 2]
"""

from __future__ import annotations

import sys

from _common import parse, parser


def main(argv=None) -> int:
    p = parser(__doc__, "finetune")
    p.add_argument("--datasets", default="Granja-D6T1,BM0828,Schep600", help="labelled sets ('' for none)")
    p.add_argument("--batch-tasks", default="BM0828+Schep600,NeurIPS-2donors", help="batch tasks ('' for none)")
    p.add_argument("--base-minutes", type=float, default=4.0, help="time budget of each base pretraining")
    p.add_argument("--finetune-minutes", type=float, default=3.0, help="time budget of each fine-tuning")
    p.add_argument("--peakvi-minutes", type=float, default=5.0, help="PeakVI training time (0: skip PeakVI)")
    p.add_argument("--max-cells", type=int, help="stratified subsample of each set")
    args, data = parse(p, argv, threads=2)
    if data is None:
        return 2
    import torch

    torch.set_num_threads(args.threads)
    from atacformer.evaluation.finetune import FinetuneBenchmarkConfig, run_finetune_benchmark

    split = lambda s: tuple(x for x in s.split(",") if x)  # noqa: E731
    cfg = FinetuneBenchmarkConfig(datasets=split(args.datasets), batch_tasks=split(args.batch_tasks),
                                  max_cells=args.max_cells, base_minutes=args.base_minutes,
                                  finetune_minutes=args.finetune_minutes, peakvi_minutes=args.peakvi_minutes or None,
                                  seed=args.seed)
    annotation, integration = run_finetune_benchmark(data, args.out, cfg, say=lambda m: print(m, flush=True))
    for title, table in (("annotation", annotation), ("integration", integration)):
        if len(table):
            print(f"\n## {title}\n")
            print(table.to_markdown(index=False, floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

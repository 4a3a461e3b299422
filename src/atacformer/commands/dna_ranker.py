"""``atacformer dna-ranker train | evaluate``: the ATAC-aware DNA ranker (LeRoy 2025 ch. 3)
from the command line."""

from __future__ import annotations

import sys


def _spans(args, start=None, end=None):
    from atacformer.tools._dna_ranker import build_spans, peak_accessibility

    peaks = [peak_accessibility(p) for p in args.peaks]
    return build_spans(peaks, args.fasta, region_length=args.region_length, chroms=args.chroms, start=start,
                       end=end, shift=args.shift, min_nonzero=args.min_nonzero, progress=True)


def _report(name, scores, spans) -> None:
    from atacformer.tools._dna_ranker import ranking_metrics

    m = ranking_metrics(scores, spans.accessibility)
    print(f"{name}: {m['n_spans']} spans, full order {m['full_order']:.3f}, pairwise {m['pairwise']:.3f}, "
          f"Kendall tau {m['kendall_tau']:.3f}", file=sys.stderr)


def cmd_train(args) -> int:
    from atacformer.tools._dna_ranker import gc_fraction, predict_scores, train_dna_ranker

    spans = _spans(args, args.start, args.end)  # bad FASTA / chromosome / end: refused before writing
    train, test = spans.split(args.test_start) if args.test_start is not None else (spans, None)
    if not len(train):
        raise ValueError("no training spans: no stretch holds two accessible windows (check --chroms, --start, "
                         "--end and --test-start)")
    print(f"{len(spans)} spans; training on {len(train)}", file=sys.stderr)
    kw = {k: v for k, v in dict(max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                time_budget=args.time_budget).items() if v is not None}
    model = train_dna_ranker(train, args.output, seed=args.seed, overwrite=args.overwrite, progress=True, **kw)
    print(f"{args.output}/model: the trained ranker", file=sys.stderr)
    if test is not None and len(test):
        _report("held-out, DNA ranker", predict_scores(model, test.codes), test)
        _report("held-out, GC fraction", gc_fraction(test.codes), test)
    return 0


def cmd_evaluate(args) -> int:
    from atacformer.models import load_model
    from atacformer.tools._dna_ranker import gc_fraction, predict_scores

    model = load_model(args.model)
    args.region_length = model.config.region_length
    spans = _spans(args, args.start, args.end)
    _report("DNA ranker", predict_scores(model, spans.codes), spans)
    _report("GC fraction", gc_fraction(spans.codes), spans)
    return 0


def _span_args(p) -> None:
    p.add_argument("peaks", nargs="+", metavar="PEAKS", help="cells x peaks matrices (.h5ad ...); a window's "
                   "accessibility is the mean over them of the fraction of cells in its peaks")
    p.add_argument("--fasta", required=True, help="indexed genome FASTA (plain or bgzip with .fai and .gzi)")
    p.add_argument("--chroms", nargs="+", help="chromosomes (default: all of the peaks')")
    p.add_argument("--start", type=int, help="first base of the stretch used on each chromosome")
    p.add_argument("--end", type=int, help="end of that stretch (default: the chromosome's end)")
    p.add_argument("--shift", type=int, default=10, help="span starts every span length / SHIFT bases (10)")
    p.add_argument("--min-nonzero", type=int, default=2, help="accessible windows a span needs (2)")


def add_dna_ranker_commands(sub) -> None:
    r = sub.add_parser("dna-ranker", help="rank DNA windows by accessibility (ATAC-aware DNA model)",
                       description="Spans of three adjacent windows of an indexed FASTA, ranked by the "
                       "accessibility of peak matrices; a convolutional DNA encoder with a list-wise ranking head "
                       "(LeRoy 2025 ch. 3).")
    rs = r.add_subparsers(dest="dna_ranker_command", metavar="ACTION", required=True)
    t = rs.add_parser("train", help="peak matrices + FASTA -> model folder")
    _span_args(t)
    t.add_argument("--region-length", type=int, default=500, help="bases per window (500)")
    t.add_argument("--test-start", type=int, help="hold out spans from here on (no shared base) and report them")
    t.add_argument("--steps", type=int, help="optimizer steps")
    t.add_argument("--time-budget", type=float, help="minutes")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("-o", "--output", required=True, help="run folder (checkpoints, then model/)")
    t.add_argument("--overwrite", action="store_true")
    t.set_defaults(func=cmd_train)
    e = rs.add_parser("evaluate", help="ranking accuracy of a model folder against GC content")
    e.add_argument("model", metavar="MODEL", help="a dna-ranker model folder")
    _span_args(e)
    e.set_defaults(func=cmd_evaluate)

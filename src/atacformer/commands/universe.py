"""``atacformer universe build | assess | from-cells``: consensus region sets from the command line."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("atacformer")


def _check_out(path, overwrite: bool, inputs=()) -> None:
    from atacformer.tokenizers._cells import check_output_file

    check_output_file(path, overwrite=overwrite, inputs=inputs, suffix="")


def cmd_build(args) -> int:
    from atacformer.vocab.universe import CoverageTracks, build

    _check_out(args.output, args.overwrite, args.beds)
    cov = CoverageTracks.from_beds(args.beds, genome=args.genome, smooth=args.smooth, clip=args.clip)
    kwargs = {}
    if args.method == "cc":
        kwargs.update(merge=args.merge, filter_size=args.filter_size)
    if args.method == "hmm" and args.fit:
        kwargs["fit"] = True
    u = build(cov, args.method, cutoff=args.cutoff, **kwargs)
    if not len(u):
        from atacformer.errors import AtacformerError

        raise AtacformerError(f"the {args.method} universe of these {cov.n_files} files is empty; nothing written")
    if args.coverage_dir:
        cov.write_bigwig(args.coverage_dir)
    u.write(args.output, overwrite=True)
    w = u.widths()
    print(f"{args.output}: {len(u):,} regions, {int(w.sum()):,} bp (median {int(sorted(w)[len(w) // 2]):,} bp) "
          f"from {cov.n_files} files by {args.method}", file=sys.stderr)
    return 0


def cmd_assess(args) -> int:
    from atacformer.vocab.universe.assess import assess, summary, write_report

    _check_out(args.output, args.overwrite, [args.universe, *args.beds])
    table = assess(args.universe, args.beds, genome=args.genome, clip=args.clip,
                   geniml_quirks=args.geniml_compatible)
    write_report(table, args.output, overwrite=True)
    s = summary(table)
    print(f"{args.output}: {len(table)} files; " + ", ".join(f"{k} {v:.4g}" for k, v in s.items()
                                                               if isinstance(v, (int, float))), file=sys.stderr)
    return 0


def cmd_from_cells(args) -> int:
    from atacformer.vocab.universe.recipe import from_cells

    _check_out(args.output, args.overwrite, [args.input])
    u = from_cells(args.input, args.output, genome=args.genome, groupby=args.groupby, n_clusters=args.n_clusters,
                   resolution=args.resolution, workdir=args.workdir, min_cells=args.min_cells, min_fragments=args.min_fragments,
                   qvalue=args.qvalue, cutoff=args.cutoff, overwrite=True)
    print(f"{args.output}: {len(u):,} regions, {int(u.widths().sum()):,} bp", file=sys.stderr)
    return 0


def add_universe_commands(sub) -> None:
    u = sub.add_parser("universe", help="consensus region sets (universes): build, assess, or make one from cells",
                       description="Build a consensus region set from a collection of BED files, assess how "
                       "well one fits a collection, or run the whole recipe from single cells.")
    us = u.add_subparsers(dest="universe_command", metavar="ACTION", required=True)

    b = us.add_parser("build", help="BED files -> universe BED",
                      description="Coverage tracks of the collection (run lengths; --coverage-dir writes them as "
                      "bigWig), then one method: union, intersection, cc (coverage cutoff), ccf (flexible "
                      "cutoff), lh (maximum likelihood) or hmm. Flexible universes (ccf, lh, hmm) are BED9 with the "
                      "core as thickStart/thickEnd.")
    b.add_argument("beds", nargs="+", metavar="BED", help="region sets (BED / narrowPeak, gz or plain)")
    b.add_argument("--method", required=True, choices=["union", "intersection", "cc", "ccf", "lh", "hmm"])
    b.add_argument("--cutoff", type=float, help="cc: minimum number of files covering a base (default: each "
                   "chromosome's mean coverage, as geniml)")
    b.add_argument("--merge", type=int, default=0, help="cc: join regions fewer than this many bp apart")
    b.add_argument("--filter-size", type=int, default=0, help="cc: drop regions shorter than this")
    b.add_argument("--fit", action="store_true", help="hmm: re-estimate transitions and emissions (Baum-Welch) "
                   "before decoding")
    b.add_argument("--genome", required=True, help="hg38, hg19, mm10, mm39 or a .chrom.sizes file")
    b.add_argument("--smooth", type=int, default=25, help="window (bp) around region starts and ends (default 25)")
    b.add_argument("--clip", action="store_true", help="cut regions overhanging a chromosome end instead of "
                   "stopping with an error")
    b.add_argument("--coverage-dir", help="also write all_start.bw / all_core.bw / all_end.bw here")
    b.add_argument("-o", "--output", required=True, help="universe BED (.bed or .bed.gz)")
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(func=cmd_build)

    a = us.add_parser("assess", help="how well a universe fits a collection -> per-file TSV",
                      description="Per file: base-level precision, recall and F10 against the universe, region "
                      "boundary distances (RBS); and the universe's likelihood under the collection's coverage.")
    a.add_argument("universe", metavar="UNIVERSE", help="universe BED (BED3, or BED9 flexible)")
    a.add_argument("beds", nargs="+", metavar="BED", help="the collection's region sets")
    a.add_argument("--genome", required=True, help="hg38, hg19, mm10, mm39 or a .chrom.sizes file")
    a.add_argument("--clip", action="store_true", help="cut regions overhanging a chromosome end instead of "
                   "stopping with an error")
    a.add_argument("--geniml-compatible", action="store_true", help="reproduce geniml 0.8.4's numbers exactly, "
                   "the artefacts of its streaming distance search and likelihood included")
    a.add_argument("-o", "--output", required=True, help="report TSV")
    a.add_argument("--overwrite", action="store_true")
    a.set_defaults(func=cmd_assess)

    c = us.add_parser("from-cells", help="cells -> clusters -> pseudo-bulk peaks (MACS3) -> CC + HMM universe",
                      description="The published recipe: cluster the cells (or use --groupby), pool each "
                      "cluster's fragments, call peaks with MACS3, build the CC and HMM universes of the "
                      "per-cluster peak sets and merge them. A peak matrix has no fragments: a cluster's peak set "
                      "is then the peaks open in enough of its cells.")
    c.add_argument("input", metavar="INPUT", help="fragments .tsv(.gz) or a peak matrix (.h5ad)")
    c.add_argument("--genome", required=True, help="hg38, hg19, mm10, mm39 or a .chrom.sizes file")
    c.add_argument("--groupby", help="obs column (h5ad) or TSV barcode<TAB>label to use instead of clustering")
    c.add_argument("--n-clusters", type=int, help="number of Leiden clusters (default: Leiden at --resolution)")
    c.add_argument("--resolution", type=float, default=1.0)
    c.add_argument("--min-cells", type=int, default=25, help="skip clusters with fewer cells (default 25)")
    c.add_argument("--min-fragments", type=int, default=1000, help="fragments: drop cells with fewer (default 1000)")
    c.add_argument("--qvalue", type=float, default=0.01, help="MACS3 q-value cutoff (default 0.01)")
    c.add_argument("--cutoff", type=float, help="CC cutoff (default: each chromosome's mean coverage)")
    c.add_argument("--workdir", help="keep the pseudo-bulk files, peaks and coverage tracks here")
    c.add_argument("-o", "--output", required=True, help="universe BED (.bed or .bed.gz)")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=cmd_from_cells)

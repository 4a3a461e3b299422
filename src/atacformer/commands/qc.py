"""``atacformer tokenize`` options for cell QC and calling (``--qc``, ``--tss``...)."""

from __future__ import annotations

import argparse
import os


def add_qc_arguments(t: argparse.ArgumentParser) -> None:
    """Add the QC / cell-calling flags to the ``tokenize`` parser."""
    q = t.add_argument_group("cell QC and calling (fragments inputs; computed in the tokenizing pass)")
    q.add_argument("--qc", action="store_true",
                   help="write QC metrics into obs: n_fragments, duplicate_rate, nucleosome_signal, and with "
                   "--tss also tsse (as SnapATAC2), frac_tss, frac_promoter")
    q.add_argument("--tss", metavar="FILE", help="GTF (transcript starts, as SnapATAC2 reads it) or TSS BED; "
                   "implies --qc")
    q.add_argument("--peaks", metavar="BED", help="peak set (BED / narrowPeak): obs['frip'], the fraction of "
                   "fragments in peaks; implies --qc")
    q.add_argument("--min-tsse", type=float, help="drop cells with a lower TSS enrichment (needs --tss)")
    q.add_argument("--knee", action="store_true",
                   help="drop barcodes below the knee of the barcode-rank curve (on top of --min-fragments)")
    q.add_argument("--doublets", action="store_true",
                   help="score doublets with Scrublet (scanpy.pp.scrublet) into obs['doublet_score']")
    q.add_argument("--qc-plots", metavar="DIR", help="also write the QC plots (knee, fragment lengths, TSS "
                   "profile) as PNGs into DIR")


def qc_options(args) -> dict:
    """Keyword arguments of :func:`atacformer.tokenizers.tokenize_fragments`; refuses bad
    combinations before any work is done."""
    from atacformer.errors import AtacformerError

    if args.min_tsse is not None and not args.tss:
        raise AtacformerError("--min-tsse needs --tss FILE (a GTF or a TSS BED)")
    if args.tss and not os.path.exists(args.tss):
        raise AtacformerError(f"{args.tss}: no such file (--tss takes a GTF or a TSS BED)")
    if (args.doublets or args.qc_plots) and not os.fspath(args.output).endswith(".h5ad"):
        raise AtacformerError("--doublets and --qc-plots need an .h5ad output (not a corpus folder)")
    if args.qc_plots and not os.path.isdir(args.qc_plots):
        raise AtacformerError(f"{args.qc_plots}: no such folder (--qc-plots)")
    opts = {}
    if args.peaks and not os.path.exists(args.peaks):
        raise AtacformerError(f"{args.peaks}: no such file (--peaks takes a BED or narrowPeak)")
    if args.qc or args.tss or args.qc_plots or args.peaks:
        opts["qc"] = True
    if args.peaks:
        opts["peaks"] = args.peaks
    if args.tss:
        opts["tss"] = args.tss
    if args.min_tsse is not None:
        opts["min_tsse"] = args.min_tsse
    if args.knee:
        opts["knee"] = True
    return opts


def qc_finish(args, adata, name: str) -> None:
    """Doublet scores and QC plots of one tokenized dataset (before it is written)."""
    if args.doublets:
        from atacformer.preprocessing import doublet_scores

        doublet_scores(adata)
    if args.qc_plots and "qc" in adata.uns:
        from atacformer.plotting import qc as plot_qc

        plot_qc(adata, save=os.path.join(args.qc_plots, name))

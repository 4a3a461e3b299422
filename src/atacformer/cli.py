"""Command-line interface: one subcommand per user task.

Run ``atacformer --help`` for the list and ``atacformer COMMAND --help`` for each.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("atacformer")

def _vocab_from_args(args):
    from atacformer.vocab import Vocabulary

    if args.universe:
        return Vocabulary.from_bed(args.universe, genome=args.genome)
    return Vocabulary.from_bins(args.genome, args.bins)


def cmd_tokenize(args) -> int:
    import pandas as pd

    from atacformer.tokenizers import tokenize_paths

    from atacformer.errors import AtacformerError
    from atacformer.tokenizers._cells import check_output_file, write_h5ad_atomic

    out = os.fspath(args.output)
    if out.endswith(".h5ad"):
        check_output_file(out, overwrite=args.overwrite, inputs=args.inputs)
    elif Path(out).exists() and not (Path(out) / "manifest.json").exists():
        raise AtacformerError(f"{out} exists and is not a corpus folder; name a new folder, an existing corpus "
                              "(to append to it) or an .h5ad file")
    from atacformer.commands.qc import qc_finish, qc_options

    qc_opts = qc_options(args)
    vocab = _vocab_from_args(args)
    log.info("vocabulary: %r", vocab)
    results = []
    if out.endswith(".h5ad"):
        for name, cells in tokenize_paths(args.inputs, vocab, genome=args.genome, barcodes=args.barcodes,
                                           min_fragments=args.min_fragments, mode=args.mode,
                                           input_type=args.input_type, **qc_opts):
            if len(args.inputs) == 1 and not (args.doublets or args.qc_plots):  # written without an AnnData
                from atacformer.tokenizers._h5ad import write_cells_h5ad

                cells.obs["dataset"] = pd.Categorical.from_codes(np.zeros(cells.n_cells, np.int8), [name])
                _report(name, cells)
                write_cells_h5ad(cells, out)
                print(f"wrote {out}")
                return 0
            a = cells.to_anndata()
            qc_finish(args, a, name)
            a.obs["dataset"] = name
            results.append(a)
            _report(name, cells)
        import anndata as ad

        adata = results[0] if len(results) == 1 else ad.concat(results, merge="first", uns_merge="first",
                                                                index_unique=None)
        if not adata.obs_names.is_unique:
            adata.obs_names = (adata.obs["dataset"].astype(str) + ":" + pd.Index(adata.obs_names)).to_numpy()
        adata.var = results[0].var
        write_h5ad_atomic(adata, out)
    else:
        from atacformer.corpus import tokenize_to_corpus

        # inputs spread over worker processes (or a Dask cluster); an input that fails leaves the
        # corpus as it was, an interrupted run is finished by rerunning the command
        run = tokenize_to_corpus(args.inputs, out, vocab, workers=args.workers, scheduler=args.scheduler,
                                 genome=args.genome, barcodes=args.barcodes, min_fragments=args.min_fragments,
                                 mode=args.mode, input_type=args.input_type, **qc_opts)
        for name in run.skipped:
            print(f"{name}: already in {out}, skipped")
        for name, summary in run.added.items():
            print(f"{name}: " + json.dumps(summary))
    print(f"wrote {out}")
    return 0


def cmd_gene_activity(args) -> int:
    from atacformer.preprocessing import gene_activity
    from atacformer.tokenizers._cells import check_output_file, write_h5ad_atomic

    out = os.fspath(args.output)
    check_output_file(out, overwrite=args.overwrite, inputs=[args.input, args.gtf])
    adata = gene_activity(args.input, args.gtf, genome=args.genome, mode=args.mode, barcodes=args.barcodes,
                          min_fragments=args.min_fragments)
    write_h5ad_atomic(adata, out)
    print(f"wrote {out}: {adata.n_obs:,} cells x {adata.n_vars:,} genes, "
          f"{int((adata.X.getnnz(axis=0) > 0).sum()):,} genes with activity")
    return 0


def cmd_region_features(args) -> int:
    from atacformer.tokenizers._cells import check_output_file, write_h5ad_atomic
    from atacformer.vocab.dna import read_regions, region_features

    out = os.fspath(args.output)
    check_output_file(out, overwrite=args.overwrite, inputs=[args.vocab, args.fasta])
    kmers = tuple(int(k) for k in args.kmers.split(",") if k.strip()) if args.kmers.lower() != "none" else ()
    motifs = None if args.motifs.lower() == "none" else args.motifs
    adata = region_features(read_regions(args.vocab), args.fasta, kmers=kmers, motifs=motifs, pvalue=args.pvalue,
                            encoder=args.encoder, progress=True)
    write_h5ad_atomic(adata, out)
    print(f"wrote {out}: {adata.n_obs:,} regions x {adata.n_vars:,} features "
          f"({', '.join(f'{k} {v}' for k, v in adata.var['kind'].value_counts(sort=False).items() if v)})")
    return 0


def _report(name, cells):
    print(f"{name}: " + json.dumps(cells.summary()))


def _load_model_folder(path):
    """A model folder; a training run's folder (pretrain / finetune ``--out``) gives its model."""
    from atacformer.models import load_model

    p = Path(path)
    if p.is_dir() and not (p / "config.json").exists() and (p / "model" / "config.json").exists():
        print(f"using {p / 'model'} (the model of the training run {p})", file=sys.stderr)
        path = p / "model"
    return load_model(path)


def _model_and_cells(args, verb: str):
    """The model of ``args.model`` and ``args.input`` tokenized into its vocabulary."""
    from atacformer.errors import AtacformerError
    from atacformer.tokenizers import tokenize_input

    model = _load_model_folder(args.model)
    vocab = getattr(model, "vocab", None)
    if vocab is None:
        raise AtacformerError(f"{args.model}: the model folder has no vocabulary (universe.bed.gz)")
    cells = tokenize_input(args.input, vocab, genome=args.genome, barcodes=args.barcodes,
                           min_fragments=args.min_fragments, input_type=args.input_type)
    if cells.X.shape[0] == 0:
        raise AtacformerError(f"{args.input}: no cells to {verb}")
    return model, cells


def cmd_embed(args) -> int:
    from atacformer import tools as tl
    from atacformer.errors import AtacformerError
    from atacformer.tokenizers._cells import check_output_file, write_h5ad_atomic

    out = os.fspath(args.output)
    check_output_file(out, overwrite=args.overwrite, inputs=[args.input])
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if args.modality == "rna":
        import anndata as ad

        model = _load_model_folder(args.model)
        adata = ad.read_h5ad(args.input)
        tl.embed(adata, model, batch_size=args.batch_size, device=device, progress=True, modality="rna")
    else:
        model, cells = _model_and_cells(args, "embed")
        adata = cells.to_anndata()
        tl.embed(adata, model, batch_size=args.batch_size, device=device, progress=True)
    emb = adata.obsm["X_atacformer"]
    bad = ~np.isfinite(emb).all(1)
    if bad.all():
        raise AtacformerError(f"{args.model}: every embedding is NaN or infinite (the model's weights are not "
                              "finite, or no cell has a token in its vocabulary); nothing was written")
    write_h5ad_atomic(adata, out)
    print(f"wrote {out}: {adata.n_obs} cells x {emb.shape[1]}-d embeddings in obsm['X_atacformer']"
          + (f" ({int(bad.sum())} cells without a token in the vocabulary are NaN)" if bad.any() else ""))
    return 0


def cmd_impute(args) -> int:
    from atacformer import tools as tl
    from atacformer.errors import AtacformerError
    from atacformer.tokenizers._cells import check_output_file, write_h5ad_atomic

    out = os.fspath(args.output)
    check_output_file(out, overwrite=args.overwrite, inputs=[args.input])
    model, cells = _model_and_cells(args, "impute")
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    pred = tl.impute(cells.to_anndata(), model, batch_size=args.batch_size, device=device, progress=True)
    bad = ~np.isfinite(pred.X).all(1)
    if bad.all():
        raise AtacformerError(f"{args.model}: every imputed profile is NaN or infinite; nothing was written")
    write_h5ad_atomic(pred, out)
    print(f"wrote {out}: {pred.n_obs} cells x {pred.n_vars} genes of imputed log1p(counts / total * 1e4)"
          + (f" ({int(bad.sum())} cells without a token in the vocabulary are NaN)" if bad.any() else ""))
    return 0


def _confusion_path(args) -> str | None:
    """--plot, or next to OUT (OUT stem + .confusion.png) when there are true labels."""
    if args.plot:
        return os.fspath(args.plot)
    if args.truth_key:
        out = Path(os.fspath(args.output))
        return os.fspath(out.with_name(out.name.removesuffix(".h5ad") + ".confusion.png"))
    return None


def cmd_annotate(args) -> int:
    from atacformer import plotting as pl
    from atacformer import tools as tl
    from atacformer.errors import AtacformerError
    from atacformer.tokenizers import tokenize_input
    from atacformer.tokenizers._cells import check_output_file, write_h5ad_atomic

    out = os.fspath(args.output)
    inputs = [args.input] + ([args.reference] if args.reference else [])
    check_output_file(out, overwrite=args.overwrite, inputs=inputs)
    if args.plot and not args.truth_key:
        raise AtacformerError("--plot draws predicted against true labels; pass --truth-key too")
    plot = _confusion_path(args)
    if plot is not None:
        check_output_file(plot, overwrite=args.overwrite, inputs=inputs, suffix=".png")
        if os.path.abspath(plot) == os.path.abspath(out):
            raise AtacformerError(f"{plot}: the plot and the annotated cells need two different files")
    model, cells = _model_and_cells(args, "annotate")
    query = cells.to_anndata()
    reference = None
    if args.reference:
        ref_cells = tokenize_input(args.reference, model.vocab, genome=args.genome)
        if ref_cells.X.shape[0] == 0:
            raise AtacformerError(f"{args.reference}: the reference has no cells")
        reference = ref_cells.to_anndata()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    scores = tl.annotate(query, model, reference=reference, labels_key=args.labels_key, k=args.k,
                         min_confidence=args.min_confidence, truth_key=args.truth_key,
                         batch_size=args.batch_size, device=device)
    info = query.uns["annotation"]
    write_h5ad_atomic(query, out)
    source = f"reference {args.reference} (k={args.k})" if reference is not None else "the model's classifier"
    print(f"annotated {info['n_cells']:,} cells from {source}: {info['n_assigned']:,} assigned, "
          f"{info['n_unassigned']:,} unassigned (confidence < {args.min_confidence:g})")
    if scores is not None:
        print(scores["per_type"].to_markdown(floatfmt=("", ".3f", ".3f", ".3f", ".0f")))
        print(f"macro-F1 {scores['macro_f1']:.3f}, accuracy {scores['accuracy']:.3f} over "
              f"{scores['n_scored']:,} cells with a {args.truth_key!r} label (unassigned counts as wrong)")
    print(f"wrote {out}: obs['predicted_label'], obs['prediction_confidence']")
    if plot is not None:
        pl.confusion_matrix(query, args.truth_key, save=plot)
        print(f"wrote {plot}")
    return 0


def cmd_demo(args) -> int:
    from atacformer.demo import run_main_job

    run_main_job(args.out, data_dir=args.data_dir, bin_size=args.bins, input_path=args.input,
                 labels_key=args.labels_key, genome=args.genome, steps=args.steps)
    return 0


def _model_input_args(p) -> None:
    """Output and input options of the commands that run a model over cells (embed, impute)."""
    p.add_argument("-o", "--output", required=True, help="OUT.h5ad (never one of the inputs)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT.h5ad")
    p.add_argument("--genome", default=None, help="genome to check coordinates against (default: the model's)")
    p.add_argument("--barcodes", help="barcode whitelist (fragments inputs)")
    p.add_argument("--min-fragments", type=int, default=0)
    p.add_argument("--input-type", choices=["fragments", "matrix", "bed", "corpus"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")


def build_parser() -> argparse.ArgumentParser:
    from atacformer import __version__
    from atacformer.evaluation.cli import add_benchmark_commands
    from atacformer.evaluation.suites_cli import add_evaluate_commands
    from atacformer.train.cli import add_train_commands
    from atacformer.commands.tosica import add_tosica_commands
    from atacformer.commands.get import add_get_commands
    from atacformer.commands.dna_ranker import add_dna_ranker_commands
    from atacformer.commands.universe import add_universe_commands

    p = argparse.ArgumentParser(prog="atacformer", description="Transformer foundation models for chromatin "
                                "accessibility: tokenize, pretrain, embed, annotate, cluster.")
    p.add_argument("--version", action="version", version=f"atacformer {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("tokenize", help="fragments / peak matrices / BED files -> tokenized cells (.h5ad or corpus)",
                       description="Tokenize inputs into a vocabulary of genome bins or a region universe. "
                       "OUT ending in .h5ad writes an AnnData (X = counts, var = token coordinates); any other "
                       "OUT is an on-disk corpus directory (appended to when it exists).")
    t.add_argument("inputs", nargs="+", metavar="INPUT", help="fragments .tsv(.gz), .h5ad/.h5/MTX folder, or BED")
    t.add_argument("--genome", default="hg38", help="hg38, hg19, mm10, mm39 or a .chrom.sizes file (default hg38)")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--bins", type=int, default=5000, help="fixed genome bin size in bp (default 5000)")
    g.add_argument("--universe", help="BED file of regions to use as the vocabulary (e.g. a geniml universe)")
    t.add_argument("--barcodes", help="barcode whitelist, one per line (fragments inputs)")
    t.add_argument("--min-fragments", type=int, default=0, help="drop cells with fewer fragments")
    t.add_argument("--mode", choices=["fragment", "insertion"], default="fragment",
                   help="count fragments per region, or Tn5 insertions as SnapATAC2 (default fragment)")
    t.add_argument("--input-type", choices=["fragments", "matrix", "bed"], help="override input type detection")
    t.add_argument("-o", "--output", required=True, help="OUT.h5ad or a corpus directory")
    t.add_argument("--overwrite", action="store_true", help="replace an existing OUT.h5ad")
    from atacformer.commands.qc import add_qc_arguments

    add_qc_arguments(t)
    t.add_argument("--workers", type=int, help="corpus OUT: worker processes, one input each (default: one per "
                   "CPU core, at most one per input)")
    t.add_argument("--scheduler", metavar="ADDRESS", help="corpus OUT: tokenize on a Dask cluster (scheduler "
                   "address, e.g. tcp://host:8786; needs atacformer[distributed] and a shared file system)")
    t.set_defaults(func=cmd_tokenize)

    ga = sub.add_parser("gene-activity", help="fragments / peak matrix -> cells x genes activity (.h5ad)",
                        description="Weighted counts in windows of 0-10, 10-20 and 20-50 kb on each side of every "
                        "gene's TSS (the gene body in the first downstream window), weighted 1/2, 1/3 and 1/6 "
                        "(see atacformer.pp.gene_activity).")
    ga.add_argument("input", metavar="INPUT", help="fragments .tsv(.gz), or a .h5ad/.h5/MTX peak matrix")
    ga.add_argument("--gtf", required=True, help="gene annotation: GTF(.gz) (GENCODE/Ensembl) or a genes BED "
                    "(chrom start end name id strand)")
    ga.add_argument("--genome", default=None, help="hg38, hg19, mm10, mm39 or a .chrom.sizes file: checks genes "
                    "and data and clips windows at chromosome ends (default: no check)")
    ga.add_argument("--mode", choices=["fragment", "insertion"], default="fragment",
                    help="count fragments, or Tn5 insertion sites (fragments input; default fragment)")
    ga.add_argument("--barcodes", help="barcode whitelist, one per line (fragments input)")
    ga.add_argument("--min-fragments", type=int, default=0, help="drop cells with fewer fragments")
    ga.add_argument("-o", "--output", required=True, help="OUT.h5ad")
    ga.add_argument("--overwrite", action="store_true", help="replace an existing OUT.h5ad")
    ga.set_defaults(func=cmd_gene_activity)

    rf = sub.add_parser("region-features", help="DNA features of every vocabulary region (k-mers, TF motifs, "
                        "a DNA encoder) -> regions x features (.h5ad)",
                        description="Canonical k-mer frequencies, JASPAR CORE vertebrate motif max scores and hit "
                        "counts (p < PVALUE, both strands) and optional embeddings of a local Hugging Face DNA "
                        "model, per region (see atacformer.vocab.dna.region_features).")
    rf.add_argument("vocab", metavar="VOCAB", help="universe BED(.gz) or a model / vocabulary folder")
    rf.add_argument("--fasta", required=True, help="genome FASTA indexed with samtools faidx (.fai; bgzip: .gzi)")
    rf.add_argument("--kmers", default="4,5,6", help="comma-separated k-mer sizes, or none (default 4,5,6)")
    rf.add_argument("--motifs", default="JASPAR2024", help="pyjaspar release (JASPAR2014..) or none "
                    "(default JASPAR2024)")
    rf.add_argument("--pvalue", type=float, default=1e-4, help="motif hit p-value (default 1e-4)")
    rf.add_argument("--encoder", help="local Hugging Face DNA model folder (e.g. Nucleotide Transformer)")
    rf.add_argument("-o", "--output", required=True, help="OUT.h5ad")
    rf.add_argument("--overwrite", action="store_true", help="replace an existing OUT.h5ad")
    rf.set_defaults(func=cmd_region_features)

    e = sub.add_parser("embed", help="cell embeddings from a model folder (ours or geniml's) -> obsm['X_atacformer']",
                       description="Tokenize INPUT with the model's own vocabulary and embed every cell.")
    e.add_argument("model", metavar="MODEL_DIR", help="model folder or Hugging Face Hub id")
    e.add_argument("input", metavar="INPUT", help="fragments file, .h5ad peak matrix, or a corpus directory")
    _model_input_args(e)
    e.add_argument("--modality", choices=["atac", "rna"], default="atac",
                   help="rna: INPUT is an RNA counts .h5ad embedded by a CRAFT model's RNA encoder into the space "
                   "its ATAC cells share (default atac)")
    e.set_defaults(func=cmd_embed)

    im = sub.add_parser("impute", help="RNA expression imputed from ATAC cells by a CRAFT model -> cells x genes",
                        description="Tokenize INPUT with the CRAFT model's vocabulary and predict each cell's "
                        "log1p(counts / total * 1e4) expression of the model's genes from its ATAC embedding.")
    im.add_argument("model", metavar="MODEL_DIR", help="CRAFT model folder (atacformer craft -o DIR: DIR/model)")
    im.add_argument("input", metavar="INPUT", help="ATAC cells: fragments file, .h5ad peak matrix, or a corpus")
    _model_input_args(im)
    im.set_defaults(func=cmd_impute)

    a = sub.add_parser("annotate", help="cell types for a query: kNN vote of a labelled reference, or the "
                       "model's classifier", description="Tokenize QUERY (and --reference) with the model's own "
                       "vocabulary, embed both and label each query cell by its k nearest reference cells; "
                       "without --reference, the model's classification head labels the cells. Cells below "
                       "--min-confidence are 'unassigned'. Writes obs['predicted_label'] and "
                       "obs['prediction_confidence'].")
    a.add_argument("model", metavar="MODEL_DIR", help="model folder or Hugging Face Hub id")
    a.add_argument("input", metavar="QUERY", help="fragments file, .h5ad peak matrix, or a corpus directory")
    a.add_argument("-o", "--output", required=True, help="OUT.h5ad (never one of the inputs)")
    a.add_argument("--reference", metavar="REF", help="labelled cells (.h5ad peak matrix, usually on the same "
                   "peaks); without it the model must have a classification head")
    a.add_argument("--labels-key", default="cell_type", help="reference obs column of labels (default cell_type)")
    a.add_argument("--k", type=int, default=15, help="reference neighbours voting (default 15)")
    a.add_argument("--min-confidence", type=float, default=0.5,
                   help="cells whose vote share (or class probability) is below it are 'unassigned' "
                   "(default 0.5)")
    a.add_argument("--truth-key", help="query obs column of true labels: print per-type precision/recall/F1 "
                   "and macro-F1, and draw the confusion matrix")
    a.add_argument("--plot", metavar="PNG", help="confusion-matrix PNG (needs --truth-key); default with "
                   "--truth-key: OUT stem + .confusion.png next to OUT")
    a.add_argument("--overwrite", action="store_true", help="replace an existing OUT.h5ad (and plot)")
    a.add_argument("--genome", default=None, help="genome to check coordinates against (default: the model's)")
    a.add_argument("--barcodes", help="barcode whitelist (fragments query)")
    a.add_argument("--min-fragments", type=int, default=0)
    a.add_argument("--input-type", choices=["fragments", "matrix", "bed", "corpus"], help="QUERY's type")
    a.add_argument("--batch-size", type=int, default=64)
    a.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    a.set_defaults(func=cmd_annotate)

    d = sub.add_parser("demo", help="the main job on real data (../shared/data) or, without it, synthetic data",
                       description="Real fragments and a real labelled peak matrix -> tokens -> report.")
    d.add_argument("--data-dir", help="real data folder (default: ../shared/data or $ATACFORMER_DATA)")
    d.add_argument("--bins", type=int, default=5000, help="bin size (default 5000)")
    d.add_argument("--out", default="results", help="output folder (default results/)")
    d.add_argument("--input", help="your own fragments file (.tsv.gz) or peak matrix (.h5ad) instead of the "
                   "bundled sets")
    d.add_argument("--labels-key", help="obs column (h5ad) with labels, or a TSV barcode<TAB>label (fragments), "
                   "for scoring; without it clusters are reported unscored")
    d.add_argument("--genome", default="hg38", help="genome of --input fragments (binned at --bins; default hg38)")
    d.add_argument("--steps", type=int, default=None, help="pretraining steps (default 80)")
    d.set_defaults(func=cmd_demo)
    add_train_commands(sub)
    add_benchmark_commands(sub)
    add_evaluate_commands(sub)
    add_universe_commands(sub)
    add_tosica_commands(sub)
    add_get_commands(sub)
    add_dna_ranker_commands(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("atacformer: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for the user; the traceback under -v
        if args.verbose:
            import traceback

            traceback.print_exc()
        text = str(e) if isinstance(e, (OSError, ValueError, KeyError)) or type(e).__module__.startswith(
            "atacformer") else f"{type(e).__name__}: {e}"
        print(f"atacformer: error: {text.strip(chr(39)) if isinstance(e, KeyError) else text}"
              + ("" if args.verbose else "  (run with -v for details)"), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

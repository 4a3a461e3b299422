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

log = logging.getLogger("atacformer")

FRAGMENT_SUFFIXES = (".tsv", ".tsv.gz", ".tsv.bgz", ".fragments.gz")
BED_SUFFIXES = (".bed", ".bed.gz", ".narrowpeak", ".narrowpeak.gz", ".broadpeak", ".broadpeak.gz", ".bed.bgz")
MATRIX_SUFFIXES = (".h5ad", ".h5")


def input_kind(path: str, forced: str | None = None) -> str:
    """``fragments``, ``matrix`` or ``bed`` from a path's form (``--input-type`` overrides)."""
    if forced:
        return forced
    p = Path(path)
    low = p.name.lower()
    if p.is_dir():
        return "corpus" if (p / "manifest.json").exists() else "matrix"
    if low.endswith(MATRIX_SUFFIXES):
        return "matrix"
    if low.endswith(BED_SUFFIXES):
        return "bed"
    if low.endswith(FRAGMENT_SUFFIXES) or "fragments" in low:
        return "fragments"
    raise SystemExit(f"error: cannot tell the type of {path!r}; name it .tsv.gz (fragments), .bed/.narrowPeak "
                     "(region set), .h5ad/.h5/MTX folder (peak matrix), or pass --input-type")


def _vocab_from_args(args):
    from atacformer.vocab import Vocabulary

    if args.universe:
        return Vocabulary.from_bed(args.universe, genome=args.genome)
    return Vocabulary.from_bins(args.genome, args.bins)


def tokenize_inputs(inputs, vocab, *, genome=None, barcodes=None, min_fragments=0, mode="fragment",
                    input_type=None):
    """Yield ``(dataset_name, TokenizedCells)`` for each input path."""
    import numpy as np
    import scipy.sparse as sp

    from atacformer.tokenizers import TokenizedCells, tokenize_bed, tokenize_fragments, tokenize_peak_matrix

    beds = []
    for path in inputs:
        kind = input_kind(path, input_type)
        name = Path(path).name.split(".")[0]
        if kind == "fragments":
            yield name, tokenize_fragments(path, vocab, genome=genome, barcodes=barcodes,
                                           min_fragments=min_fragments, mode=mode)
        elif kind == "matrix":
            yield name, tokenize_peak_matrix(path, vocab, genome=genome)
        elif kind == "bed":
            beds.append((Path(path).name, tokenize_bed(path, vocab, genome=genome)))
        else:
            raise SystemExit(f"error: {path}: a corpus cannot be tokenized again")
    if beds:  # bulk region sets: one row per file
        rows = np.repeat(np.arange(len(beds)), [len(t) for _, t in beds])
        cols = np.concatenate([t for _, t in beds]) if beds else np.empty(0, np.int64)
        X = sp.csr_matrix((np.ones(len(cols), np.int32), (rows, cols)), shape=(len(beds), vocab.n_regions))
        yield "bed", TokenizedCells(X=X, barcodes=np.array([n for n, _ in beds], dtype=object), vocab=vocab)


def cmd_tokenize(args) -> int:
    import anndata as ad
    import pandas as pd

    vocab = _vocab_from_args(args)
    log.info("vocabulary: %r", vocab)
    out = os.fspath(args.output)
    results = []
    if out.endswith(".h5ad"):
        for name, cells in tokenize_inputs(args.inputs, vocab, genome=args.genome, barcodes=args.barcodes,
                                           min_fragments=args.min_fragments, mode=args.mode,
                                           input_type=args.input_type):
            a = cells.to_anndata()
            a.obs["dataset"] = name
            results.append(a)
            _report(name, cells)
        adata = results[0] if len(results) == 1 else ad.concat(results, merge="first", uns_merge="first",
                                                                index_unique=None)
        if not adata.obs_names.is_unique:
            adata.obs_names = (adata.obs["dataset"].astype(str) + ":" + pd.Index(adata.obs_names)).to_numpy()
        adata.var = results[0].var
        from atacformer.tokenizers._cells import write_h5ad_atomic

        write_h5ad_atomic(adata, out)
    else:
        from atacformer.data import Corpus

        # a new corpus is created once its first input has tokenized, so an input that fails
        # first leaves no folder; each later dataset is appended atomically
        corpus = Corpus.open(out) if (Path(out) / "manifest.json").exists() else None
        for name, cells in tokenize_inputs(args.inputs, vocab, genome=args.genome, barcodes=args.barcodes,
                                           min_fragments=args.min_fragments, mode=args.mode,
                                           input_type=args.input_type):
            if corpus is None:
                corpus = Corpus.create(out, vocab)
            corpus.append(cells.X, obs=cells.obs, dataset=name)
            _report(name, cells)
    print(f"wrote {out}")
    return 0


def _report(name, cells):
    print(f"{name}: " + json.dumps(cells.summary()))


def tokenize_for_model(path, vocab, *, genome=None, barcodes=None, min_fragments=0, input_type=None):
    """Tokenized cells of one input (fragments, peak matrix, tokenized h5ad or corpus) in ``vocab``."""
    import anndata as ad

    from atacformer.tokenizers import TokenizedCells

    kind = input_kind(path, input_type)
    if kind == "corpus":
        from atacformer.data import Corpus

        c = Corpus.open(path)
        vocab.check_same(c.vocab, what=f"corpus {path}")
        X = c.get_rows(range(len(c)))
        return TokenizedCells(X=X, barcodes=c.obs.index.to_numpy(), vocab=vocab, obs=c.obs.copy())
    if kind == "matrix" and str(path).endswith(".h5ad"):
        a = ad.read_h5ad(path, backed="r")
        info = a.uns.get("atacformer_vocab") if hasattr(a, "uns") else None
        if info is not None and info.get("hash") == vocab.region_hash():  # already tokenized in this vocabulary
            a = ad.read_h5ad(path)
            return TokenizedCells(X=a.X.tocsr(), barcodes=a.obs_names.to_numpy(), vocab=vocab, obs=a.obs.copy())
    [(_, cells)] = list(tokenize_inputs([path], vocab, genome=genome, barcodes=barcodes,
                                        min_fragments=min_fragments, input_type=input_type))
    return cells


def cmd_embed(args) -> int:
    from atacformer.models import embed_cells, load_model

    model = load_model(args.model)
    vocab = getattr(model, "vocab", None)
    if vocab is None:
        raise SystemExit(f"error: {args.model}: the model folder has no vocabulary (universe.bed.gz)")
    cells = tokenize_for_model(args.input, vocab, genome=args.genome, barcodes=args.barcodes,
                               min_fragments=args.min_fragments, input_type=args.input_type)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    emb = embed_cells(model, cells.X, batch_size=args.batch_size, device=device, progress=True)
    adata = cells.to_anndata()
    adata.obsm["X_atacformer"] = emb
    out = os.fspath(args.output)
    from atacformer.tokenizers._cells import write_h5ad_atomic

    write_h5ad_atomic(adata, out)
    print(f"wrote {out}: {adata.n_obs} cells x {emb.shape[1]}-d embeddings in obsm['X_atacformer']")
    return 0


def cmd_demo(args) -> int:
    from atacformer.pipeline import run_main_job

    run_main_job(args.out, data_dir=args.data_dir, bin_size=args.bins, input_path=args.input,
                 labels_key=args.labels_key, genome=args.genome, steps=args.steps)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from atacformer import __version__
    from atacformer.benchmark.cli import add_benchmark_commands
    from atacformer.train.cli import add_train_commands

    p = argparse.ArgumentParser(prog="atacformer", description="Transformer foundation models for chromatin "
                                "accessibility: tokenize, pretrain, embed, cluster.")
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
    t.set_defaults(func=cmd_tokenize)

    e = sub.add_parser("embed", help="cell embeddings from a model folder (ours or geniml's) -> obsm['X_atacformer']",
                       description="Tokenize INPUT with the model's own vocabulary and embed every cell.")
    e.add_argument("model", metavar="MODEL_DIR", help="model folder or Hugging Face Hub id")
    e.add_argument("input", metavar="INPUT", help="fragments file, .h5ad peak matrix, or a corpus directory")
    e.add_argument("-o", "--output", required=True, help="OUT.h5ad")
    e.add_argument("--genome", default=None, help="genome to check coordinates against (default: the model's)")
    e.add_argument("--barcodes", help="barcode whitelist (fragments inputs)")
    e.add_argument("--min-fragments", type=int, default=0)
    e.add_argument("--input-type", choices=["fragments", "matrix", "bed", "corpus"])
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    e.set_defaults(func=cmd_embed)

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
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    from atacformer.errors import AtacformerError

    try:
        return args.func(args)
    except (AtacformerError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

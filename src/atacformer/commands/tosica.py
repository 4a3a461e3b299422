"""``atacformer tosica train | predict``: TOSICA cell-type annotation from the command line."""

from __future__ import annotations

import sys


def cmd_train(args) -> int:
    from atacformer import tools as tl

    kwargs = {k: v for k, v in dict(max_steps=args.max_steps, epochs=args.epochs, lr=args.lr,
                                    batch_size=args.batch_size, seed=args.seed,
                                    time_budget=args.time_budget).items() if v is not None}
    path = tl.tosica_train(args.reference, args.gmt, args.labels_key, args.output, gene_key=args.gene_key,
                           layer=args.layer, min_genes_per_set=args.min_genes_per_set,
                           max_genes_per_set=args.max_genes_per_set, threshold=args.threshold,
                           overwrite=args.overwrite, progress=not args.quiet, **kwargs)
    from atacformer.models import load_model

    c = load_model(path).config
    print(f"{path}: TOSICA over {c.n_genes:,} genes, {c.n_pathways:,} gene-set tokens, "
          f"{len(c.label_names)} cell types", file=sys.stderr)
    return 0


def cmd_predict(args) -> int:
    import anndata as ad

    from atacformer import tools as tl
    from atacformer.tokenizers._cells import check_output_file, write_h5ad_atomic

    check_output_file(args.output, overwrite=args.overwrite, inputs=[args.query])
    if args.plot:
        check_output_file(args.plot, overwrite=args.overwrite, suffix=".png")
    query = ad.read_h5ad(args.query)
    tl.tosica_predict(query, args.model, threshold=args.threshold, layer=args.layer, progress=not args.quiet)
    if args.plot:
        from atacformer import plotting as pl

        pl.tosica_attention(query, save=args.plot)
    write_h5ad_atomic(query, args.output)
    counts = query.obs["predicted_label"].value_counts()
    print(f"{args.output}: {query.n_obs:,} cells annotated; "
          + ", ".join(f"{k} {v}" for k, v in counts.items() if v), file=sys.stderr)
    return 0


def add_tosica_commands(sub) -> None:
    t = sub.add_parser("tosica", help="TOSICA: interpretable cell-type annotation over gene-set tokens",
                       description="Train TOSICA (Chen 2023) on labelled cells with a GMT file of gene sets "
                       "(one token per set), then annotate query cells; the <cls> attention over gene sets is "
                       "stored per cell.")
    ts = t.add_subparsers(dest="tosica_command", metavar="ACTION", required=True)

    tr = ts.add_parser("train", help="labelled REF.h5ad + GMT -> model folder (DIR/model)",
                       description="Expression is log-normalised; counts are normalised first (normalize_total "
                       "1e4 + log1p).")
    tr.add_argument("reference", metavar="REF.h5ad")
    tr.add_argument("--gmt", required=True, help="gene sets (.gmt or .gmt.gz)")
    tr.add_argument("--labels-key", default="cell_type", help="obs column of cell types (default cell_type)")
    tr.add_argument("--gene-key", help="var column of gene symbols (default: var_names or the best-matching column)")
    tr.add_argument("--layer", help="use this layer instead of X")
    tr.add_argument("--min-genes-per-set", type=int, default=5, help="keep gene sets with at least this many of "
                    "the data's genes (default 5)")
    tr.add_argument("--max-genes-per-set", type=int, help="and at most this many")
    tr.add_argument("--threshold", type=float, default=0.5, help="the model's default confidence threshold "
                    "for Unknown calls (default 0.5)")
    tr.add_argument("--max-steps", type=int, help="optimizer steps (default: from --epochs)")
    tr.add_argument("--epochs", type=float, help="passes over the cells (default 20)")
    tr.add_argument("--lr", type=float, help="peak learning rate (default 3e-3)")
    tr.add_argument("--batch-size", type=int, help="cells per step (default 32)")
    tr.add_argument("--time-budget", type=float, help="stop after this many minutes")
    tr.add_argument("--seed", type=int)
    tr.add_argument("-o", "--output", required=True, help="the run's folder; the model lands in OUTPUT/model")
    tr.add_argument("--overwrite", action="store_true")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_train)

    pr = ts.add_parser("predict", help="model folder + QUERY.h5ad -> annotated OUT.h5ad",
                       description="Writes obs['predicted_label'] (Unknown below --threshold), "
                       "obs['prediction_confidence'], obsm['X_tosica_attention'] and uns['tosica'].")
    pr.add_argument("model", metavar="DIR", help="a TOSICA model folder, or the training run's folder")
    pr.add_argument("query", metavar="QUERY.h5ad")
    pr.add_argument("-o", "--output", required=True, help="annotated .h5ad")
    pr.add_argument("--threshold", type=float, help="confidence threshold (default: the model's)")
    pr.add_argument("--layer", help="use this layer instead of X")
    pr.add_argument("--plot", help="also write a heat map PNG of the top gene sets per predicted type")
    pr.add_argument("--overwrite", action="store_true")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_predict)

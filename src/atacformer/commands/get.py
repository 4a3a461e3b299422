"""``atacformer get pretrain | finetune | predict``: GET (Fu 2025) from the command line.

Each command builds the GET data from the same inputs (paired ATAC and RNA ``.h5ad``, a
gene annotation, the ``obs`` column of the pseudo-bulks, optionally a FASTA for motif
features; see :mod:`atacformer.tools._get`) and calls the library function.
"""

from __future__ import annotations

import sys


def _read(path):
    import anndata as ad

    from atacformer.errors import InputMissingError

    if path is None:
        return None
    try:
        return ad.read_h5ad(path)
    except FileNotFoundError:
        raise InputMissingError(path, "no such .h5ad file") from None


def _data(args, need_rna: bool):
    from atacformer.tools._get import get_data

    if need_rna and not args.rna:
        raise ValueError("--rna is needed here (expression of the same cells)")
    return get_data(_read(args.atac), _read(args.rna), args.genes, groupby=args.groupby, fasta=args.fasta,
                    n_regions=args.n_regions, window_bp=args.window_bp, min_cells=args.min_cells,
                    gene_body=args.gene_body)


def _select(data, args):
    """Genes of --chroms (default all) minus those of --exclude-chroms."""
    chrom = data.genes["chrom"].astype(str)
    keep = chrom.isin(args.chroms.split(",")).to_numpy() if args.chroms else chrom.notna().to_numpy()
    if args.exclude_chroms:
        keep &= ~chrom.isin(args.exclude_chroms.split(",")).to_numpy()
    if not keep.any():
        raise ValueError(f"no gene left on --chroms {args.chroms!r} without --exclude-chroms {args.exclude_chroms!r}")
    return keep


def _train_kw(args) -> dict:
    return {"max_steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
            "overwrite": args.overwrite, "resume": args.resume}


def _check_folder(path, overwrite: bool, resume: bool) -> None:
    """Refuse a training folder before the data are built (``--overwrite`` is the loop's to do)."""
    from pathlib import Path

    from atacformer.train.trainer import check_output_folder

    if not overwrite:
        check_output_folder(Path(path), resume, overwrite=False)


def cmd_pretrain(args) -> int:
    from atacformer.tools._get import get_pretrain

    _check_folder(args.output, args.overwrite, args.resume)
    data = _data(args, need_rna=False)
    s = get_pretrain(data, args.output, genes=_select(data, args), hidden_size=args.hidden_size,
                     num_layers=args.layers, num_heads=args.heads, intermediate_size=2 * args.hidden_size,
                     mask_ratio=args.mask_ratio, **_train_kw(args))
    print(f"{args.output}/model: {s['steps']} steps, masked-region MSE {s['final_loss']:.4f}", file=sys.stderr)
    return 0


def cmd_finetune(args) -> int:
    from atacformer.tools._get import get_finetune

    _check_folder(args.output, args.overwrite, args.resume)
    data = _data(args, need_rna=True)
    s = get_finetune(data, args.pretrained, args.output, genes=_select(data, args), lora_rank=args.lora_rank,
                     objective=args.objective, **_train_kw(args))
    what = "Poisson NLL" if args.objective == "poisson" else "log1p MSE"
    print(f"{args.output}/model: {s['steps']} steps, {what} {s['final_loss']:.4f}", file=sys.stderr)
    return 0


def cmd_predict(args) -> int:
    import anndata as ad
    import numpy as np
    import pandas as pd

    from atacformer.tokenizers._cells import check_output_file, write_h5ad_atomic
    from atacformer.tools._get import get_predict

    check_output_file(args.output, overwrite=args.overwrite, inputs=[args.atac, args.rna])
    data = _data(args, need_rna=False)
    keep = _select(data, args)
    pred = get_predict(args.model, data, genes=keep)
    out = ad.AnnData(X=pred.to_numpy(np.float32), obs=pd.DataFrame({"n_cells": data.n_cells}, index=pred.index),
                     var=data.genes[keep].set_index("gene_name"))
    if data.expression is not None:
        out.layers["observed"] = data.expression[:, keep].astype(np.float32)
    out.uns["get"] = {"model": str(args.model), "values": "counts per million of each pseudo-bulk"}
    write_h5ad_atomic(out, args.output)
    print(f"{args.output}: {out.n_obs} groups x {out.n_vars} genes", file=sys.stderr)
    return 0


def _data_args(p, rna_required: bool) -> None:
    p.add_argument("--atac", required=True, help="cells x peaks .h5ad (counts or binary)")
    p.add_argument("--rna", required=rna_required, help="cells x genes .h5ad of counts, same cells in the same order")
    p.add_argument("--genes", required=True, help="gene annotation: GTF or genes BED (TSS per gene)")
    p.add_argument("--groupby", required=True, help="ATAC obs column whose groups are the pseudo-bulks")
    p.add_argument("--fasta", help="indexed genome FASTA for JASPAR motif features (default: accessibility only)")
    p.add_argument("--n-regions", type=int, default=200, help="regions per gene window (default 200)")
    p.add_argument("--window-bp", type=int, default=2_000_000, help="window width around the TSS (default 2 Mb)")
    p.add_argument("--min-cells", type=int, default=1, help="drop groups with fewer cells")
    p.add_argument("--gene-body", action="store_true",
                   help="add a feature marking the window regions in the gene's own body (same for every stage)")
    p.add_argument("--chroms", help="comma-separated chromosomes whose genes are used (default all)")
    p.add_argument("--exclude-chroms", help="comma-separated chromosomes whose genes are held out")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--overwrite", action="store_true")


def _train_args(p) -> None:
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")


def add_get_commands(sub) -> None:
    g = sub.add_parser("get", help="GET: region features -> expression (pretrain, fine-tune, predict)",
                       description="GET (Fu 2025): the regions nearest each gene's TSS, each a vector of motif "
                       "scores and pseudo-bulk accessibility, read by a transformer; pretrained by masked region "
                       "reconstruction, fine-tuned with LoRA to predict expression (Poisson).")
    gs = g.add_subparsers(dest="get_command", metavar="ACTION", required=True)
    p = gs.add_parser("pretrain", help="masked region reconstruction -> OUTPUT/model")
    _data_args(p, rna_required=False)
    _train_args(p)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--mask-ratio", type=float, default=0.5)
    p.set_defaults(func=cmd_pretrain)
    f = gs.add_parser("finetune", help="Poisson expression fine-tuning with LoRA -> OUTPUT/model")
    _data_args(f, rna_required=True)
    _train_args(f)
    f.add_argument("--pretrained", required=True, help="the pretrain command's OUTPUT/model folder")
    f.add_argument("--lora-rank", type=int, default=8, help="LoRA rank (0: train every weight)")
    f.add_argument("--objective", choices=("poisson", "log1p_mse"), default="poisson",
                   help="Poisson likelihood of CPM (Fu 2025; default) or squared error of log1p CPM")
    f.set_defaults(func=cmd_finetune)
    q = gs.add_parser("predict", help="predicted counts per million, groups x genes -> .h5ad")
    q.add_argument("model", metavar="MODEL", help="a fine-tuned GET folder")
    _data_args(q, rna_required=False)
    q.set_defaults(func=cmd_predict)

"""``atacformer evaluate SUITE ... -o report.json`` and ``atacformer evaluate table DIR``: the
fixed metric suites of :mod:`atacformer.evaluation.suites` from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _read(path: str):
    import anndata as ad

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return ad.read_h5ad(path)


def _obs(adata, key: str, file: str):
    if key not in adata.obs.columns:
        raise KeyError(f"{file}: obs has no column {key!r} (columns: {list(adata.obs.columns)})")
    return adata.obs[key].to_numpy()


def _obsm(adata, key: str, file: str):
    if key not in adata.obsm:
        raise KeyError(f"{file}: obsm has no {key!r} (keys: {list(adata.obsm)})")
    return adata.obsm[key]


def _inputs(args) -> tuple[dict, list[str]]:
    """The suite's inputs read from the files named on the command line, and those files."""
    s = args.suite
    if s in ("clustering", "integration", "annotation"):
        a = _read(args.h5ad)
        if s == "annotation":
            return {"truth": _obs(a, args.truth_key, args.h5ad), "predicted": _obs(a, args.pred_key, args.h5ad)}, \
                [args.h5ad]
        inputs = {"adata": a, "rep": args.rep, "labels_key": args.labels_key, "seed": args.seed}
        if s == "integration":
            inputs.update(batch_key=args.batch_key, backend=args.backend)
        return inputs, [args.h5ad]
    if s == "retrieval":
        a = _read(args.h5ad)
        b = _read(args.h5ad_y) if args.h5ad_y else a
        y_file = args.h5ad_y or args.h5ad
        if args.h5ad_y and (a.n_obs != b.n_obs or not (a.obs_names == b.obs_names).all()):
            raise ValueError(f"{args.h5ad} and {y_file} must hold the same cells in the same order (obs_names)")
        return {"x": _obsm(a, args.x_rep, args.h5ad), "y": _obsm(b, args.y_rep, y_file), "metric": args.metric}, \
            [args.h5ad, y_file]
    real, pred = _read(args.real), _read(args.pred)
    return {"real": real, "pred": pred, "layer": args.layer, "group_key": args.group_key,
            "control": args.control}, [args.real, args.pred]


def cmd_evaluate(args) -> int:
    """Score one model on one suite and write its report (``.json`` and a one-row ``.tsv``)."""
    from atacformer.evaluation.suites import evaluate
    from atacformer.tokenizers._cells import check_output_file

    files = [f for f in (getattr(args, k, None) for k in ("h5ad", "h5ad_y", "real", "pred")) if f]
    check_output_file(args.output, overwrite=args.overwrite, inputs=files, suffix=".json")
    check_output_file(str(Path(args.output).with_suffix(".tsv")), overwrite=args.overwrite, inputs=files,
                      suffix=".tsv")
    inputs, files = _inputs(args)
    dataset = args.dataset or Path(files[0]).stem
    report = evaluate(args.model, args.suite, dataset=dataset, **inputs)
    report.inputs.update({"files": files})
    report.write(args.output)
    print(json.dumps(report.to_json()["metrics"]))
    print(f"wrote {args.output} and {Path(args.output).with_suffix('.tsv')}", file=sys.stderr)
    return 0


def cmd_table(args) -> int:
    """Collect a folder of reports into one side-by-side table (TSV, or markdown on stdout)."""
    from atacformer.evaluation.suites import collect_reports, format_reports
    from atacformer.tokenizers._cells import check_output_file

    if args.output:
        check_output_file(args.output, overwrite=args.overwrite, suffix=".tsv")
    table = collect_reports(args.reports, suite=args.suite)
    if args.output:
        from atacformer.io._atomic import write_text_atomic

        write_text_atomic(Path(args.output), table.to_csv(sep="\t", index=False))
        print(f"wrote {args.output}: {len(table)} reports", file=sys.stderr)
    else:
        print(format_reports(table, args.columns.split(",") if args.columns else None), end="")
    return 0


def _common(p) -> None:
    p.add_argument("--model", required=True, help="the model's name in the report")
    p.add_argument("--dataset", default=None, help="the data set's name in the report (default: the input's stem)")
    p.add_argument("-o", "--output", required=True, help="report file (.json; a one-row .tsv is written beside it)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def add_evaluate_commands(sub) -> None:
    """Register ``atacformer evaluate`` on an ``argparse`` sub-parser collection."""
    e = sub.add_parser("evaluate", help="score a model's output with a fixed metric suite (one report per model "
                       "and task), or collect reports into one table",
                       description="Fixed metric suites: every model scored the same way "
                       "(atacformer.evaluation.suites).")
    s = e.add_subparsers(dest="suite", metavar="SUITE", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    c = s.add_parser("clustering", help="an embedding (obsm) against labels: Leiden / k-means ARI, AMI, NMI, "
                     "homogeneity, kNN label transfer", formatter_class=fmt)
    c.add_argument("--h5ad", required=True)
    c.add_argument("--rep", required=True, help="obsm key of the embedding")
    c.add_argument("--labels-key", default="cell_type")
    c.add_argument("--seed", type=int, default=0)
    _common(c)

    a = s.add_parser("annotation", help="predicted labels against true ones: accuracy, macro-F1, per-type F1, "
                     "rejection rate", formatter_class=fmt)
    a.add_argument("--h5ad", required=True)
    a.add_argument("--truth-key", default="cell_type", help="obs column of the true labels")
    a.add_argument("--pred-key", default="predicted_label", help="obs column of the predicted labels")
    _common(a)

    i = s.add_parser("integration", help="an embedding with batches and labels: scib-metrics batch correction and "
                     "bio-conservation", formatter_class=fmt)
    i.add_argument("--h5ad", required=True)
    i.add_argument("--rep", required=True, help="obsm key of the embedding")
    i.add_argument("--batch-key", default="batch")
    i.add_argument("--labels-key", default="cell_type")
    i.add_argument("--backend", choices=["auto", "scib", "atacformer"], default="auto")
    i.add_argument("--seed", type=int, default=0)
    _common(i)

    r = s.add_parser("retrieval", help="paired embeddings (row i the same cell): FOSCTTM, recall@1/5/10",
                     formatter_class=fmt)
    r.add_argument("--h5ad", required=True, help="cells with obsm[--x-rep] (and obsm[--y-rep] without --h5ad-y)")
    r.add_argument("--x-rep", required=True)
    r.add_argument("--y-rep", required=True)
    r.add_argument("--h5ad-y", default=None, help="a second file with the same cells holding obsm[--y-rep]")
    r.add_argument("--metric", choices=["cosine", "euclidean", "correlation"], default="cosine")
    _common(r)

    for name in ("expression", "imputation"):
        x = s.add_parser(name, help="a predicted cells x genes matrix against the observed one: Pearson / Spearman "
                         "per gene and cell, MSE, MAE; cell-eval group metrics with --group-key", formatter_class=fmt)
        x.add_argument("--real", required=True, help="observed values (.h5ad)")
        x.add_argument("--pred", required=True, help="predicted values (.h5ad, same cells and genes)")
        x.add_argument("--layer", default=None, help="compare this layer instead of X")
        x.add_argument("--group-key", default=None, help="obs column of groups (e.g. cell types) for cell-eval")
        x.add_argument("--control", default=None, help="the reference group of the deltas")
        _common(x)

    t = s.add_parser("table", help="collect a folder of reports into one side-by-side table", formatter_class=fmt)
    t.add_argument("reports", help="folder of reports (searched recursively)")
    t.add_argument("--suite", default=None, help="only this suite's reports")
    t.add_argument("--columns", default=None, help="comma-separated metrics to show (markdown output)")
    t.add_argument("-o", "--output", default=None, help="write a .tsv instead of markdown on stdout")
    t.add_argument("--overwrite", action="store_true")
    t.set_defaults(func=cmd_table)

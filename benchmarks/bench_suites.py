"""Every model scored the same way: the fixed metric suites side by side on real data.

Clustering and annotation (one labelled set, default BM0828, Buenrostro 2018): LSI,
scEmbed, the SnapATAC2 spectral peer and atacformer (the ``profile`` recipe pretrained on the
set's cells for ``--pretrain-minutes``, and the same recipe untrained) each embed the cells;
each embedding goes through the ``clustering`` suite (Leiden / k-means at the true k, kNN
transfer) and, labels transferred by ``tl.annotate`` (k = 15) from a stratified reference
half to the query half, through the ``annotation`` suite.

Expression (NeurIPS 2021 bone-marrow multiome RNA, log-normalised): donor s1d2 predicted
from donor s1d1 by three trivial models (the mean of the cell's type, the global mean, a
random s1d1 cell), scored by the ``expression`` suite with cell-eval's group metrics (groups:
cell types; control: the most common type).

One report per model and task is written under ``<out>/reports`` and collected into
``<out>/suites.tsv`` / ``suites.md``.

One run (defaults; 2 cores shared with other work, load ~14; 1,069 s in all, of which
scEmbed 470 s and the first Leiden's numba compile most of LSI's 281 s). BM0828, 533 cells:
Leiden ARI LSI 0.466, SnapATAC2 0.495, scEmbed 0.123, atacformer 0.007 (untrained 0.008);
kNN annotation macro-F1 0.703, 0.734, 0.312, 0.293 (0.293). The 2-minute budget fitted 9 of
1,500 planned pretraining steps (10.7 s a step), so the atacformer rows say nothing about a
trained model. The annotation suite's accuracy / macro-F1 equal the clustering suite's
``transfer_acc`` / ``transfer_f1`` for every embedding (the same split, k and scoring).
NeurIPS s1d2 from s1d1 (279 cells, 600 genes): the cell-type mean reaches Pearson per gene
0.124, per cell 0.595, group Pearson delta 0.405, discrimination 0.695 (random cell: 0.001,
0.337, -0.063, 0.565), yet a higher MSE than the global mean (2.005 vs 1.962): at 600 sparse
genes per-cell noise dominates the squared error.

Usage::

    python benchmarks/bench_suites.py [--out benchmarks/out/suites] [--dataset BM0828]
        [--pretrain-minutes 2] [--threads 2]
"""

from __future__ import annotations

import time
from pathlib import Path

from _common import parse, parser

CLUSTER_COLUMNS = ["n_cells", "leiden_ari", "leiden_nmi", "kmeans_ari", "transfer_acc", "transfer_f1"]
ANNOTATION_COLUMNS = ["n_cells", "accuracy", "macro_f1", "fraction_rejected"]
EXPRESSION_COLUMNS = ["pearson_gene", "pearson_cell", "spearman_cell", "mse", "group_pearson_delta", "group_mse",
                      "group_discrimination_l1"]


def embeddings(tok, args, out: Path, say) -> dict[str, str]:
    """method -> obsm key, each method fitted on ``tok`` (labels unused)."""
    from atacformer import tools as tl
    from atacformer.evaluation.harness import BenchmarkConfig, snapatac2_spectral, train_recipe

    reps = {}
    t0 = time.perf_counter()
    tl.lsi(tok, n_components=30, seed=args.seed)
    reps["LSI"] = "X_lsi"
    say(f"  LSI {time.perf_counter() - t0:.0f}s")
    t0 = time.perf_counter()
    tl.scembed(tok, epochs=args.scembed_epochs, seed=args.seed)
    reps["scEmbed"] = "X_scembed"
    say(f"  scEmbed {time.perf_counter() - t0:.0f}s")
    try:
        snapatac2_spectral(tok, 30, seed=args.seed)
        reps["SnapATAC2"] = "X_spectral"
    except ImportError:
        say("  snapatac2 is not installed: the peer is skipped")
    cfg = BenchmarkConfig(time_budget=args.pretrain_minutes, seed=args.seed)
    for label, steps in (("untrained", 0), ("", None)):
        t0 = time.perf_counter()
        model, summary = train_recipe("profile", tok, out / "runs" / f"profile{'-' + label if label else ''}", cfg,
                                      steps)
        key = f"X_atacformer_{label or 'trained'}"
        tl.embed(tok, model, key_added=key)
        reps[f"atacformer profile{' ' + label if label else ''}"] = key
        say(f"  atacformer {label or 'trained'}: {summary['steps']} steps, {time.perf_counter() - t0:.0f}s")
    return reps


def score_cells(name, tok, reps, reports: Path, seed: int, say) -> None:
    """The clustering and annotation reports of each embedding."""
    from atacformer import tools as tl
    from atacformer.evaluation.suites import evaluate
    from atacformer.metrics import stratified_split

    ref_mask = stratified_split(tok.obs["cell_type"].astype(str).to_numpy(), seed)
    for method, rep in reps.items():
        t0 = time.perf_counter()
        c = evaluate(method, "clustering", dataset=name, out_dir=reports, adata=tok, rep=rep, seed=seed).metrics
        ref, query = tok[ref_mask].copy(), tok[~ref_mask].copy()
        tl.annotate(query, reference=ref, labels_key="cell_type", use_rep=rep, k=15, min_confidence=0.0)
        a = evaluate(method, "annotation", dataset=name, out_dir=reports, truth=query.obs["cell_type"].to_numpy(),
                     predicted=query.obs["predicted_label"].to_numpy()).metrics
        say(f"  {method}: Leiden ARI {c['leiden_ari']:.3f}, annotation macro-F1 {a['macro_f1']:.3f} "
            f"({time.perf_counter() - t0:.0f}s)")


def score_expression(data: Path, reports: Path, seed: int, say) -> None:
    """Trivial RNA predictions of one donor from the other, through the expression suite."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    from anndata import AnnData

    from atacformer.evaluation.rna import log_normalize
    from atacformer.evaluation.suites import evaluate

    rna = ad.read_h5ad(data / "neurips2021_bmmc_multiome_500" / "bmmc_multiome_500_rna.h5ad")
    x = log_normalize(rna.X).toarray()
    types = rna.obs["cell_type"].astype(str).to_numpy()
    train = rna.obs["batch"].astype(str).to_numpy() == "s1d1"
    test = ~train
    real = AnnData(x[test], obs=pd.DataFrame({"cell_type": types[test]}, index=rna.obs_names[test]),
                   var=pd.DataFrame(index=rna.var_names))
    control = pd.Series(types[test]).value_counts().index[0]
    global_mean = x[train].mean(0)
    type_mean = {t: x[train & (types == t)].mean(0) for t in np.unique(types[train])}
    draw = np.random.default_rng(seed).integers(0, train.sum(), test.sum())
    preds = {"cell-type mean": np.stack([type_mean.get(t, global_mean) for t in types[test]]),
             "global mean": np.tile(global_mean, (test.sum(), 1)),
             "random cell": x[train][draw]}
    for model, p in preds.items():
        m = evaluate(model, "expression", dataset="NeurIPS-s1d2-from-s1d1", out_dir=reports, real=real,
                     pred=AnnData(p, obs=real.obs.copy(), var=real.var.copy()), group_key="cell_type",
                     control=control).metrics
        say(f"  {model}: Pearson per gene {m['pearson_gene']:.3f}, per cell {m['pearson_cell']:.3f}, "
            f"MSE {m['mse']:.3f}, group Pearson delta {m['group_pearson_delta']:.3f}")


def main(argv=None) -> int:
    p = parser(__doc__, "suites")
    p.add_argument("--dataset", default="BM0828", help="a labelled set of atacformer.evaluation.LABELLED_SETS")
    p.add_argument("--max-cells", type=int, default=None, help="stratified subsample (quick runs)")
    p.add_argument("--pretrain-minutes", type=float, default=2.0)
    p.add_argument("--scembed-epochs", type=int, default=10)
    args, data = parse(p, argv, threads=2)
    if data is None:
        return 2
    import torch

    torch.set_num_threads(args.threads)
    from atacformer.evaluation.harness import load_labelled_sets, tokenize_sets
    from atacformer.evaluation.suites import collect_reports, format_reports

    def say(m):
        print(m, flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reports = out / "reports"
    t0 = time.perf_counter()
    sets = load_labelled_sets(data, [args.dataset], args.max_cells, args.seed)
    tok, _ = tokenize_sets(sets, "peaks")[args.dataset]
    say(f"{args.dataset}: {tok.n_obs} cells x {tok.n_vars:,} regions")
    reps = embeddings(tok, args, out, say)
    score_cells(args.dataset, tok, reps, reports, args.seed, say)
    say("expression: NeurIPS 2021 multiome RNA")
    score_expression(data, reports, args.seed, say)
    table = collect_reports(reports)
    table.to_csv(out / "suites.tsv", sep="\t", index=False)
    text = "".join(f"### {suite}\n\n" + format_reports(table[table.suite == suite].dropna(axis=1, how="all"), cols)
                   + "\n" for suite, cols in (("clustering", CLUSTER_COLUMNS), ("annotation", ANNOTATION_COLUMNS),
                                              ("expression", EXPRESSION_COLUMNS)))
    (out / "suites.md").write_text(text)
    say(f"\n{text}{time.perf_counter() - t0:.0f}s in all; wrote {out / 'suites.tsv'} and {out / 'suites.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

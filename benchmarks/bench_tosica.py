"""TOSICA (Chen 2023) against logistic regression and kNN on held-out cells, plus rejection.

For each data set, one stratified split (70 % reference, 30 % held-out cells) of the cells'
log-normalised expression (normalize_total 1e4 + log1p over all genes). TOSICA is trained
through ``tl.tosica_train`` on the reference with a GMT file (one token per gene set keeping
>= 5 of the data's genes, plus one token for the genes in no kept set, m = 48, 2 layers,
4 heads); scikit-learn's logistic regression and kNN (k = 15) read the same genes. Reported:
macro-F1 and accuracy on the held-out cells (no threshold).

Rejection: one cell type is removed from the reference; TOSICA (and, as a peer, logistic
regression's highest probability) then annotates the held-out cells; per threshold, the
fraction of the removed type's cells (all of them, none was trained on) called "Unknown"
against the fraction of known-type held-out cells called "Unknown".

Usage::

    python benchmarks/bench_tosica.py [--out benchmarks/out/tosica] [--datasets bmmc,scicar]
        [--gmt reactome_TOSICA.gmt] [--epochs 20] [--max-cells 600] [--threads 1]

The tables land in ``OUT/tosica_<datasets>.md`` (and ``accuracy_*.csv``, ``rejection_*.csv``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import parse, parser

#: data set -> (h5ad under the data folder, label column, cell type held out for rejection)
DATASETS = {
    "bmmc": ("neurips2021_bmmc_multiome_500/bmmc_multiome_500_rna.h5ad", "cell_type", "NK"),
    "scicar": ("scicar2018_a549_multiome/scicar_a549_rna.h5ad", "cell_type", "A549_DEX_1h"),
}
THRESHOLDS = (0.5, 0.7, 0.9)


def _scores(y_true, y_pred) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {"macro_f1": f1_score(y_true, y_pred, average="macro"), "accuracy": accuracy_score(y_true, y_pred)}


def run_dataset(name, data: Path, gmt: Path, args, work: Path, say) -> tuple[list[dict], list[dict]]:
    import anndata as ad
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier

    from atacformer import tools as tl
    from atacformer.io.gmt import read_gmt
    from atacformer.tools._tosica import log_expression

    path, key, held = DATASETS[name]
    a = ad.read_h5ad(data / path)
    rng = np.random.default_rng(args.seed)
    if a.n_obs > args.max_cells:
        a = a[np.sort(rng.choice(a.n_obs, args.max_cells, replace=False))].copy()
    a.X = log_expression(a)  # the same input for every method; TOSICA sees it as log-normalised
    sets = read_gmt(gmt)
    gmt_genes = {g for v in sets.values() for g in v}
    sym = a.var["gene_symbol"].astype(str) if "gene_symbol" in a.var else pd.Index(a.var_names.astype(str))
    n_hit = int(pd.Index(sym).isin(list(gmt_genes)).sum())
    y = a.obs[key].astype(str).to_numpy()
    idx = np.arange(a.n_obs)
    tr, te = train_test_split(idx, test_size=0.3, stratify=y, random_state=args.seed)
    X = a.X.toarray()
    rows, rej = [], []
    base = dict(dataset=name, cells=a.n_obs, genes=a.n_vars, gmt=gmt.name, gmt_genes_in_data=n_hit,
                types=len(set(y)), train=len(tr), test=len(te))

    def tosica(train_idx, tag):
        t = time.perf_counter()
        model = tl.tosica_train(a[train_idx].copy(), gmt, key, work / f"{name}_{tag}", normalize=False,
                                epochs=args.epochs, time_budget=args.minutes, seed=args.seed, progress=False,
                                tensorboard=False)
        q = a[te].copy()
        tl.tosica_predict(q, model, threshold=0.0, normalize=False)
        return q, time.perf_counter() - t, model

    q, secs, model = tosica(tr, "all")
    from atacformer.models import load_model

    n_tokens = load_model(model).config.n_pathways
    steps = json.loads((Path(model).parent / "summary.json").read_text())["steps"]
    rows.append({**base, "method": "TOSICA", "tokens": n_tokens, "steps": steps,
                 **_scores(y[te], q.obs["predicted_label"].astype(str)), "seconds": secs})
    say(f"{name}: TOSICA {rows[-1]['macro_f1']:.3f} macro-F1 ({secs:.0f}s, {n_tokens} tokens)")
    for label, clf in [("logistic regression", LogisticRegression(max_iter=3000)),
                       ("kNN (k=15)", KNeighborsClassifier(n_neighbors=15))]:
        t = time.perf_counter()
        clf.fit(X[tr], y[tr])
        rows.append({**base, "method": label, "tokens": None, "steps": None, **_scores(y[te], clf.predict(X[te])),
                     "seconds": time.perf_counter() - t})
        say(f"{name}: {label} {rows[-1]['macro_f1']:.3f} macro-F1")

    # rejection: train without one type; its cells (all of them) should be "Unknown"
    ref = tr[y[tr] != held]
    novel = idx[y == held]
    known = te[y[te] != held]
    a_all = a
    q_idx = np.concatenate([known, novel])
    model = tl.tosica_train(a_all[ref].copy(), gmt, key, work / f"{name}_without", normalize=False,
                            epochs=args.epochs, time_budget=args.minutes, seed=args.seed, progress=False,
                            tensorboard=False)
    q = a_all[q_idx].copy()
    tl.tosica_predict(q, model, threshold=0.0, normalize=False)
    conf_t = q.obs["prediction_confidence"].to_numpy()
    lr = LogisticRegression(max_iter=3000).fit(X[ref], y[ref])
    conf_l = lr.predict_proba(X[q_idx]).max(1)
    is_novel = np.r_[np.zeros(len(known), bool), np.ones(len(novel), bool)]
    for method, conf in [("TOSICA", conf_t), ("logistic regression", conf_l)]:
        for thr in THRESHOLDS:
            rej.append(dict(dataset=name, held_out_type=held, method=method, threshold=thr,
                            novel_cells=int(is_novel.sum()), known_cells=int((~is_novel).sum()),
                            novel_called_unknown=float((conf[is_novel] < thr).mean()),
                            known_called_unknown=float((conf[~is_novel] < thr).mean())))
    say(f"{name}: rejection of {held}: " + "; ".join(
        f"{r['method']} @{r['threshold']}: {r['novel_called_unknown']:.2f} vs {r['known_called_unknown']:.2f}"
        for r in rej))
    return rows, rej


def main(argv=None) -> int:
    p = parser(__doc__, "tosica")
    p.add_argument("--datasets", default="bmmc,scicar")
    p.add_argument("--gmt", default="reactome_TOSICA.gmt", help="file in gene_sets_gmt_human/")
    p.add_argument("--epochs", type=float, default=20.0)
    p.add_argument("--minutes", type=float, default=12.0, help="time budget of each TOSICA training (the cpu "
                   "preset's 12 minutes); a loaded machine may stop before --epochs")
    p.add_argument("--max-cells", type=int, default=600, help="subsample larger data sets to this many cells")
    args, data = parse(p, argv, threads=1)
    if data is None:
        return 2
    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    gmt = data / "gene_sets_gmt_human" / args.gmt
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows, rej = [], []
    with tempfile.TemporaryDirectory() as work:
        for name in (n for n in args.datasets.split(",") if n):
            r, j = run_dataset(name, data, gmt, args, Path(work), say=lambda m: print(m, flush=True))
            rows += r
            rej += j
    acc, rj = pd.DataFrame(rows), pd.DataFrame(rej)
    tag = args.datasets.replace(",", "_")
    acc.to_csv(out / f"accuracy_{tag}.csv", index=False)
    rj.to_csv(out / f"rejection_{tag}.csv", index=False)
    text = ("## Held-out cells (no threshold)\n\n" + acc.to_markdown(index=False, floatfmt=".3f")
            + "\n\n## Rejection of a type missing from the reference\n\n" + rj.to_markdown(index=False, floatfmt=".3f")
            + f"\n\n{time.perf_counter() - t0:.0f}s in all; epochs {args.epochs}, seed {args.seed}, "
            f"threads {args.threads}, GMT {args.gmt}\n")
    (out / f"tosica_{tag}.md").write_text(text)
    print(f"\n{text}\nwrote {out / f'tosica_{tag}.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

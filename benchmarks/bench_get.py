"""GET (Fu 2025) against ridge regressions on gene activity: expression of held-out chromosomes.

Data: sci-CAR A549 (Cao 2018; hg19; 2,641 cells, RNA and ATAC of the same cells). The
pseudo-bulks ("cell types") are the dexamethasone conditions (0/1/3 h) crossed with Leiden
clusters of the ATAC LSI (``--leiden`` clusters; groups under ``--min-cells`` dropped).
Genes are the RNA's genes with a TSS in ArchR's hg19 gene annotation. The genes of
``--test-chroms`` are held out from pretraining, fine-tuning and the baselines' fits.

* GET: accessibility region features, with ``--gene-body`` a 0/1 column for the regions in the
  gene's own body (the only hg19 sequence at hand covers chr22
  16.05-22 Mb, 127 of the 52,761 peaks, so motif columns cannot be had genome-wide):
  pretrained by masked region reconstruction, then fine-tuned with LoRA under a Poisson
  likelihood to counts per million (``--objective log1p_mse``: squared error of log1p CPM),
  through :func:`atacformer.train.pretrain`.
* ridge, gene activity: ``atacformer.pp.gene_activity`` of the same cells (peak-matrix
  input), summed per pseudo-bulk, log1p(CPM), ridge to log1p(expression CPM).
* ridge, window sum: log1p of the pseudo-bulk's CPM summed over the same GET window, and of
  the region holding the TSS (0 when none), ridge as above.
* ridge, + gene extent: the features of both ridges above plus log10 gene length and log1p of
  the window regions in the gene body (what ``--gene-body`` tells GET), ridge as above.

Scores over held-out genes x pseudo-bulks: Pearson and Spearman of log1p(predicted CPM)
vs log1p(observed CPM); and Pearson after centring each gene over the pseudo-bulks (does
a model see which pseudo-bulk expresses a gene more?).

Runs (2 CPU cores shared with other work), 187 held-out genes x 9 pseudo-bulks, Pearson /
Spearman / within-gene: defaults (accessibility only, Poisson; 563 s): GET 0.060 / 0.013 / 0.140;
``--objective poisson --gene-body`` (324 s): GET 0.492 / 0.463 / 0.159;
``--objective log1p_mse --gene-body`` (399 s): GET 0.530 / 0.503 / 0.174 (with
``--finetune-steps 1200``, 232 s: 0.548 / 0.535 / 0.174); ridge on gene activity
0.350 / 0.401 / 0.056; ridge on window + TSS accessibility 0.131 / 0.133 / 0.040; ridge on those
plus log gene length and gene-body regions 0.602 / 0.594 / 0.057.

Usage::

    python benchmarks/bench_get.py [--out benchmarks/out/get] [--test-chroms chr1,chr8,chr17]
        [--pretrain-steps 300] [--finetune-steps 600] [--threads 1] [--objective log1p_mse] [--gene-body]
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from _common import parse, parser


def _scores(name, pred_log, obs_log) -> dict:
    import numpy as np
    from scipy.stats import pearsonr, spearmanr

    c_pred = pred_log - pred_log.mean(axis=0, keepdims=True)
    c_obs = obs_log - obs_log.mean(axis=0, keepdims=True)
    return {"method": name, "pearson": float(pearsonr(pred_log.ravel(), obs_log.ravel())[0]),
            "spearman": float(spearmanr(pred_log.ravel(), obs_log.ravel())[0]),
            "pearson_within_gene": float(pearsonr(c_pred.ravel(), c_obs.ravel())[0]) if np.ptp(c_pred) > 0
            else float("nan")}


def _ridge(x_train, y_train, x_test, seed):
    from sklearn.linear_model import RidgeCV

    m = RidgeCV(alphas=(0.01, 0.1, 1.0, 10.0, 100.0)).fit(x_train, y_train)
    return m.predict(x_test)


def main(argv=None) -> int:
    p = parser(__doc__, "get")
    p.add_argument("--test-chroms", default="chr1,chr8,chr17")
    p.add_argument("--leiden", type=int, default=3, help="ATAC Leiden clusters crossed with the condition")
    p.add_argument("--min-cells", type=int, default=50)
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--finetune-steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--objective", choices=("poisson", "log1p_mse"), default="poisson",
                   help="GET fine-tuning loss (Poisson on CPM as in Fu 2025, or squared error of log1p CPM)")
    p.add_argument("--gene-body", action="store_true", help="add the in-gene-body region feature to GET")
    args, data_dir = parse(p, argv, threads=1)
    if data_dir is None:
        return 2
    logging.basicConfig(level=logging.WARNING)
    import anndata as ad
    import numpy as np
    import pandas as pd
    import torch

    import atacformer as af
    from atacformer.io import read_genes
    from atacformer.tools._get import get_data, get_finetune, get_predict, get_pretrain

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    src = data_dir / "scicar2018_a549_multiome"
    rna = ad.read_h5ad(src / "scicar_a549_rna.h5ad")
    atac = ad.read_h5ad(src / "scicar_a549_atac.h5ad")
    genes = read_genes(data_dir / "genome_annotations" / "hg19" / "hg19_genes.archr.bed.gz")

    # pseudo-bulks: condition x ATAC Leiden cluster
    af.tl.lsi(atac, n_components=30, seed=args.seed)
    af.tl.cluster(atac, "X_lsi", n_clusters=args.leiden, key_added="leiden", seed=args.seed)
    atac.obs["group"] = atac.obs["dex_hours"].astype(str) + "h_c" + atac.obs["leiden"].astype(str)
    data = get_data(atac, rna, genes, groupby="group", min_cells=args.min_cells, gene_body=args.gene_body)
    test = data.genes["chrom"].isin(args.test_chroms.split(",")).to_numpy()
    train = ~test
    obs_log = np.log1p(data.expression)  # (groups, genes)
    print(f"{len(data.groups)} pseudo-bulks ({', '.join(f'{g}:{n}' for g, n in zip(data.groups, data.n_cells))}); "
          f"{len(data.genes)} genes ({int(test.sum())} held out on {args.test_chroms}); skipped {data.skipped}; "
          f"{len(data.regions):,} window regions, {data.genes['n_regions'].mean():.1f} per window")

    rows = []
    # GET
    common = dict(batch_size=args.batch_size, progress=False, tensorboard=False, overwrite=True, seed=args.seed,
                  save_every=10**9)
    t = time.perf_counter()
    pre = get_pretrain(data, out / "pretrain", genes=train, max_steps=args.pretrain_steps, lr=1e-3,
                       warmup_steps=max(1, args.pretrain_steps // 10), **common)
    t_pre = time.perf_counter() - t
    t = time.perf_counter()
    get_finetune(data, out / "pretrain" / "model", out / "finetune", genes=train, lora_rank=args.lora_rank,
                 objective=args.objective, max_steps=args.finetune_steps, lr=2e-3,
                 warmup_steps=max(1, args.finetune_steps // 10), **common)
    t_ft = time.perf_counter() - t
    pred = get_predict(out / "finetune" / "model", data, genes=test).to_numpy()
    how = f"LoRA rank {args.lora_rank}" if args.lora_rank else "all weights"
    feats_used = "accessibility + gene body" if args.gene_body else "accessibility"
    rows.append({**_scores(f"GET ({feats_used}; {args.objective}, {how})", np.log1p(pred), obs_log[:, test]),
                 "train_s": t_pre + t_ft})
    curve = pd.read_csv(out / "finetune" / "metrics.csv")["loss"].to_numpy()
    tenth = max(1, len(curve) // 10)
    fit_pred = np.log1p(get_predict(out / "finetune" / "model", data, genes=train).to_numpy())
    fit_r = float(np.corrcoef(fit_pred.ravel(), obs_log[:, train].ravel())[0, 1])
    print(f"GET pretrain: {args.pretrain_steps} steps, {t_pre:.0f}s, masked MSE {pre['final_loss']:.3f}; "
          f"fine-tune: {args.finetune_steps} steps, {t_ft:.0f}s, {args.objective} loss first/middle/last tenth "
          f"{curve[:tenth].mean():.3f} / {curve[len(curve) // 2 - tenth // 2:][:tenth].mean():.3f} / "
          f"{curve[-tenth:].mean():.3f}; log1p Pearson on its training genes {fit_r:.3f}")

    # baseline 1: ridge on gene activity of the same cells
    t = time.perf_counter()
    ga = af.pp.gene_activity(atac, genes[genes["gene_name"].isin(data.genes["gene_name"])]
                             .drop_duplicates("gene_name"))
    from atacformer.tools._get import _cpm, pseudobulk

    sums, names, _ = pseudobulk(ga.X, atac.obs["group"].to_numpy())
    ga_log = pd.DataFrame(np.log1p(_cpm(sums)), index=names, columns=ga.var_names)
    x = ga_log.loc[data.groups, data.genes["gene_name"]].to_numpy()  # (groups, genes)
    y_hat = _ridge(x[:, train].reshape(-1, 1), obs_log[:, train].reshape(-1), x[:, test].reshape(-1, 1), args.seed)
    rows.append({**_scores("ridge on gene activity", y_hat.reshape(len(data.groups), -1), obs_log[:, test]),
                 "train_s": time.perf_counter() - t})

    # baseline 2: ridge on the window's summed accessibility and the TSS region's
    t = time.perf_counter()
    cpm = np.expm1(data.accessibility)  # (groups, regions)
    idx = data.window_index
    w = np.where(idx >= 0, cpm[:, np.where(idx >= 0, idx, 0)], 0.0)  # (groups, genes, N)
    at_tss = np.where((idx >= 0) & (data.window_distance == 0), cpm[:, np.where(idx >= 0, idx, 0)], 0.0)
    feats = np.stack([np.log1p(w.sum(-1)), np.log1p(at_tss.sum(-1))], axis=-1)  # (groups, genes, 2)
    y_hat = _ridge(feats[:, train].reshape(-1, 2), obs_log[:, train].reshape(-1), feats[:, test].reshape(-1, 2),
                   args.seed)
    rows.append({**_scores("ridge on window + TSS accessibility", y_hat.reshape(len(data.groups), -1),
                           obs_log[:, test]), "train_s": time.perf_counter() - t})

    # baseline 3: the same ridge given the gene's extent too (log gene length, log1p of the gene-body
    # regions in its window): what GET's gene-body feature tells it, for a linear model
    t = time.perf_counter()
    ann = genes.drop_duplicates("gene_name").set_index("gene_name").loc[data.genes["gene_name"]]
    glen = np.log10((ann["end"] - ann["start"]).to_numpy(np.float64) + 1)
    safe = np.where(idx >= 0, idx, 0)
    n_body = ((idx >= 0) & (data.regions["end"].to_numpy()[safe] > ann["start"].to_numpy()[:, None])
              & (data.regions["start"].to_numpy()[safe] < ann["end"].to_numpy()[:, None])).sum(1)
    ext = np.broadcast_to(np.stack([glen, np.log1p(n_body)], axis=-1), (len(data.groups), len(glen), 2))
    full = np.concatenate([x[..., None], feats, ext], axis=-1)  # (groups, genes, 5)
    y_hat = _ridge(full[:, train].reshape(-1, 5), obs_log[:, train].reshape(-1), full[:, test].reshape(-1, 5),
                   args.seed)
    rows.append({**_scores("ridge on gene activity + window/TSS accessibility + gene length + gene-body regions",
                           y_hat.reshape(len(data.groups), -1), obs_log[:, test]), "train_s": time.perf_counter() - t})

    table = pd.DataFrame(rows)
    table["n_test_genes"] = int(test.sum())
    table["n_groups"] = len(data.groups)
    table.to_csv(out / "get.csv", index=False)
    text = table.to_markdown(index=False, floatfmt=".3f")
    (out / "get.md").write_text(text + "\n")
    print(f"\n{text}\n{time.perf_counter() - t0:.0f}s in all; wrote {out / 'get.csv'} and {out / 'get.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

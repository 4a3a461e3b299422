"""Does the multimodal model's joint embedding cluster paired cells as well as RNA PCA?

On two paired RNA + ATAC sets (NeurIPS 2021 BMMC multiome, 500 cells x 600 genes, 21 cell
types; sci-CAR A549, 2,641 cells x 1,185 genes, dexamethasone 0/1/3 h), the script trains
:class:`~atacformer.models.MultimodalForMaskedValues` for a few minutes on CPU (a step budget
with a time cap; RNA-only, ATAC-only and paired batches from
:class:`~atacformer.train.collate_multimodal.MultimodalBatcher`), then scores through the
package's one protocol (:func:`atacformer.metrics.evaluate_embedding`: Leiden and k-means at
the true k, kNN label transfer), on the same cells:

- the joint embedding (mean of the RNA and ATAC cell embeddings), the model's RNA-only and
  ATAC-only embeddings, and the joint embedding of the untrained model (a control);
- RNA PCA (scanpy ``normalize_total``, ``log1p``, ``pca`` 30) and gene-activity PCA (same
  steps); PCA of the RNA value-bin ids the model reads (what the binned input keeps).

ATAC as gene activity: ``atacformer.pp.gene_activity`` is not in this tree yet, so the script
computes a PLACEHOLDER, to be swapped for ``pp.gene_activity`` when it lands
(:func:`placeholder_gene_activity`):

- sci-CAR (hg19): each gene's score = the summed counts of the peaks overlapping +-10 kb
  around its TSS (ArchR hg19 gene BED, matched by symbol; TSS = start on +, end - 1 on -);
- NeurIPS (hg38): there is no hg38 gene BED with symbols, but the RNA genes carry Ensembl ids
  and the GENCODE hg38 TSS BED has them. The 600 peaks of this set are a random genome-wide
  subset, so +-10 kb windows catch almost none (the count is printed); each peak instead goes
  to the nearest TSS among the RNA genes on its chromosome. The data's README reports its ATAC
  at chance for cell types: this set tests the plumbing more than the biology.

The training loop here is a plain torch loop: the package's trainer does not yet read paired
gene matrices (that hookup is being built); swap it for :func:`atacformer.train.pretrain` then.

Usage::

    python benchmarks/bench_multimodal.py [--out benchmarks/out/multimodal] [--steps 1500] [--minutes 6]
        [--datasets NeurIPS500,sciCAR] [--threads 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
WINDOW = 10_000


# -- data ------------------------------------------------------------------------------------------
def _peaks(atac) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = atac.var
    return v["chrom"].astype(str).to_numpy(), v["start"].to_numpy(np.int64), v["end"].to_numpy(np.int64)


def window_assignment(peaks, gene_chrom, gene_tss, window: int = WINDOW) -> sp.csr_matrix:
    """(n_peaks, n_genes) 0/1: peak overlaps ``[tss - window, tss + window)`` (genes with an
    unknown TSS (NaN) get none)."""
    from atacformer._core import IntervalIndex

    chrom, start, end = peaks
    rows, cols = [], []
    for c in np.unique(chrom):
        on = np.flatnonzero(chrom == c)
        genes = np.flatnonzero((gene_chrom == c) & np.isfinite(gene_tss))
        if not len(genes):
            continue
        t = gene_tss[genes].astype(np.int64)
        q, r = IntervalIndex(start[on], end[on]).query(np.maximum(t - window, 0), t + window)
        rows.append(on[r])
        cols.append(genes[q])
    rows, cols = (np.concatenate(rows), np.concatenate(cols)) if rows else (np.empty(0, int),) * 2
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(chrom), len(gene_chrom)))


def nearest_assignment(peaks, gene_chrom, gene_tss) -> sp.csr_matrix:
    """(n_peaks, n_genes) 0/1: each peak to the gene whose TSS is nearest its midpoint, among
    the genes on its chromosome."""
    chrom, start, end = peaks
    mid = (start + end) // 2
    rows, cols = [], []
    for p in range(len(chrom)):
        genes = np.flatnonzero((gene_chrom == chrom[p]) & np.isfinite(gene_tss))
        if len(genes):
            rows.append(p)
            cols.append(genes[np.argmin(np.abs(gene_tss[genes] - mid[p]))])
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(chrom), len(gene_chrom)))


def placeholder_gene_activity(name: str, rna, atac, data: Path) -> tuple[sp.csr_matrix, str]:
    """PLACEHOLDER for ``atacformer.pp.gene_activity`` (see the module docstring): cells x RNA
    genes ATAC scores, and a line saying how they were made."""
    peaks = _peaks(atac)
    x = sp.csr_matrix(atac.X, dtype=np.float64)
    if name == "sciCAR":
        genes = pd.read_csv(data / "genome_annotations" / "hg19" / "hg19_genes.archr.bed.gz", sep="\t",
                            header=None, names=["chrom", "start", "end", "symbol", "entrez", "strand"])
        genes["tss"] = np.where(genes["strand"] == "-", genes["end"] - 1, genes["start"])
        g = genes.drop_duplicates("symbol").set_index("symbol").reindex(rna.var["gene_symbol"].astype(str))
        a = window_assignment(peaks, g["chrom"].astype(str).to_numpy(), g["tss"].to_numpy(float))
        how = f"peaks within +-{WINDOW // 1000} kb of the TSS (hg19 ArchR genes by symbol)"
    else:
        tss = pd.read_csv(data / "genome_annotations" / "hg38" / "hg38_gencode_tss_unique.bed.gz", sep="\t",
                          header=None, usecols=[0, 1, 3], names=["chrom", "tss", "id"])
        tss = tss.assign(id=tss["id"].str.split(".").str[0]).drop_duplicates("id").set_index("id")
        g = tss.reindex(rna.var["gene_ids"].astype(str).to_numpy())
        gc, gt = g["chrom"].astype(str).to_numpy(), g["tss"].to_numpy(float)
        in_window = window_assignment(peaks, gc, gt)
        a = nearest_assignment(peaks, gc, gt)
        how = (f"each peak to the nearest RNA gene's TSS (hg38 GENCODE by Ensembl id); +-10 kb windows "
               f"would catch {in_window.nnz} peak-gene pairs over {int((in_window.sum(0) > 0).sum())} genes")
    ga = sp.csr_matrix(x @ a)
    ga.eliminate_zeros()
    return ga, how


def load_pair(name: str, data: Path):
    import anndata as ad

    files = {"NeurIPS500": ("neurips2021_bmmc_multiome_500", "bmmc_multiome_500_rna.h5ad", "bmmc_multiome_500_atac.h5ad"),
             "sciCAR": ("scicar2018_a549_multiome", "scicar_a549_rna.h5ad", "scicar_a549_atac.h5ad")}
    folder, r, a = files[name]
    rna, atac = ad.read_h5ad(data / folder / r), ad.read_h5ad(data / folder / a)
    if not (rna.obs_names == atac.obs_names).all():
        raise ValueError(f"{name}: RNA and ATAC cells differ")
    ga, how = placeholder_gene_activity(name, rna, atac, data)
    return sp.csr_matrix(rna.X, dtype=np.float64), ga, rna, how


# -- baselines -------------------------------------------------------------------------------------
def pca_embedding(counts, n_comps: int = 30, seed: int = 0) -> np.ndarray:
    """scanpy normalize_total, log1p, pca(30)."""
    import anndata as ad
    import scanpy as sc

    a = ad.AnnData(sp.csr_matrix(counts, dtype=np.float32))
    a = a[:, np.asarray((a.X != 0).sum(0)).ravel() > 0].copy()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    sc.pp.pca(a, n_comps=min(n_comps, min(a.shape) - 1), random_state=seed)
    return a.obsm["X_pca"]


def bin_pca(counts, bins, seed: int = 0) -> np.ndarray:
    """PCA (30) of the bin ids the model reads (0 .. n_bins per gene): what the binned input
    keeps of the cells' structure, without a model."""
    from sklearn.decomposition import PCA

    from atacformer.models import bin_values

    ids = bin_values(counts, bins)[0].toarray().astype(np.float32)
    return PCA(30, random_state=seed).fit_transform(ids)


# -- training --------------------------------------------------------------------------------------
def train(model, batcher, rna, ga, steps: int, minutes: float, seed: int, batch_size: int, lr: float,
          say) -> list:
    """Plain loop (see the module docstring): a random micro-batch of cells per step, for
    ``steps`` steps or until ``minutes`` are spent; returns (step, mean loss) every 25 steps."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    n, log, step, t0 = rna.shape[0], [], 0, time.time()
    model.train()
    recent = []
    while step < steps and time.time() - t0 < 60 * minutes:
        cells = rng.choice(n, min(batch_size, n), replace=False)
        batch, _ = batcher(None, rng, {"rna": rna[cells], "gene_activity": ga[cells]})
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent.append(loss.item())
        step += 1
        if step % 25 == 0:
            log.append((step, float(np.mean(recent))))
            say(f"  step {step}: loss {np.mean(recent):.3f} ({time.time() - t0:.0f} s)")
            recent = []
    return log


def run_dataset(name: str, data: Path, args, say) -> pd.DataFrame:
    import anndata as ad
    import torch

    from atacformer.metrics import evaluate_embedding
    from atacformer.models import MultimodalConfig, MultimodalForMaskedValues, embed_multimodal
    from atacformer.train.collate_multimodal import MultimodalBatcher

    rna, ga, adata, how = load_pair(name, data)
    say(f"## {name}: {rna.shape[0]} cells x {rna.shape[1]} genes; gene activity: {how}")
    say(f"  non-zero genes per cell: RNA median {np.median(np.diff(rna.indptr)):.0f}, "
        f"ATAC gene activity median {np.median(np.diff(ga.indptr)):.0f} "
        f"({int((np.diff(ga.indptr) == 0).sum())} cells with none)")
    torch.manual_seed(args.seed)
    cfg = MultimodalConfig(n_genes=rna.shape[1], gene_names=[str(g) for g in adata.var_names],
                           hidden_size=args.hidden, num_layers=args.layers, num_heads=4,
                           intermediate_size=2 * args.hidden, max_genes=args.max_genes, dropout=args.dropout,
                           mask_ratio=args.mask_ratio, value_decoder=args.value_decoder,
                           imputation_weight=args.imputation_weight, profile_weight=args.profile_weight,
                           pooling=args.pooling,
                           ).with_value_bins(rna=rna, atac=ga)
    model = MultimodalForMaskedValues(cfg)
    embs = {"multimodal joint (untrained)": embed_multimodal(model, rna, ga)}
    t0 = time.time()
    log = train(model, MultimodalBatcher(cfg), rna, ga, args.steps, args.minutes, args.seed, args.batch_size,
                args.lr, say)
    say(f"  trained {log[-1][0] if log else '<25'} steps in {(time.time() - t0) / 60:.1f} min")
    embs["multimodal joint"] = embed_multimodal(model, rna, ga)
    embs["multimodal RNA only"] = embed_multimodal(model, rna, None, which="rna")
    embs["multimodal ATAC only"] = embed_multimodal(model, None, ga, which="atac")
    embs["RNA PCA 30"] = pca_embedding(rna, seed=args.seed)
    embs["RNA value-bin PCA 30"] = bin_pca(rna, cfg.value_bins("rna"), args.seed)
    embs["gene-activity PCA 30"] = pca_embedding(ga, seed=args.seed)
    rows = []
    for method, emb in embs.items():
        view = ad.AnnData(obs=pd.DataFrame({"cell_type": adata.obs["cell_type"].astype(str).to_numpy()},
                                           index=adata.obs_names))
        view.obsm["X"] = emb
        rows.append({"dataset": name, "method": method, **evaluate_embedding(view, "X", "cell_type", seed=args.seed)})
    table = pd.DataFrame(rows)
    table.attrs["log"] = log
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(REPO / ".." / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "multimodal"))
    p.add_argument("--datasets", default="NeurIPS500,sciCAR")
    p.add_argument("--steps", type=int, default=1500, help="training steps per dataset")
    p.add_argument("--minutes", type=float, default=6.0, help="training time cap per dataset")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--max-genes", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.0,
                   help="encoder dropout (0: on CPU, SDPA's attention dropout costs ~5x the step)")
    p.add_argument("--mask-ratio", type=float, default=0.15)
    p.add_argument("--value-decoder", default="token", choices=["token", "cell"])
    p.add_argument("--imputation-weight", type=float, default=1.0)
    p.add_argument("--profile-weight", type=float, default=0.0)
    p.add_argument("--pooling", default="mean", choices=["mean", "cls"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    data = Path(args.data_dir)
    if not data.is_dir():
        print(f"real data folder {data} is absent (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    say = lambda m: print(m, flush=True)  # noqa: E731
    tables, logs = [], {}
    for name in [d for d in args.datasets.split(",") if d]:
        t = run_dataset(name, data, args, say)
        logs[name] = t.attrs.pop("log")
        tables.append(t)
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(out / "scores.csv", index=False)
    (out / "training_log.json").write_text(json.dumps({"args": vars(args), "loss": logs}, indent=2))
    cols = ["dataset", "method", "leiden_ari", "leiden_nmi", "kmeans_ari", "kmeans_nmi", "transfer_acc", "transfer_f1"]
    print("\n" + table[cols].to_markdown(index=False, floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

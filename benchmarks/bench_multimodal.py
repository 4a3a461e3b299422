"""Does the multimodal model's joint embedding cluster paired cells as well as RNA PCA?

On the two paired RNA + ATAC sets of ``../shared/data`` (NeurIPS 2021 BMMC multiome, 500
cells x 600 genes / 600 peaks, 21 cell types; sci-CAR A549, 2,641 cells x 1,185 genes /
52,761 peaks, dexamethasone 0/1/3 h), as loaded by
:func:`atacformer.evaluation.rna.load_rna_pairs` (genes: ArchR's hg19 genes for sci-CAR,
GENCODE hg38 TSSs named by the RNA's symbols for NeurIPS), the script trains
:class:`~atacformer.models.MultimodalForMaskedValues` by the package's one training loop
(``TrainConfig(objective="multimodal")``: RNA counts and the ATAC cells' gene activity,
:func:`atacformer.preprocessing.gene_activity`, over the genes both have; RNA-only,
ATAC-only and paired batches drawn alternately; no label), then scores on the same cells
through the package's one protocol (:func:`atacformer.metrics.evaluate_embedding`: Leiden
and k-means at the true k, kNN label transfer):

- the joint embedding (mean of the RNA and ATAC cell embeddings), the RNA-only and ATAC-only
  embeddings, and the joint embedding of the untrained model (``max_steps=0``, a control);
- RNA PCA (scanpy ``normalize_total``, ``log1p``, ``pca`` 30) and gene-activity PCA (the same
  steps) over the same genes.

Usage::

    python benchmarks/bench_multimodal.py [--minutes 3] [--datasets neurips,scicar] [--threads 1]
        [--out benchmarks/out/multimodal]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from _common import parse, parser


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


def genes_file(pair, out: Path) -> str:
    """The pair's gene annotation as a path (a table is written as a genes BED)."""
    if isinstance(pair.genes, (str, Path)):
        return str(pair.genes)
    path = out / f"{pair.name}_genes.bed"
    g = pair.genes
    pd.DataFrame({"chrom": g["chrom"], "start": g["start"], "end": g["end"], "name": g["gene_name"],
                  "id": g["gene_id"], "strand": g["strand"]}).to_csv(path, sep="\t", header=False, index=False)
    return str(path)


def run_dataset(pair, args, out: Path, say) -> pd.DataFrame:
    import anndata as ad

    from atacformer.metrics import evaluate_embedding
    from atacformer.models import embed_multimodal, load_model
    from atacformer.preprocessing import gene_activity
    from atacformer.train import TrainConfig, pretrain

    genes = genes_file(pair, out)
    models = {}
    for tag, kw in (("untrained", dict(max_steps=0)), ("trained", dict(time_budget=args.minutes))):
        cfg = TrainConfig(out=str(out / pair.name / tag), objective="multimodal", genes=genes, genome=pair.genome,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed, overwrite=True, progress=False,
                          tensorboard=False, **kw)
        s = pretrain(cfg, data=pair.atac, rna=pair.rna)
        say(f"  {pair.name} {tag}: {s['steps']} steps, final loss {s['final_loss']}")
        models[tag] = load_model(s["model_dir"])
    names = models["trained"].config.gene_names
    ga = gene_activity(pair.atac, genes, genome=pair.genome)
    rna = sp.csr_matrix(pair.rna[:, names].X, dtype=np.float64)
    act = sp.csr_matrix(ga[:, names].X, dtype=np.float64)
    m = models["trained"]
    embs = {"multimodal joint (untrained)": embed_multimodal(models["untrained"], rna, act),
            "multimodal joint": embed_multimodal(m, rna, act),
            "multimodal RNA only": embed_multimodal(m, rna, None, which="rna"),
            "multimodal ATAC only": embed_multimodal(m, None, act, which="atac"),
            "RNA PCA 30": pca_embedding(rna, seed=args.seed),
            "gene-activity PCA 30": pca_embedding(act, seed=args.seed)}
    rows = []
    labels = pair.rna.obs["cell_type"].astype(str).to_numpy()
    for method, emb in embs.items():
        view = ad.AnnData(obs=pd.DataFrame({"cell_type": labels}, index=pair.rna.obs_names))
        view.obsm["X"] = np.asarray(emb)
        rows.append({"dataset": pair.name, "method": method, "genes": len(names),
                     **evaluate_embedding(view, "X", "cell_type", seed=args.seed)})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    p = parser(__doc__, "multimodal")
    p.add_argument("--datasets", default="neurips,scicar")
    p.add_argument("--minutes", type=float, default=3.0, help="training time budget per dataset")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    args, data = parse(p, argv, threads=1)
    if data is None:
        return 2
    import torch

    from atacformer.evaluation.rna import load_rna_pairs

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    say = lambda m: print(m, flush=True)  # noqa: E731
    pairs = load_rna_pairs(data)
    table = pd.concat([run_dataset(pairs[n], args, out, say) for n in args.datasets.split(",") if n],
                      ignore_index=True)
    tmp = out / ".scores.csv.tmp"
    table.to_csv(tmp, index=False)
    tmp.replace(out / "scores.csv")
    cols = ["dataset", "method", "genes", "leiden_ari", "leiden_nmi", "kmeans_ari", "transfer_acc", "transfer_f1"]
    print("\n" + table[cols].to_markdown(index=False, floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

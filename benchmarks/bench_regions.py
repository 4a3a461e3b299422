"""Region-level biology on a real peak matrix: the TSS distribution score of an atacformer
model's region vectors (pretrained, initialised from the data, and randomly initialised),
each with its shuffled-label control, and the inferred cryptic TSS calls.

Data: a labelled hg19 peak matrix from ../shared/data (default: Buenrostro 2018 bone marrow,
533 cells x 35,983 peaks); regions annotated by the GENCODE v33 (lift37) chr22 GTF, so the
score is over the chr22 peaks (the only chromosome the data folder annotates). Cryptic-TSS
calls are tested against 500 accessibility-matched random draws of the CpG observed /
expected ratio of each region's sequence (a promoter hallmark independent of the gene
annotation), where the hg19 chr22 FASTA (16.05-22 Mb) covers the region.

Usage::

    python benchmarks/bench_regions.py [--dataset bm0828] [--steps 200] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
SETS = {"bm0828": DATA / "buenrostro2018_BM0828_ra3" / "buenrostro2018_BM0828_533cells.h5ad",
        "scicar": DATA / "scicar2018_a549_multiome" / "scicar_a549_atac.h5ad"}
GTF = DATA / "gencode_v33_chr22_gtf" / "gencode.v33lift37.basic.annotation.chr22.hg19.gtf.gz"
FASTA = DATA / "hg19_chr22_1-22Mb_fasta" / "hg19_chr22_1-22000000.fa.gz"


def cpg_ratio(var) -> np.ndarray:
    """CpG observed / expected of each region's sequence (NaN outside the FASTA)."""
    from atacformer.vocab.dna import _open_fasta

    fa = _open_fasta(FASTA)
    name = fa.keys()[0]
    n = fa.length(name)
    out = np.full(len(var), np.nan)
    for i, (c, s, e) in enumerate(zip(var["chrom"], var["start"], var["end"])):
        if c != "chr22" or e > n:
            continue
        seq = fa.fetch(name, int(s), int(e)).decode().upper()
        cg, c_, g_ = seq.count("CG"), seq.count("C"), seq.count("G")
        if seq.count("N") < len(seq) // 2 and c_ and g_:
            out[i] = cg * len(seq) / (c_ * g_)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=sorted(SETS), default="bm0828")
    ap.add_argument("--steps", type=int, default=200, help="pretraining steps (default 200)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    a = ap.parse_args()
    import pandas as pd

    from atacformer import pl, tl
    from atacformer.models import load_model
    from atacformer.tokenizers import peak_vocabulary, tokenize_peak_matrix
    from atacformer.train import TrainConfig, pretrain

    out = Path(a.out) / "regions"
    out.mkdir(parents=True, exist_ok=True)
    path = SETS[a.dataset]
    adata = tokenize_peak_matrix(path, peak_vocabulary(path)).to_anndata()
    tl.annotate_regions(adata, gtf=GTF)
    on22 = adata.var["chrom"].to_numpy() == "chr22"
    print(f"{a.dataset}: {adata.n_vars:,} regions, {int(on22.sum())} on chr22; classes:",
          adata.var.loc[on22, "region_class"].value_counts().to_dict())
    adata.var["cpg_oe"] = cpg_ratio(adata.var)
    rows = []
    models = {}
    for steps in (0, a.steps):
        t = time.perf_counter()
        cfg = TrainConfig(out=str(out / f"{a.dataset}-{steps}"), max_steps=steps, progress=False, tensorboard=False,
                          overwrite=True)
        models[f"pretrained {steps} steps" if steps else "initialised from the data (0 steps)"] = (
            load_model(pretrain(cfg, data=adata)["model_dir"]), time.perf_counter() - t)
    base = next(iter(models.values()))[0]
    models["randomly initialised"] = (type(base)(base.config), 0.0)
    runs = [(name, model, secs, "static") for name, (model, secs) in models.items()]
    runs.append((f"pretrained {a.steps} steps, contextual (mean over cells)", models[f"pretrained {a.steps} steps"][0],
                 models[f"pretrained {a.steps} steps"][1], "contextual"))
    for name, model, secs, kind in runs:
        if kind == "static":
            tl.region_embeddings(model, adata)
            rep = "atacformer_regions"
        else:
            tl.contextual_region_vectors(model, adata, max_cells=None)
            rep = "atacformer_regions_contextual"
        r = tl.tss_score(adata, rep, n_shuffles=200)
        c = tl.cryptic_tss(adata, rep, signal="cpg_oe")
        rows.append({"model": name, "train_s": secs, "tss_score": r["score"], "shuffled_mean": r["shuffled_mean"],
                     "shuffled_sd": r["shuffled_sd"], "regions": r["n_regions"], "icTSS": len(c["calls"]),
                     "icTSS_with_cpg": int(np.isfinite(adata.var["cpg_oe"].to_numpy()[c["calls"]]).sum()),
                     "cpg_fold": c.get("fold", np.nan), "cpg_p": c.get("p", np.nan)})
        print(rows[-1], flush=True)
        if name != "randomly initialised":
            tag = name.split()[0] + ("_contextual" if kind == "contextual" else "")
            pl.tss_score(adata, save=out / f"{a.dataset}_{tag}_tss_score.png")
            if "null" in c:
                pl.cryptic_tss(adata, save=out / f"{a.dataset}_{tag}_cryptic_tss.png")
    text = pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f")
    print(text)
    (out / f"{a.dataset}_regions.md").write_text(text + "\n")


if __name__ == "__main__":
    main()

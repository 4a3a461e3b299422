"""ATAC-aware DNA ranking (LeRoy 2025 ch. 3): does a DNA ranker trained on chr22 spans order
the three windows of held-out spans by accessibility better than GC content and chance?

Spans are three adjacent 500 bp windows of hg19 chr22 (the stored FASTA holds
chr22:1-22,000,000, real sequence from 16.05 Mb); a window's accessibility is the mean over
the four hg19 labelled sets (Buenrostro 2018 BM0828, Schep 2017 cell lines, chromVAR
GM12878/H1, Granja 2019 BMMC D6T1) of the fraction of cells with a read in each peak,
split by overlap (:mod:`atacformer.tools._dna_ranker`). Training spans end before
``--test-start`` (default 20.5 Mb), held-out spans start after it: no base is shared.
The ranker trains through ``pretrain(TrainConfig(model="dna-ranker"), task=...)``; the GC
baseline ranks windows by their G+C fraction; random scores give 1/6 of full orders in
expectation. Spans overlap (the thesis' reference shift), so the 95 % intervals resample
100 kb blocks of the held-out stretch, not spans (``minus_gc``: the paired difference from
the GC baseline's full-order accuracy on the same resampled spans).

One run per seed (300 steps of 64 spans, 2 shared CPU cores, 25-32 minutes): 987 spans
(2,961 windows) from 117 + 17 + 77 + 35 peaks; 686 train, 301 held-out (10 blocks). Held-out
full order right / pairwise / Kendall tau: random 0.167 / 0.500 / 0.000, GC fraction 0.289
[0.211, 0.350] / 0.650 / 0.299, ranker seed 0 0.382 [0.284, 0.471] / 0.702 / 0.404 (minus GC
[0.050, 0.147]), seed 1 0.369 [0.282, 0.440] / 0.694 / 0.389 (minus GC [0.004, 0.145]); on its
own training spans 0.53 (seed 0) and 0.60 (seed 1).

Usage::

    python benchmarks/bench_dna_ranker.py [--out benchmarks/out/dna_ranker] [--steps 300]
        [--seeds 0] [--test-start 20500000] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETS = {"Buenrostro2018_BM0828": "buenrostro2018_BM0828_ra3/buenrostro2018_BM0828_533cells.h5ad",
        "Schep2017_600": "schep2017_celllines_atacCoGAPS/schep2017_celllines_600.h5ad",
        "chromVAR_GM12878_H1": "chromvar_example_gm12878_h1/chromvar_gm12878_h1_50.h5ad",
        "Granja2019_D6T1": "granja2019_bmmc_donor_D6T1/granja2019_bmmc_D6T1_10kpeaks.h5ad"}
FASTA = "hg19_chr22_1-22Mb_fasta/hg19_chr22_1-22000000.fa.gz"


def _block_ci(scores, acc, blocks, rng, baseline=None, n_boot=1000):
    """95 % interval of full-order accuracy (minus that of ``baseline`` scores on the same
    spans, when given) resampling genomic blocks."""
    import numpy as np

    from atacformer.tools._dna_ranker import ranking_metrics

    ids = np.unique(blocks)
    per = {b: np.flatnonzero(blocks == b) for b in ids}
    vals = []
    for _ in range(n_boot):
        idx = np.concatenate([per[b] for b in rng.choice(ids, size=len(ids), replace=True)])
        v = ranking_metrics(scores[idx], acc[idx])["full_order"]
        if baseline is not None:
            v -= ranking_metrics(baseline[idx], acc[idx])["full_order"]
        vals.append(v)
    return np.percentile(vals, [2.5, 97.5])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(REPO / ".." / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "dna_ranker"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--test-start", type=int, default=20_500_000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    data = Path(args.data_dir)
    if not (data / FASTA).is_file():
        print(f"real data {data / FASTA} is absent (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    import numpy as np
    import pandas as pd
    import torch

    from atacformer.tools._dna_ranker import (
        build_spans, gc_fraction, peak_accessibility, predict_scores, ranking_metrics, train_dna_ranker,
    )

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    peaks = {name: peak_accessibility(data / rel) for name, rel in SETS.items()}
    fa_len = 22_000_000
    for name, t in peaks.items():
        n = int(((t["chrom"] == "chr22") & (t["end"] <= fa_len)).sum())
        print(f"{name}: {len(t):,} peaks, {n} on chr22 within the FASTA", flush=True)
    spans = build_spans(list(peaks.values()), data / FASTA, chroms=["chr22"])
    train, test = spans.split(args.test_start, chrom="chr22")
    print(f"spans: {len(spans)} ({3 * len(spans)} regions); train {len(train)} (< {args.test_start:,}), "
          f"held-out {len(test)} (>= {args.test_start:,}); dropped across the cut "
          f"{len(spans) - len(train) - len(test)}", flush=True)

    rng = np.random.default_rng(0)
    blocks = test.table["start"].to_numpy() // 100_000
    rows = []

    gc = gc_fraction(test.codes)

    def add(method, scores, on="held-out", seconds=np.nan):
        m = ranking_metrics(scores, test.accessibility if on == "held-out" else train.accessibility)
        held = on == "held-out"
        lo, hi = _block_ci(scores, test.accessibility, blocks, rng) if held else (np.nan, np.nan)
        dlo, dhi = _block_ci(scores, test.accessibility, blocks, rng, baseline=gc) if held else (np.nan, np.nan)
        rows.append({"method": method, "spans": on, **m, "full_order_ci_low": lo, "full_order_ci_high": hi,
                     "minus_gc_ci_low": dlo, "minus_gc_ci_high": dhi, "train_s": seconds})
        print(f"{method:28s} {on:9s} full order {m['full_order']:.3f} [{lo:.3f}, {hi:.3f}]  pairwise "
              f"{m['pairwise']:.3f}  tau {m['kendall_tau']:.3f}  minus GC [{dlo:.3f}, {dhi:.3f}]", flush=True)

    add("random (expected)", np.zeros_like(test.accessibility))
    add("random scores (seed 0)", np.random.default_rng(0).random(test.accessibility.shape))
    add("GC fraction", gc)
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        t = time.perf_counter()
        model = train_dna_ranker(train, out / "runs" / f"seed{seed}", max_steps=args.steps, batch_size=args.batch_size,
                                 lr=args.lr, seed=seed, overwrite=True)
        secs = time.perf_counter() - t
        add(f"DNA ranker (seed {seed})", predict_scores(model, test.codes), seconds=secs)
        add(f"DNA ranker (seed {seed})", predict_scores(model, train.codes), on="train")
    table = pd.DataFrame(rows)
    table.to_csv(out / "dna_ranker.csv", index=False)
    head = (f"hg19 chr22 16.05-22 Mb, 4 hg19 sets pooled: {len(spans)} spans x 3 windows of 500 bp; "
            f"train {len(train)} spans (< {args.test_start:,}), held-out {len(test)} spans "
            f"(>= {args.test_start:,}, {len(np.unique(blocks))} blocks of 100 kb); {args.steps} steps of "
            f"{args.batch_size} spans\n\n")
    text = head + table.to_markdown(index=False, floatfmt=".3f")
    (out / "dna_ranker.md").write_text(text + "\n")
    print(f"\n{text}\n{time.perf_counter() - t0:.0f}s in all; wrote {out / 'dna_ranker.csv'} and "
          f"{out / 'dna_ranker.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

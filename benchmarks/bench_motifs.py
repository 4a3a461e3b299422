"""Motif scanning of every vocabulary region of the real hg19 chr22 span: ours vs memelite's
FIMO vs Bio.motifs.

Regions: 5 kb bins of ``Vocabulary.from_bins("hg19", 5000)`` inside chr22:16.05-22 Mb (the
real sequence of ``../shared/data/hg19_chr22_1-22Mb_fasta``; 1,190 bins, 5.95 Mb). Motifs: all
JASPAR2024 CORE vertebrates (pyjaspar, offline), pseudocounts as JASPAR's
``calculate_pseudocounts``, uniform background, p < 1e-4, both strands.

* ours: :func:`atacformer.vocab.dna.scan_motifs` (max score and hit count of every
  region x motif; thresholds: Bio.motifs' exact discretised distribution, and the kernel's
  5-mer score tables, built once per motif set: both timed separately, and the ratio is also
  given with the tables counted in every call; branch and bound over the tables).
* memelite ``fimo(..., return_counts=True)`` on the same one-hot regions and the same
  pseudocounted PWMs (its own ``eps`` and p-value tables; it counts hits, no max score).
* Bio.motifs: ``pssm.calculate`` on both strands of every region (max and count), on a
  subset of motifs, extrapolated linearly to all motifs (said so in the output); its
  thresholds (``distribution().threshold_fpr``, pure Python) likewise.

Ours and memelite run ``--repeat`` times in alternation (numba kernels compiled before
timing); the best of each is compared, and every round's ratio is printed too.

Usage: python benchmarks/bench_motifs.py [--bio-motifs 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data").resolve()
FASTA = DATA / "hg19_chr22_1-22Mb_fasta" / "hg19_chr22_1-22000000.fa.gz"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bio-motifs", type=int, default=20, help="motifs scanned with Bio.motifs (extrapolated)")
    ap.add_argument("--bin", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs of ours and memelite; best of each")
    args = ap.parse_args(argv)
    if not FASTA.exists():
        print(f"skip: {FASTA} is absent (see ../shared/data/README.md)")
        return 0
    import numba
    from Bio.motifs import jaspar as bj

    from atacformer.vocab import Vocabulary
    from atacformer.vocab import dna

    print(f"numba threads: {numba.get_num_threads()}")
    v = Vocabulary.from_bins("hg19", args.bin, chroms=["chr22"])
    keep = (v.starts >= 16_050_000) & (v.ends <= 22_000_000)
    starts, ends = v.starts[keep], v.ends[keep]
    fa = dna._open_fasta(FASTA)
    t = time.perf_counter()
    lo, hi = int(starts.min()), int(ends.max())
    codes = dna.encode_bases(fa.fetch("chr22", lo, hi))
    s, e = starts - lo, ends - lo
    print(f"regions: {len(s):,} x {args.bin} bp bins, {hi - lo:,} bp read in {time.perf_counter() - t:.2f} s")

    mots = dna.load_jaspar("JASPAR2024")
    t = time.perf_counter()
    ms = dna.MotifSet.from_bio(mots, pvalue=1e-4)
    t_thr = time.perf_counter() - t
    mean_len = np.mean([len(p) for p in ms.pssms])
    print(f"motifs: {len(ms)} JASPAR2024 CORE vertebrates, mean length {mean_len:.1f}; "
          f"our thresholds (exact Bio.motifs distribution, compiled) {t_thr:.2f} s (incl. compile if not cached)")

    # --- ours: the kernel's tables, built once per motif set (timed apart, as the thresholds);
    # then compile on a tiny input
    t = time.perf_counter()
    ms.scan_tables()
    t_tab = time.perf_counter() - t
    print(f"our scan tables (block scores and their order; once per motif set): {t_tab:.2f} s")
    dna.scan_motifs(codes[:200], [0], [200], ms)

    # --- memelite FIMO on the same regions (one-hot, N = all-zero column) and PWMs
    from memelite import fimo

    onehot = np.zeros((len(s), 4, args.bin), dtype=np.int8)
    for i, (a, b) in enumerate(zip(s, e)):
        c = codes[a:b]
        ok = c < 4
        onehot[i, c[ok], np.flatnonzero(ok)] = 1
    pwms = {mid: (np.exp2(p) * 0.25).T.copy() for mid, p in zip(ms.ids, ms.pssms)}
    fimo({k: pwms[k] for k in list(pwms)[:2]}, onehot[:2], threshold=1e-4, return_counts=True)  # compile
    lens = np.array([len(p) for p in ms.pssms])
    n_win = 2 * int(np.maximum((e - s)[:, None] - lens[None, :] + 1, 0).sum())
    runs_ours, runs_fimo = [], []
    for r in range(args.repeat):
        t = time.perf_counter()
        mx, cnt = dna.scan_motifs(codes, s, e, ms)
        runs_ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        fc = np.asarray(fimo(pwms, onehot, threshold=1e-4, return_counts=True))
        runs_fimo.append(time.perf_counter() - t)
        print(f"round {r + 1}: ours {runs_ours[-1]:.2f} s, memelite {runs_fimo[-1]:.2f} s, memelite / ours "
              f"{runs_fimo[-1] / runs_ours[-1]:.2f}x", flush=True)
    t_ours, t_fimo = min(runs_ours), min(runs_fimo)
    print(f"ours: {t_ours:.2f} s best of {args.repeat} (max + count, {len(ms)} motifs), "
          f"{t_ours / n_win * 1e9:.2f} ns per window-strand; hits {int(cnt.sum()):,}")
    print(f"memelite fimo: {t_fimo:.2f} s best of {args.repeat} (hit counts only, {len(pwms)} motifs); hits "
          f"{int(fc.sum()):,} (its own thresholds: bin 0.1, eps 1e-4; array shape {fc.shape})")

    # --- Bio.motifs on a subset, extrapolated
    rng = np.random.default_rng(0)
    sub = np.sort(rng.choice(len(mots), min(args.bio_motifs, len(mots)), replace=False))
    seqs = [fa.fetch("chr22", int(a), int(b)).decode() for a, b in zip(starts, ends)]
    t_bio = t_bio_thr = 0.0
    agree = True
    for j in sub:
        m = mots[j]
        t0 = time.perf_counter()
        pssm = m.counts.normalize(pseudocounts=bj.calculate_pseudocounts(m)).log_odds()
        thr = pssm.distribution(precision=1000).threshold_fpr(1e-4)
        t1 = time.perf_counter()
        rc = pssm.reverse_complement()
        bm = np.empty(len(seqs), dtype=np.float32)
        bc = np.empty(len(seqs), dtype=np.int64)
        for r, q in enumerate(seqs):
            f, b = pssm.calculate(q), rc.calculate(q)
            both = np.concatenate([f, b])
            bm[r] = np.nanmax(both) if np.isfinite(both).any() else np.nan
            bc[r] = (f >= thr).sum() + (b >= thr).sum()
        t2 = time.perf_counter()
        t_bio_thr += t1 - t0
        t_bio += t2 - t1
        agree &= bool(np.array_equal(bm, mx[:, j], equal_nan=True) and np.array_equal(bc, cnt[:, j]))
    f = len(mots) / len(sub)
    print(f"Bio.motifs: scan {t_bio:.2f} s for {len(sub)} motifs -> {t_bio * f:.1f} s extrapolated to {len(mots)}; "
          f"thresholds {t_bio_thr:.2f} s -> {t_bio_thr * f:.1f} s extrapolated; ours equal to Bio on the subset: {agree}")
    print(f"ratio (scan, tables built once): memelite / ours = {t_fimo / t_ours:.2f}x; counting our tables "
          f"in every call: {t_fimo / (t_ours + t_tab):.2f}x")
    print(f"ratio (scan): memelite / ours = {t_fimo / t_ours:.2f}x, Bio (extrapolated) / ours = "
          f"{t_bio * f / t_ours:.1f}x; thresholds Bio / ours = {t_bio_thr * f / t_thr:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

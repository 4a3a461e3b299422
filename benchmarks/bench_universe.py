"""Consensus universes: atacformer vs geniml, speed, memory and agreement on one collection.

Collection: the five real hg38 region sets in ``bulk_peaks_encode_roadmap_hg38`` (ENCODE ATAC
narrowPeaks, Roadmap DNase promoter DHSs, the ENCODE cell-type DHS subsample; 225,070 regions,
genome-wide), cut at chromosome ends (one ENCODE peak overhangs chr19), unplaced contigs
dropped.

Each measurement runs in a fresh process (so its peak RSS is its own), on the same coverage
tracks: atacformer builds them from the BED files and writes ``all_{start,core,end}.bw``;
geniml's universe builders read those bigWigs (geniml has no coverage builder of its own: it
reads tracks written by the separate ``uniwig`` tool).

- ``read``: reading the five files (``atacformer.io.read_bed``), the floor for coverage.
- ``coverage``: reading the files and building the three run-length tracks (these two: the
  best of 3 fresh processes).
- ``cc`` (at cutoff 2: geniml's default cutoff is below 1 on this collection, and its writer
  then loops in Python over every covered base), ``ccf``, ``lh`` (geniml: its likelihood model
  plus ``ml_universe``) and ``hmm``: the method alone, from tracks already in memory (ours) or
  from the bigWigs (geniml, which reads each chromosome densely).

Agreement: base-level Jaccard and the number of identical regions between the two universes.

``--assess``: instead, every method on a collection (``bulk``: the five sets above;
``bm0828``: the Buenrostro 2018 bone-marrow peak matrix's per-cell-type pseudo-bulk peak sets,
hg19) and each universe assessed against it (mean precision / recall / F10 and RBS over the
files, and the universe likelihood).

Usage::

    python benchmarks/bench_universe.py [--chroms chr1,chr2] [--methods cc,ccf,lh,hmm] [--out benchmarks/out]
    python benchmarks/bench_universe.py --assess bm0828
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data" / "bulk_peaks_encode_roadmap_hg38"
FILES = ["test_ataqc_full_chr_ppr.naive_overlap.filt.narrowPeak.gz",
         "reg2map_honeybadger2_dnase_prom_p2.hg19_to_hg38.bed.gz",
         "hg38_celltype_compare_subsample.bed.gz",
         "test_ataqc_full_chr_ppr.IDR0.05.filt.narrowPeak.gz",
         "ppr.overlap.bfilt.narrowPeak.gz"]


def _rss_mb(key: str) -> float:
    line = [ln for ln in open("/proc/self/status") if ln.startswith(key)][0]
    return int(line.split()[1]) / 1024


def _genome(chroms):
    from atacformer.genome import Genome, get_genome

    hg = get_genome("hg38")
    if not chroms:
        return hg
    return Genome("hg38-" + "-".join(chroms), {c: hg.chrom_sizes[c] for c in chroms})


def _frames(g):
    from atacformer.io.bed import read_bed

    return [read_bed(DATA / f) for f in FILES]


def _tracks(g):
    from atacformer.vocab.universe import CoverageTracks

    frames = [f[f["chrom"].isin(g.chroms)] for f in _frames(g)]
    return CoverageTracks.from_regions(frames, g, clip=True, names=FILES, progress=False)


def child(tool: str, method: str, chroms: list[str], work: Path) -> dict:
    g = _genome(chroms)
    res = {}
    if tool == "atacformer":
        from atacformer.vocab.universe import methods as M

        if method in ("read", "coverage"):
            base = _rss_mb("VmRSS")
            t = time.perf_counter()
            if method == "read":
                frames = _frames(g)
                res["regions"] = sum(len(f) for f in frames)
            else:
                cov = _tracks(g)
                res["runs"] = sum(len(cov.track(k, c).pos) for k in ("start", "core", "end") for c in cov.chroms)
            res["work_s"] = time.perf_counter() - t
        else:
            cov = _tracks(g)
            if method in ("ccf", "lh", "hmm"):  # a first run loads the compiled kernels (numba's cache)
                M.build(cov, method, progress=False)
            base = _rss_mb("VmRSS")
            t = time.perf_counter()
            u = M.build(cov, method, cutoff=2 if method == "cc" else None, progress=False)
            res["work_s"] = time.perf_counter() - t
            u.write(work / f"atacformer_{method}.bed", overwrite=True)
            res["regions"] = len(u)
    else:
        from geniml.likelihood.build_model import main as build_model
        from geniml.universe.cc_universe import cc_universe
        from geniml.universe.ccf_universe import ccf_universe
        from geniml.universe.hmm_universe import hmm_universe
        from geniml.universe.ml_universe import ml_universe

        out = work / f"geniml_{method}.bed"
        if out.exists():
            out.unlink()
        base = _rss_mb("VmRSS")
        t = time.perf_counter()
        cov = str(work / "coverage")
        if method == "cc":
            cc_universe(cov, str(out), cutoff=2)
        elif method == "ccf":
            ccf_universe(cov, str(out))
        elif method == "lh":
            model = work / "geniml_model.tar"
            if model.exists():
                model.unlink()
            build_model(str(model), cov, "all", file_no=len(FILES))
            ml_universe(str(model), cov, "all", str(out))
        elif method == "hmm":
            hmm_universe(cov, str(out))
        res["work_s"] = time.perf_counter() - t
        res["regions"] = sum(1 for _ in open(out)) if out.exists() else 0
    res["peak_rss_mb"] = _rss_mb("VmHWM")
    res["rise_mb"] = res["peak_rss_mb"] - base
    return res


def measure(tool, method, chroms, work):
    cmd = [sys.executable, __file__, "--child", tool, method, ",".join(chroms), str(work)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def agreement(a: Path, b: Path) -> dict:
    """Base-level Jaccard and identical regions of two universe BEDs."""
    import numpy as np
    import pandas as pd

    from atacformer.vocab.universe.coverage import merge_intervals

    A = pd.read_csv(a, sep="\t", header=None, usecols=[0, 1, 2])
    B = pd.read_csv(b, sep="\t", header=None, usecols=[0, 1, 2])
    inter = union = 0
    for c in sorted(set(A[0]) | set(B[0])):
        x, y = A[A[0] == c], B[B[0] == c]
        sx, ex = merge_intervals(x[1].to_numpy(), x[2].to_numpy())
        sy, ey = merge_intervals(y[1].to_numpy(), y[2].to_numpy())
        s, e = merge_intervals(np.concatenate([sx, sy]), np.concatenate([ex, ey]))
        union += int((e - s).sum())
        # intersection = |x| + |y| - |x u y| (each side merged)
        inter += int((ex - sx).sum() + (ey - sy).sum() - (e - s).sum())
    same = len(pd.merge(A, B, on=[0, 1, 2]))
    return {"jaccard": inter / union if union else 1.0, "identical_regions": same}


def assess_methods(collection: str, work: Path) -> str:
    import pandas as pd

    from atacformer.vocab.universe import CoverageTracks, build
    from atacformer.vocab.universe.assess import assess, summary

    if collection == "bulk":
        files, genome = [str(DATA / f) for f in FILES], "hg38"
    else:
        from atacformer.vocab.universe.cells import cluster_peak_sets

        bm = DATA.parent / "buenrostro2018_BM0828_ra3" / "buenrostro2018_BM0828_533cells.h5ad"
        peaks = cluster_peak_sets(bm, work / "bm0828_peaks", genome="hg19", groupby="cell_type", overwrite=True,
                                  progress=False)
        files, genome = [str(p) for p in peaks.values()], "hg19"
    cov = CoverageTracks.from_beds(files, genome=genome, clip=True, progress=False)
    rows = []
    for method in ("union", "intersection", "cc", "ccf", "lh", "hmm"):
        t = time.perf_counter()
        u = build(cov, method, progress=False)
        t_build = time.perf_counter() - t
        if not len(u):
            rows.append({"method": method, "regions": 0, "Mbp": 0.0, "build_s": t_build})
            continue
        table = assess(u, files, coverage=cov, genome=genome, clip=True, progress=False)
        s = summary(table)
        rows.append({"method": method, "regions": len(u), "Mbp": u.widths().sum() / 1e6, "build_s": t_build,
                     "precision": s["precision"], "recall": s["recall"], "f10": s["f10"], "rbs": s["rbs"],
                     "log10_likelihood": f"{s['likelihood']:,.0f}" if "likelihood" in s else ""})
        print(rows[-1], flush=True)
    return f"{collection}: {cov.n_files} region sets\n\n" + pd.DataFrame(rows).to_markdown(index=False,
                                                                                        floatfmt=".4g")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    ap.add_argument("--chroms", default="", help="comma-separated chromosomes (default: the whole genome)")
    ap.add_argument("--methods", default="cc,ccf,lh,hmm")
    ap.add_argument("--assess", choices=["bulk", "bm0828"], help="assess every method on this collection")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.assess:
        work = Path(a.out) / "universe"
        work.mkdir(parents=True, exist_ok=True)
        text = assess_methods(a.assess, work)
        print(text)
        (Path(a.out) / f"bench_universe_assess_{a.assess}.md").write_text(text + "\n")
        return
    if a.child:
        tool, method, chroms, work = a.child
        print(json.dumps(child(tool, method, [c for c in chroms.split(",") if c], Path(work))))
        return
    chroms = [c for c in a.chroms.split(",") if c]
    work = Path(a.out) / "universe"
    work.mkdir(parents=True, exist_ok=True)
    _tracks(_genome(chroms)).write_bigwig(work / "coverage")
    import pandas as pd

    rows = []
    for method in ("read", "coverage"):  # short: best of 3 fresh processes
        r = min((measure("atacformer", method, chroms, work) for _ in range(3)), key=lambda x: x["work_s"])
        rows.append({"step": method, "tool": "atacformer", **r})
        print(rows[-1], flush=True)
    for method in a.methods.split(","):
        ours = measure("atacformer", method, chroms, work)
        theirs = measure("geniml", method, chroms, work)
        agree = agreement(work / f"atacformer_{method}.bed", work / f"geniml_{method}.bed")
        rows.append({"step": method, "tool": "atacformer", **ours, **agree,
                     "speedup_vs_geniml": theirs["work_s"] / ours["work_s"]})
        rows.append({"step": method, "tool": "geniml", **theirs})
        print(rows[-2], rows[-1], flush=True)
    table = pd.DataFrame(rows)
    text = table.to_markdown(index=False, floatfmt=".3g")
    print(text)
    read_s = table[(table["step"] == "read")]["work_s"].iloc[0]
    cov_s = table[(table["step"] == "coverage")]["work_s"].iloc[0]
    print(f"\ncoverage / reading the files: {cov_s / read_s:.2f}x")
    (Path(a.out) / "bench_universe.md").write_text(text + f"\n\ncoverage / read: {cov_s / read_s:.2f}x\n")


if __name__ == "__main__":
    main()

"""Many fragments files into one corpus: wall time with 1 and 2 workers, against serial appends.

A many-file set is made from the muon PBMC multiome fragments (hg38): file ``i`` is its first
``--lines`` fragments with every barcode suffixed ``-s{i}`` and every fragment shifted by a
random 0-50 bp (so the files differ), under a temporary folder, never in the repository.
Each configuration runs in a fresh Python process (so a pool's start-up is counted, as a user
pays it) and writes a new corpus of 5 kb bins:

* ``serial append``: ``tokenize_paths`` then ``Corpus.append`` per file, what ``atacformer
  tokenize`` did before (the peer of this question);
* ``tokenize_to_corpus workers=1``: the same work in this process through the parallel path;
* ``tokenize_to_corpus workers=N``: a local pool of N processes;
* ``dask LocalCluster N``: the Dask engine on a local cluster of N single-threaded workers
  (cluster start-up excluded, as with a cluster that is already running), when Dask
  distributed is installed.

Every corpus is checked cell for cell against the serial one. Times are the best of
``--repeats`` rounds, each round running every configuration once (so that all see similar
load): on a shared machine the best run is the least disturbed one.

Measured on a quiet 2-core machine (best of 2 rounds; every corpus equal to the serial one
cell for cell), 40 files x 367,439 fragments: serial append 11.8 s; ``tokenize_to_corpus``
workers=1 12.1 s, workers=2 7.9 s (1.53x); Dask LocalCluster 1 worker 15.5 s, 2 workers
12.1 s (1.28x). 16 files: 6.1, 6.3, 4.9, 7.6 and 5.7 s. Creating the corpus (saving a
617,665-region vocabulary) and starting a pool are fixed costs of about a second, so the
speed-up grows with the number of files. Under heavy load from other jobs (load average 4-6)
rounds of one configuration differed by up to 50% and no speed-up was resolved.

Usage::

    python benchmarks/bench_parallel_tokenize.py [--files 16] [--lines 150000] [--workers 1,2]
        [--repeats 3] [--out benchmarks/out/parallel_tokenize]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUON = Path("muon_pbmc_multiome_fragments_hg38") / "test_rna_atac_fragments.tsv.gz"

# One configuration, run in a child process; prints {"seconds": ...} as its last line.
CHILD = r"""
import json, sys, time
def main():
    cfg = json.loads(sys.argv[1])
    from atacformer.corpus import Corpus, tokenize_to_corpus
    from atacformer.tokenizers import tokenize_paths
    from atacformer.vocab import Vocabulary
    vocab = Vocabulary.from_bins("hg38", 5000)
    client = cluster = None
    if cfg["engine"] == "dask":
        from distributed import Client, LocalCluster
        cluster = LocalCluster(n_workers=cfg["workers"], threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
        client.run(lambda: __import__("atacformer.corpus._pool_warmup"))  # a running cluster is warm
    t = time.perf_counter()
    if cfg["engine"] == "serial":
        corpus = Corpus.create(cfg["out"], vocab)
        for name, cells in tokenize_paths(cfg["files"], vocab, genome="hg38"):
            corpus.append(cells.X, obs=cells.obs, dataset=name)
    else:
        tokenize_to_corpus(cfg["files"], cfg["out"], vocab, workers=cfg["workers"], scheduler=client,
                           genome="hg38", progress=False)
    seconds = time.perf_counter() - t
    if client is not None:
        client.close(); cluster.close()
    print(json.dumps({"seconds": seconds}))
if __name__ == "__main__":
    main()
"""


def make_files(src: Path, folder: Path, n: int, lines: int, seed: int = 0) -> list[Path]:
    """``n`` fragments files from ``src``: barcodes suffixed per file, positions jittered."""
    import numpy as np
    import pandas as pd

    df = pd.read_csv(src, sep="\t", header=None, comment="#", nrows=lines, usecols=range(5),
                     names=["chrom", "start", "end", "barcode", "count"])
    rng = np.random.default_rng(seed)
    print(f"{len(df):,} fragments per file", flush=True)
    files = []
    for i in range(n):
        shift = rng.integers(0, 51, len(df))
        part = df.assign(start=df["start"] + shift, end=df["end"] + shift, barcode=df["barcode"] + f"-s{i}")
        path = folder / f"sample{i:02d}.tsv.gz"
        with gzip.open(path, "wt", compresslevel=1) as f:
            part.sort_values(["chrom", "start"], kind="stable").to_csv(f, sep="\t", header=False, index=False)
        files.append(path)
    return files


def run_child(cfg: dict) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{cfg['label']} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])["seconds"]


def same_corpus(a: Path, b: Path) -> bool:
    import numpy as np

    from atacformer.corpus import Corpus

    ca, cb = Corpus.open(a), Corpus.open(b)
    if ca.datasets != cb.datasets or len(ca) != len(cb):
        return False
    Xa, Xb = ca.get_rows(np.arange(len(ca))), cb.get_rows(np.arange(len(cb)))
    return (Xa != Xb).nnz == 0 and ca.obs.equals(cb.obs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(REPO / ".." / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "parallel_tokenize"))
    p.add_argument("--files", type=int, default=16, help="number of fragments files (default 16)")
    p.add_argument("--lines", type=int, default=150_000, help="fragments per file (default 150,000)")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each configuration; the best is kept")
    p.add_argument("--no-dask", action="store_true", help="skip the Dask LocalCluster rows")
    p.add_argument("--tmp", default=None, help="folder for the generated files (default: a temporary one)")
    args = p.parse_args(argv)
    src = Path(args.data_dir) / MUON
    if not src.exists():
        print(f"real data {src} is absent (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO / "src"))
    import pandas as pd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-parallel-", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        files = make_files(src, tmp, args.files, args.lines)
        size = sum(f.stat().st_size for f in files)
        lines = sum(1 for _ in gzip.open(files[0], "rt"))
        print(f"{len(files)} files of {lines:,} fragments ({size / 1e6:.1f} MB gzip) made in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        configs = [{"label": "serial append", "engine": "serial", "workers": 1}]
        for w in (int(x) for x in args.workers.split(",") if x):
            configs.append({"label": f"tokenize_to_corpus workers={w}", "engine": "pool", "workers": w})
        if not args.no_dask:
            try:
                import distributed  # noqa: F401

                for w in (int(x) for x in args.workers.split(",") if x):
                    configs.append({"label": f"dask LocalCluster {w}", "engine": "dask", "workers": w})
            except ImportError:
                print("Dask distributed is not installed: no Dask rows", flush=True)
        times = {cfg["label"]: [] for cfg in configs}
        for r in range(args.repeats):  # round robin: each round sees every configuration under similar load
            for cfg in configs:
                corpus = tmp / f"corpus-{cfg['engine']}-{cfg['workers']}"
                shutil.rmtree(corpus, ignore_errors=True)
                times[cfg["label"]].append(run_child({**cfg, "files": [str(f) for f in files], "out": str(corpus)}))
                print(f"round {r + 1}: {cfg['label']}: {times[cfg['label']][-1]:.1f} s "
                      f"(load average {os.getloadavg()[0]:.1f})", flush=True)
        rows = [{"configuration": cfg["label"], "workers": cfg["workers"], "best_s": min(times[cfg["label"]]),
                 "runs_s": " ".join(f"{t:.1f}" for t in times[cfg["label"]])} for cfg in configs]
        serial = tmp / "corpus-serial-1"
        for row, cfg in zip(rows, configs):
            row["same_cells_as_serial"] = same_corpus(tmp / f"corpus-{cfg['engine']}-{cfg['workers']}", serial)
        table = pd.DataFrame(rows)
        table["speedup_vs_serial"] = (table["best_s"].iloc[0] / table["best_s"]).round(2)
        table["best_s"] = table["best_s"].round(1)
        text = (f"{len(files)} files x {lines:,} fragments, 5 kb bins of hg38, best of {args.repeats} "
                f"on {os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.1f} at the end)\n\n"
                + table.to_markdown(index=False) + "\n")
        table.to_csv(out / "parallel_tokenize.csv", index=False)
        (out / "parallel_tokenize.md").write_text(text)
        print(f"\n{text}\nwrote {out / 'parallel_tokenize.csv'} and {out / 'parallel_tokenize.md'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

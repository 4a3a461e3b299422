"""The main job: tokenize -> pretrain (self-supervised) -> embed -> cluster -> metrics + UMAP.

``atacformer demo`` runs it. With ``../shared/data`` present it uses real public data
(ArchR PBSmall fragments with B/Mono/T labels, tokenized into hg19 5 kb bins, and the
Buenrostro 2018 bone-marrow peak matrix in its own peaks); without it, it says so and runs
on a clearly labelled SYNTHETIC dataset the package generates. ``--input`` runs it on the
user's own fragments file or ``.h5ad`` instead. Labels are read only to score the clusters:
pretraining never sees them. Every dataset gets an LSI baseline clustered the same way.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from atacformer.datasets import shared_data_dir, synthetic_fragments
from atacformer.tokenizers import TokenizedCells, peak_vocabulary, tokenize_fragments, tokenize_peak_matrix
from atacformer.vocab import Vocabulary

log = logging.getLogger(__name__)

#: the recipe the main job pretrains with (see atacformer.train.RECIPES)
MAIN_RECIPE = "profile"
#: the time budget of each dataset's pretraining (minutes): the main job stays a few minutes on 2 cores
MAIN_TIME_BUDGET = 1.5


def _say(msg: str) -> None:
    print(msg, flush=True)


def compact(cells: TokenizedCells) -> TokenizedCells:
    """Keep only the regions open in at least one cell (a smaller vocabulary to train on)."""
    v = cells.vocab
    keep = np.flatnonzero(np.diff(cells.X.tocsc().indptr) > 0)
    vocab = Vocabulary(v.chroms[keep], v.starts[keep], v.ends[keep])
    return TokenizedCells(X=cells.X[:, keep].tocsr(), barcodes=cells.barcodes, vocab=vocab, obs=cells.obs)


def load_user_input(path, labels_key=None, genome="hg38", bin_size=5000):
    """Tokenize a user's fragments file (genome bins, compacted) or peak matrix (own peaks).

    ``labels_key``: for an ``.h5ad``, an ``obs`` column; for fragments, a TSV of
    ``barcode<TAB>label``. Returns ``(name, cells, label_key or None)``.
    """
    path = Path(path)
    name = path.name.split(".")[0]
    low = path.name.lower()
    if low.endswith((".h5ad", ".h5")) or path.is_dir():
        cells = tokenize_peak_matrix(path, peak_vocabulary(path))
        if labels_key is not None and labels_key not in cells.obs:
            raise ValueError(f"{path}: obs has no column {labels_key!r} (columns: {list(cells.obs.columns)})")
        return name, cells, labels_key
    cells = compact(tokenize_fragments(path, Vocabulary.from_bins(genome, bin_size), min_fragments=1))
    if labels_key is None:
        return name, cells, None
    table = pd.read_csv(labels_key, sep="\t", header=None, index_col=0, comment="#")
    cells.obs["label"] = table.iloc[:, 0].reindex(cells.barcodes).to_numpy()
    return name, cells, "label"


def load_inputs(data_dir, out: Path, bin_size: int = 5000) -> list[tuple[str, TokenizedCells, str]]:
    """Tokenize the main job's inputs; returns ``(name, cells, label_key)`` triples."""
    jobs = []
    if data_dir is not None:
        d = Path(data_dir)
        frag = d / "archr_pbsmall_fragments_labeled" / "PBSmall.tsv.gz"
        labels = pd.read_csv(d / "archr_pbsmall_fragments_labeled" / "cell_labels.tsv", sep="\t", index_col=0)
        t = time.perf_counter()
        cells = compact(tokenize_fragments(frag, Vocabulary.from_bins("hg19", bin_size), barcodes=list(labels.index)))
        cells.obs["cell_type"] = labels.loc[cells.barcodes, "cell_type"].to_numpy()
        _say(f"[real] {frag.name}: fragments -> {bin_size} bp bins in {time.perf_counter() - t:.2f}s -> "
             f"{json.dumps(cells.summary())}")
        jobs.append(("archr_pbsmall", cells, "cell_type"))
        mat = d / "buenrostro2018_BM0828_ra3" / "buenrostro2018_BM0828_533cells.h5ad"
        t = time.perf_counter()
        cells = tokenize_peak_matrix(mat, peak_vocabulary(mat))
        _say(f"[real] {mat.name}: peak matrix -> its own peaks as tokens in {time.perf_counter() - t:.2f}s -> "
             f"{json.dumps(cells.summary())}")
        jobs.append(("buenrostro2018_bm0828", cells, "cell_type"))
    else:
        path, labels = synthetic_fragments(out / "synthetic_fragments.tsv.gz")
        cells = compact(tokenize_fragments(path, Vocabulary.from_bins("hg38", bin_size, chroms=["chr1", "chr2", "chr3"])))
        cells.obs["cell_type"] = labels.loc[cells.barcodes, "cell_type"].to_numpy()
        _say(f"[SYNTHETIC] {path.name}: {json.dumps(cells.summary())}")
        jobs.append(("synthetic", cells, "cell_type"))
    return jobs


def analyse(name: str, cells: TokenizedCells, label_key, out: Path, steps: int | None = None) -> dict:
    """Pretrain, embed, cluster, score and plot one tokenized dataset; returns its report."""
    from atacformer import metrics
    from atacformer import plotting as pl
    from atacformer import tools as tl
    from atacformer.models import load_model
    from atacformer.train import TrainConfig, pretrain

    adata = cells.to_anndata()
    adata.write_h5ad(out / f"{name}.tokens.h5ad")
    _say(f"[{name}] pretraining (recipe {MAIN_RECIPE}, no labels; "
         + (f"{steps} steps)" if steps is not None else f"at most {MAIN_TIME_BUDGET} min)"))
    cfg = TrainConfig(out=str(out / f"{name}.run"), recipe=MAIN_RECIPE, max_steps=steps,
                      time_budget=MAIN_TIME_BUDGET, tensorboard=False, overwrite=True)
    summary = pretrain(cfg, data=cells)
    _say(f"[{name}]   {summary['steps']} steps, {summary['tokens_seen']:,} tokens in {summary['elapsed_s']:.0f}s, "
         f"final loss {summary['final_loss']}")
    model = load_model(summary["model_dir"])
    t = time.perf_counter()
    tl.embed(adata, model)
    _say(f"[{name}] embedded {adata.n_obs} cells in {time.perf_counter() - t:.1f}s -> obsm['X_atacformer']")
    tl.lsi(adata, n_components=min(30, min(adata.shape) - 2))
    rep = {"cells": adata.n_obs, "tokens": adata.n_vars, "pretrain": summary, "recipe": MAIN_RECIPE, "scores": {}}
    for use in ("X_atacformer", "X_lsi"):
        if label_key is not None:
            s = metrics.evaluate_embedding(adata, use, label_key)
            rep["scores"][use] = {k: round(float(v), 4) for k, v in s.items()}
            _say(f"[{name}] {use}: Leiden at the true k: ARI {s['leiden_ari']:.3f}, NMI {s['leiden_nmi']:.3f}; "
                 f"k-means ARI {s['kmeans_ari']:.3f}; label transfer {s['transfer_acc']:.3f}")
    k = None
    if label_key is not None:
        labels = adata.obs[label_key].astype(str)
        k = int(labels[labels != "nan"].nunique())
    tl.cluster(adata, "X_atacformer", "leiden", n_clusters=k, key_added="leiden_atacformer")
    tl.umap(adata, "X_atacformer")
    color = [c for c in (label_key, "leiden_atacformer") if c is not None]
    pl.umap(adata, color=color, path=out / f"{name}.umap.png")
    adata.write_h5ad(out / f"{name}.h5ad")
    rep.update(h5ad=str(out / f"{name}.h5ad"), umap=str(out / f"{name}.umap.png"), model=summary["model_dir"])
    return rep


def _markdown(report: dict) -> str:
    rows = [{"dataset": name, "cells": r["cells"], "tokens": r["tokens"],
             "pretrain_s": round(r["pretrain"]["elapsed_s"]), "embedding": use, **s}
            for name, r in report["datasets"].items() for use, s in r["scores"].items()]
    cols = ["dataset", "cells", "tokens", "pretrain_s", "embedding", "leiden_ari", "leiden_nmi", "kmeans_ari",
            "transfer_acc"]
    table = pd.DataFrame(rows, columns=cols)
    return (f"# atacformer main job ({report['data']} data)\n\nPretrained self-supervised (labels only score "
            "the clusters); scored by atacformer.metrics.evaluate_embedding (Leiden and k-means at the true "
            "number of labels, kNN label transfer).\n\n" + table.to_markdown(index=False, floatfmt=".3f") + "\n")


def run_main_job(out_dir="results", data_dir=None, bin_size: int = 5000, input_path=None, labels_key=None,
                 genome: str = "hg38", steps: int | None = None) -> dict:
    """Run the main job and write its outputs under ``out_dir``; returns the report dict.

    Parameters
    ----------
    out_dir
        Output folder: per dataset ``NAME.tokens.h5ad``, ``NAME.model/``, ``NAME.h5ad``
        (obsm ``X_atacformer`` and ``X_lsi``, Leiden clusters), ``NAME.umap.png``; and
        ``report.json`` / ``report.md``.
    data_dir
        Real data folder (default ``../shared/data``); absent -> synthetic data.
    bin_size
        Genome bin size for fragments inputs.
    input_path, labels_key, genome
        The user's own fragments file or peak matrix instead of the bundled data.
    steps
        Pretraining steps (default: the ``cpu`` preset's plan within :data:`MAIN_TIME_BUDGET`).

    Examples
    --------
    >>> report = run_main_job("results")   # doctest: +SKIP
    """
    out = Path(out_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run(out, data_dir, bin_size, input_path, labels_key, genome, steps)
    except BaseException:
        if created:  # a failed first run leaves no half-filled output folder behind
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise


def _run(out: Path, data_dir, bin_size, input_path, labels_key, genome, steps) -> dict:
    t0 = time.perf_counter()
    if input_path is not None:
        _say(f"Using your input {input_path}")
        jobs = [load_user_input(input_path, labels_key, genome, bin_size)]
        kind = "user"
    else:
        data_dir = data_dir if data_dir is not None else shared_data_dir()
        if data_dir is None:
            _say("No real data folder found (../shared/data or $ATACFORMER_DATA): running on a SYNTHETIC dataset "
                 "generated by atacformer.datasets.synthetic_fragments. Real public files can be fetched with "
                 "atacformer.datasets.fetch(name).")
        else:
            _say(f"Using real data from {data_dir}")
        jobs = load_inputs(data_dir, out, bin_size)
        kind = "real" if data_dir is not None else "SYNTHETIC"
    report = {"data": kind, "datasets": {}}
    for name, cells, key in jobs:
        report["datasets"][name] = analyse(name, cells, key, out, steps)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "report.md").write_text(_markdown(report))
    _say(f"done in {report['seconds']:.0f}s; report: {out / 'report.md'}")
    return report

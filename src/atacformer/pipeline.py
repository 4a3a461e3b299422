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
from atacformer.tokenizers import TokenizedCells, tokenize_fragments, tokenize_peak_matrix
from atacformer.vocab import Vocabulary

log = logging.getLogger(__name__)

#: the recipe the main job pretrains with (see atacformer.benchmark.RECIPES)
MAIN_RECIPE = "lsi-offset+contrastive"
#: its default step count: keeps the CPU main job to a few minutes on 2 cores
MAIN_STEPS = 80


def _say(msg: str) -> None:
    print(msg, flush=True)


def compact(cells: TokenizedCells) -> TokenizedCells:
    """Keep only the regions open in at least one cell (a smaller vocabulary to train on)."""
    v = cells.vocab
    keep = np.flatnonzero(np.diff(cells.X.tocsc().indptr) > 0)
    vocab = Vocabulary(v.chroms[keep], v.starts[keep], v.ends[keep])
    return TokenizedCells(X=cells.X[:, keep].tocsr(), barcodes=cells.barcodes, vocab=vocab, obs=cells.obs)


def own_peaks(path) -> Vocabulary:
    """The peaks of an ``.h5ad`` / 10x / MTX peak matrix as a vocabulary."""
    from atacformer.io.matrix import read_peak_matrix

    p = read_peak_matrix(path).peaks
    return Vocabulary(p["chrom"].astype(str).to_numpy(), p["start"].to_numpy(), p["end"].to_numpy())


def load_user_input(path, labels_key=None, genome="hg38", bin_size=5000):
    """Tokenize a user's fragments file (genome bins, compacted) or peak matrix (own peaks).

    ``labels_key``: for an ``.h5ad``, an ``obs`` column; for fragments, a TSV of
    ``barcode<TAB>label``. Returns ``(name, cells, label_key or None)``.
    """
    path = Path(path)
    name = path.name.split(".")[0]
    low = path.name.lower()
    if low.endswith((".h5ad", ".h5")) or path.is_dir():
        cells = tokenize_peak_matrix(path, own_peaks(path))
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
        cells = tokenize_peak_matrix(mat, own_peaks(mat))
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
    from atacformer.benchmark.recipes import RECIPES, embed_recipe, pretrain_cells

    recipe = RECIPES[MAIN_RECIPE].replace(steps=MAIN_STEPS if steps is None else steps)
    adata = cells.to_anndata()
    adata.write_h5ad(out / f"{name}.tokens.h5ad")
    _say(f"[{name}] pretraining ({recipe.name}: d {recipe.hidden_size}, {recipe.num_layers} layers, "
         f"{recipe.steps} steps of {recipe.batch_size} cells, no labels)")
    model, info = pretrain_cells(recipe, adata.X, cells.vocab,
                                 progress=lambda s, n, loss: _say(f"[{name}]   step {s}/{n}  loss {loss:.4f}"))
    model.save_pretrained(out / f"{name}.model")
    t = time.perf_counter()
    embed_recipe(adata, model, recipe)
    _say(f"[{name}] embedded {adata.n_obs} cells in {time.perf_counter() - t:.1f}s -> obsm['X_atacformer']")
    tl.lsi(adata, n_components=min(30, min(adata.shape) - 2))
    labels = None if label_key is None else adata.obs[label_key].astype(str).to_numpy()
    known = None if labels is None else labels != "nan"
    k = int(len(np.unique(labels[known]))) if labels is not None else None
    rep = {"cells": adata.n_obs, "tokens": adata.n_vars, "pretrain": info, "recipe": recipe.name, "scores": {}}
    for use in ("X_atacformer", "X_lsi"):
        key = f"leiden_{use[2:]}"
        if k is not None:
            tl.cluster(adata, use, "leiden", n_clusters=k, key_added=key)
            s = metrics.clustering_scores(labels[known], adata.obs[key].astype(str).to_numpy()[known])
            rep["scores"][use] = {m: round(float(s[m]), 4) for m in ("ari", "ami", "nmi", "homogeneity")}
            _say(f"[{name}] {use}: Leiden at k={k}: ARI {s['ari']:.3f}, NMI {s['nmi']:.3f}")
        else:
            tl.cluster(adata, use, "leiden", key_added=key)
    tl.umap(adata, "X_atacformer")
    color = [c for c in (label_key, "leiden_atacformer") if c is not None]
    pl.umap(adata, color=color, path=out / f"{name}.umap.png")
    adata.write_h5ad(out / f"{name}.h5ad")
    rep.update(h5ad=str(out / f"{name}.h5ad"), umap=str(out / f"{name}.umap.png"), model=str(out / f"{name}.model"))
    return rep


def _markdown(report: dict) -> str:
    lines = [f"# atacformer main job ({report['data']} data)", "",
             "Pretrained self-supervised (labels only score the clusters); Leiden at the true number of labels.",
             "", "| dataset | cells | tokens | pretrain s | embedding | ARI | AMI | NMI | homogeneity |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["datasets"].items():
        for use, s in r["scores"].items():
            lines.append(f"| {name} | {r['cells']} | {r['tokens']} | {r['pretrain']['seconds']:.0f} | {use} | "
                         f"{s['ari']:.3f} | {s['ami']:.3f} | {s['nmi']:.3f} | {s['homogeneity']:.3f} |")
    return "\n".join(lines) + "\n"


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
        Pretraining steps (default :data:`MAIN_STEPS`).

    Examples
    --------
    >>> report = run_main_job("results")   # doctest: +SKIP
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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

"""Embedding-quality benchmark: LSI, scEmbed, SnapATAC2 spectral and atacformer recipes,
side by side on the labelled sets of ``../shared/data``, in one process.

Every embedding is clustered the same way (Leiden with a resolution search to the true
number of labels, and k-means at that k) and scored against the labels (ARI, AMI, NMI,
homogeneity); kNN label transfer is measured on a fixed half/half split of each set. Labels
are read only for scoring: atacformer pretrains on the cells alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from atacformer.benchmark.recipes import RECIPES, Recipe, embed_recipe, pretrain_cells

logger = logging.getLogger(__name__)

#: name -> (folder, file) of the labelled hg19 sets in ``../shared/data``.
LABELLED_SETS = {
    "BM0828": ("buenrostro2018_BM0828_ra3", "buenrostro2018_BM0828_533cells.h5ad"),
    "Schep600": ("schep2017_celllines_atacCoGAPS", "schep2017_celllines_600.h5ad"),
    "chromVAR50": ("chromvar_example_gm12878_h1", "chromvar_gm12878_h1_50.h5ad"),
}
LABEL_KEY = "cell_type"


@dataclass
class BenchmarkConfig:
    """What :func:`run_benchmark` runs.

    Examples
    --------
    >>> BenchmarkConfig(recipes=["rtd-frequency"], steps=20).methods
    ('lsi', 'scembed', 'snapatac2', 'atacformer')
    """

    datasets: tuple[str, ...] = tuple(LABELLED_SETS)
    methods: tuple[str, ...] = ("lsi", "scembed", "snapatac2", "atacformer")
    recipes: list[str] = field(default_factory=lambda: [next(iter(RECIPES))])
    steps: int | None = None  # overrides every recipe's step count
    vocab: str = "peaks"  # "peaks": each set its own peaks; "bins": shared hg19 5 kb bins
    max_cells: int | None = None  # stratified subsample per set (CI scale)
    scembed_epochs: int = 20
    n_components: int = 30
    seed: int = 0
    umap: bool = True


def _subsample(adata: AnnData, n: int | None, seed: int) -> AnnData:
    if n is None or adata.n_obs <= n:
        return adata
    rng = np.random.default_rng(seed)
    labels = adata.obs[LABEL_KEY].astype(str).to_numpy()
    share = n / adata.n_obs
    keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: max(2, int(round(share * (labels == c).sum())))]
                           for c in np.unique(labels)])
    return adata[np.sort(keep)].copy()


def load_labelled_sets(data_dir, names=None, max_cells: int | None = None, seed: int = 0) -> dict[str, AnnData]:
    """The labelled sets as AnnData (counts in ``X``, labels in ``obs["cell_type"]``).

    Examples
    --------
    >>> sets = load_labelled_sets("../shared/data", ["Schep600"], max_cells=120)  # doctest: +SKIP
    """
    import anndata as ad

    out = {}
    for name in names or LABELLED_SETS:
        folder, file = LABELLED_SETS[name]
        a = ad.read_h5ad(Path(data_dir) / folder / file)
        a.obs[LABEL_KEY] = a.obs[LABEL_KEY].astype(str).astype("category")
        out[name] = _subsample(a, max_cells, seed)
    return out


def tokenize_sets(sets: dict[str, AnnData], vocab: str = "peaks") -> dict[str, tuple[AnnData, object]]:
    """Tokenize each set: into its own peaks (``"peaks"``) or shared hg19 5 kb bins."""
    from atacformer.tokenizers import tokenize_peak_matrix
    from atacformer.vocab import Vocabulary

    shared = Vocabulary.from_bins("hg19", 5000) if vocab == "bins" else None
    out = {}
    for name, a in sets.items():
        v = shared or Vocabulary(a.var["chrom"].astype(str).to_numpy(), a.var["start"].to_numpy(),
                                 a.var["end"].to_numpy())
        tok = tokenize_peak_matrix(a, v).to_anndata()
        tok.obs[LABEL_KEY] = a.obs[LABEL_KEY].to_numpy()
        out[name] = (tok, v)
    return out


def snapatac2_spectral(adata: AnnData, n_comps: int = 30, key_added: str = "X_spectral", seed: int = 0) -> None:
    """The peer: SnapATAC2 ``tl.spectral`` on all features of a counts matrix."""
    import snapatac2 as snap

    a = AnnData(adata.X.astype(np.float32), obs=pd.DataFrame(index=adata.obs_names))
    snap.tl.spectral(a, n_comps=n_comps, features=None, random_state=seed, num_threads=1)
    adata.obsm[key_added] = np.asarray(a.obsm["X_spectral"], dtype=np.float32)


def score_embedding(adata: AnnData, rep: str, seed: int = 0) -> dict:
    """Leiden at the true k, k-means at the true k, and half/half kNN label transfer."""
    from atacformer import metrics
    from atacformer import tools as tl

    labels = adata.obs[LABEL_KEY].astype(str).to_numpy()
    k = len(np.unique(labels))
    row = {}
    for method in ("leiden", "kmeans"):
        key = f"{method}_{rep}"
        tl.cluster(adata, rep, method, n_clusters=k, key_added=key, seed=seed)
        s = metrics.clustering_scores(labels, adata.obs[key].astype(str).to_numpy())
        for m in ("ari", "ami", "nmi", "homogeneity"):
            row[f"{method}_{m}"] = float(s[m] if m in s else s[m.upper()])
        row[f"{method}_k"] = int(adata.obs[key].nunique())
    rng = np.random.default_rng(seed)
    ref_mask = np.zeros(adata.n_obs, bool)
    for c in np.unique(labels):  # stratified half/half split
        idx = rng.permutation(np.flatnonzero(labels == c))
        ref_mask[idx[: (len(idx) + 1) // 2]] = True
    ref, query = adata[ref_mask].copy(), adata[~ref_mask].copy()
    tl.transfer_labels(ref, query, rep, LABEL_KEY, k=min(15, ref.n_obs))
    row["transfer_acc"] = float((query.obs[f"{LABEL_KEY}_transferred"].astype(str).to_numpy()
                                 == query.obs[LABEL_KEY].astype(str).to_numpy()).mean())
    return row


def _baselines(name, tok, cfg, say):
    from atacformer import tools as tl

    reps = {}
    for method in cfg.methods:
        t0 = time.perf_counter()
        if method == "lsi":
            tl.lsi(tok, n_components=min(cfg.n_components, min(tok.shape) - 2), seed=cfg.seed)
            reps["LSI"] = ("X_lsi", time.perf_counter() - t0)
        elif method == "scembed":
            tl.scembed(tok, epochs=cfg.scembed_epochs, seed=cfg.seed)
            reps["scEmbed"] = ("X_scembed", time.perf_counter() - t0)
        elif method == "snapatac2":
            try:
                snapatac2_spectral(tok, min(cfg.n_components, tok.n_obs - 2), seed=cfg.seed)
            except ImportError:
                say("snapatac2 is not installed: the peer is skipped")
                continue
            reps["SnapATAC2"] = ("X_spectral", time.perf_counter() - t0)
        else:
            continue
        say(f"  {name}: {list(reps)[-1]} in {time.perf_counter() - t0:.1f}s")
    return reps


def _atacformer(tokenized, cfg, say) -> dict[str, dict[str, tuple[str, float]]]:
    """Pretrain each recipe (per set, or once on all sets with shared bins) and embed."""
    import scipy.sparse as sp

    reps: dict[str, dict[str, tuple[str, float]]] = {n: {} for n in tokenized}
    for rname in cfg.recipes:
        recipe: Recipe = RECIPES[rname]
        if cfg.steps is not None and recipe.objective != "none":
            recipe = recipe.replace(steps=cfg.steps)
        recipe = recipe.replace(seed=cfg.seed)
        key = f"X_atacformer[{rname}]"

        def prog(step, n, loss, _r=rname):
            say(f"    {_r}: step {step}/{n} loss {loss:.4f}")

        if cfg.vocab == "bins":  # one model on the cells of every set, labels never used
            vocab = next(iter(tokenized.values()))[1]
            X = sp.vstack([t.X for t, _ in tokenized.values()]).tocsr()
            model, info = pretrain_cells(recipe, X, vocab, progress=prog)
            per = info["seconds"] * np.array([t.n_obs for t, _ in tokenized.values()]) / X.shape[0]
            for (name, (tok, _)), share in zip(tokenized.items(), per):
                t0 = time.perf_counter()
                embed_recipe(tok, model, recipe, key)
                reps[name][f"atacformer {rname}"] = (key, share + time.perf_counter() - t0)
        else:
            for name, (tok, vocab) in tokenized.items():
                model, info = pretrain_cells(recipe, tok.X, vocab, progress=prog)
                t0 = time.perf_counter()
                embed_recipe(tok, model, recipe, key)
                reps[name][f"atacformer {rname}"] = (key, info["seconds"] + time.perf_counter() - t0)
        say(f"  atacformer {rname}: done")
    return reps


def run_benchmark(data_dir, out_dir, cfg: BenchmarkConfig | None = None, say=logger.info) -> pd.DataFrame:
    """Run the benchmark and write ``benchmark.csv``, ``benchmark.md`` and UMAP grids.

    Parameters
    ----------
    data_dir
        Folder with the labelled sets (``../shared/data``).
    out_dir
        Output folder.
    cfg
        :class:`BenchmarkConfig` (default: everything, the first recipe).
    say
        Progress callback (the CLI prints).

    Returns
    -------
    pandas.DataFrame
        One row per (dataset, method).

    Examples
    --------
    >>> table = run_benchmark("../shared/data", "bench_out", BenchmarkConfig(max_cells=100))  # doctest: +SKIP
    """
    from atacformer import plotting as pl

    cfg = cfg or BenchmarkConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sets = load_labelled_sets(data_dir, cfg.datasets, cfg.max_cells, cfg.seed)
    tokenized = tokenize_sets(sets, cfg.vocab)
    say(f"datasets: {', '.join(f'{n} ({t.n_obs} cells x {t.n_vars:,} tokens)' for n, (t, _) in tokenized.items())}")
    reps = {n: _baselines(n, tok, cfg, say) for n, (tok, _) in tokenized.items()}
    if "atacformer" in cfg.methods:
        for name, r in _atacformer(tokenized, cfg, say).items():
            reps[name].update(r)
    rows = []
    for name, (tok, _) in tokenized.items():
        for method, (rep, secs) in reps[name].items():
            row = {"dataset": name, "method": method, **score_embedding(tok, rep, cfg.seed), "seconds": secs}
            rows.append(row)
            say(f"  {name} {method}: Leiden ARI {row['leiden_ari']:.3f}, k-means ARI {row['kmeans_ari']:.3f}, "
                f"transfer {row['transfer_acc']:.3f} ({secs:.1f}s)")
        if cfg.umap:
            from atacformer import tools as tl

            views = {}
            for method, (rep, _) in reps[name].items():
                v = AnnData(obs=tok.obs[[LABEL_KEY]].copy())
                v.obsm[rep] = tok.obsm[rep]
                tl.umap(v, rep, seed=cfg.seed)
                views[method] = v
            pl.umap_grid(views, LABEL_KEY, out / f"umap_{name}.png")
    table = pd.DataFrame(rows)
    table.to_csv(out / "benchmark.csv", index=False)
    (out / "benchmark.md").write_text(format_table(table))
    say(f"wrote {out / 'benchmark.csv'}, {out / 'benchmark.md'}" + (" and UMAP grids" if cfg.umap else ""))
    return table


def format_table(table: pd.DataFrame) -> str:
    """A markdown table of the main columns."""
    cols = ["dataset", "method", "leiden_ari", "leiden_ami", "leiden_nmi", "leiden_homogeneity",
            "kmeans_ari", "kmeans_ami", "kmeans_nmi", "kmeans_homogeneity", "transfer_acc", "seconds"]
    t = table[[c for c in cols if c in table]]
    lines = ["| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
    for _, r in t.iterrows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines) + "\n"

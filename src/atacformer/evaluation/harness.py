"""Embedding-quality benchmark: LSI, scEmbed, SnapATAC2 spectral, PeakVI and atacformer
recipes, side by side on the labelled sets of ``../shared/data``, in one process.

Every embedding is scored by :func:`atacformer.metrics.evaluate_embedding` (Leiden and
k-means at the true number of labels, ARI/AMI/NMI/homogeneity, kNN label transfer). Each
atacformer recipe is trained with :func:`atacformer.train.pretrain` (the package's one
training loop; labels are never seen) and reported twice: untrained (the same recipe
exported at ``max_steps=0``) and trained, so that what pretraining adds is measured, not
assumed. With ``dropout`` every method is also scored after non-zeros are dropped at random
(the dissertation's robustness test, LeRoy 2025).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

logger = logging.getLogger(__name__)

#: name -> (folder, file) of the labelled hg19 sets in ``../shared/data``.
LABELLED_SETS = {
    "Granja-D6T1": ("granja2019_bmmc_donor_D6T1", "granja2019_bmmc_D6T1_10kpeaks.h5ad"),
    "BM0828": ("buenrostro2018_BM0828_ra3", "buenrostro2018_BM0828_533cells.h5ad"),
    "Schep600": ("schep2017_celllines_atacCoGAPS", "schep2017_celllines_600.h5ad"),
    "chromVAR50": ("chromvar_example_gm12878_h1", "chromvar_gm12878_h1_50.h5ad"),
}
LABEL_KEY = "cell_type"


DEFAULT_DATASETS = ("BM0828", "Schep600", "chromVAR50")
METHODS = ("lsi", "scembed", "snapatac2", "peakvi", "atacformer")


@dataclass
class BenchmarkConfig:
    """What :func:`run_benchmark` runs.

    ``steps=None`` lets each recipe size its own run (the ``cpu`` preset: epochs over the
    cells within a time budget); ``dropout`` lists fractions of non-zeros removed at random
    before embedding (each method refits / the model re-embeds the thinned cells).

    Examples
    --------
    >>> BenchmarkConfig(recipes=["rtd-frequency"], steps=20).methods
    ('lsi', 'scembed', 'snapatac2', 'peakvi', 'atacformer')
    """

    datasets: tuple[str, ...] = DEFAULT_DATASETS
    methods: tuple[str, ...] = METHODS
    recipes: list[str] = field(default_factory=lambda: ["profile"])
    steps: int | None = None  # optimizer steps of every recipe (None: the cpu preset's plan)
    time_budget: float | None = None  # minutes per recipe and set (None: the preset's)
    vocab: str = "peaks"  # "peaks": each set its own peaks; "bins": shared hg19 5 kb bins
    holdout: bool = False  # with bins: each set embedded by a model trained on the other sets only
    continue_minutes: float | None = None  # with holdout: then continued pretraining on the set's own cells
    max_cells: int | None = None  # stratified subsample per set (CI scale)
    scembed_epochs: int = 20
    peakvi_epochs: int = 100
    peakvi_minutes: float | None = 10.0
    n_components: int = 30
    dropout: tuple[float, ...] = ()
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
    """Tokenize each set: into its own peaks (``"peaks"``), or into the hg19 5 kb bins open
    in at least one cell of any set (``"bins"``: one shared vocabulary for all sets)."""
    from atacformer.tokenizers import peak_vocabulary, tokenize_peak_matrix
    from atacformer.vocab import Vocabulary

    shared = Vocabulary.from_bins("hg19", 5000) if vocab == "bins" else None
    out = {}
    for name, a in sets.items():
        v = shared or peak_vocabulary(a)
        tok = tokenize_peak_matrix(a, v).to_anndata()
        tok.obs[LABEL_KEY] = a.obs[LABEL_KEY].to_numpy()
        out[name] = (tok, v)
    if shared is not None:  # the union of open bins: a data-derived shared universe
        used = np.zeros(shared.n_regions, bool)
        for tok, _ in out.values():
            used[np.unique(sp.csr_matrix(tok.X).indices)] = True
        keep = np.flatnonzero(used)
        v = Vocabulary(shared.chroms[keep], shared.starts[keep], shared.ends[keep], genome="hg19")
        for name, (tok, _) in out.items():
            small = AnnData(sp.csr_matrix(tok.X)[:, keep], obs=tok.obs, var=v.to_dataframe())
            out[name] = (tokenize_peak_matrix(small, v).to_anndata(), v)
            out[name][0].obs[LABEL_KEY] = tok.obs[LABEL_KEY].to_numpy()
    return out


def snapatac2_spectral(adata: AnnData, n_comps: int = 30, key_added: str = "X_spectral", seed: int = 0) -> None:
    """The peer: SnapATAC2 ``tl.spectral`` on all features of a counts matrix."""
    import snapatac2 as snap

    a = AnnData(adata.X.astype(np.float32), obs=pd.DataFrame(index=adata.obs_names))
    snap.tl.spectral(a, n_comps=n_comps, features=None, random_state=seed, num_threads=1)
    adata.obsm[key_added] = np.asarray(a.obsm["X_spectral"], dtype=np.float32)


def peakvi_latent(adata: AnnData, max_epochs: int = 100, key_added: str = "X_peakvi", seed: int = 0,
                  max_minutes: float | None = None) -> None:
    """The peer: PeakVI (scvi-tools; Ashuach 2022) latent of a counts matrix, default model,
    trained for ``max_epochs`` (early stopping as scvi-tools does) or ``max_minutes``."""
    import scvi

    scvi.settings.seed = seed
    a = AnnData(sp.csr_matrix(adata.X, dtype=np.float32), obs=pd.DataFrame(index=adata.obs_names))
    scvi.model.PEAKVI.setup_anndata(a)
    model = scvi.model.PEAKVI(a)
    limit = {} if max_minutes is None else {"max_time": {"minutes": float(max_minutes)}}
    model.train(max_epochs=max_epochs, accelerator="cpu", enable_progress_bar=False, **limit)
    adata.obsm[key_added] = np.asarray(model.get_latent_representation(), dtype=np.float32)


def harmony(adata: AnnData, rep: str, batch_key: str, key_added: str | None = None, seed: int = 0,
            **kwargs) -> None:
    """The peer: Harmony (Korsunsky et al. 2019; harmonypy) batch correction of ``obsm[rep]``.

    Writes the corrected embedding, cells x dims like ``obsm[rep]``, to
    ``obsm[key_added or rep + "_harmony"]``. ``kwargs`` go to ``harmonypy.run_harmony``
    (``theta``, ``nclust``, ...; its defaults otherwise).

    Examples
    --------
    >>> harmony(adata, "X_lsi", "batch")  # doctest: +SKIP
    >>> adata.obsm["X_lsi_harmony"].shape == adata.obsm["X_lsi"].shape  # doctest: +SKIP
    True
    """
    import harmonypy

    if rep not in adata.obsm:
        raise KeyError(f"obsm has no {rep!r} (keys: {list(adata.obsm)})")
    if batch_key not in adata.obs.columns:
        raise KeyError(f"obs has no column {batch_key!r} (columns: {list(adata.obs.columns)})")
    x = np.asarray(adata.obsm[rep], dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"harmony: obsm[{rep!r}] holds NaN or infinite values")
    batch = adata.obs[batch_key]
    if batch.isna().any():
        raise ValueError(f"harmony: obs[{batch_key!r}] is missing for {int(batch.isna().sum())} cells")
    if batch.nunique() < 2:
        raise ValueError(f"harmony: obs[{batch_key!r}] holds {batch.nunique()} batch; needs at least 2")
    meta = pd.DataFrame({batch_key: batch.astype(str).to_numpy()})
    # dims x cells: the orientation every harmonypy version reads without guessing
    ho = harmonypy.run_harmony(x.T, meta, batch_key, random_state=seed, verbose=False, **kwargs)
    z = np.asarray(ho.Z_corr)
    if z.shape != x.shape:  # harmonypy < 2 returns dims x cells
        z = z.T
    adata.obsm[key_added or f"{rep}_harmony"] = z.astype(np.float32)


def score_embedding(adata: AnnData, rep: str, seed: int = 0, *, model: str | None = None, dataset: str = "",
                    reports_dir=None) -> dict:
    """The ``clustering`` suite (:func:`atacformer.evaluation.suites.clustering`: the one
    protocol, :func:`atacformer.metrics.evaluate_embedding`) against ``obs["cell_type"]``;
    with ``reports_dir`` and ``model``, its report is written there too."""
    from atacformer.evaluation.suites import clustering, evaluate

    if reports_dir is None or model is None:
        return clustering(adata, rep, LABEL_KEY, seed)
    return evaluate(model, "clustering", dataset=dataset, out_dir=reports_dir, adata=adata, rep=rep,
                    labels_key=LABEL_KEY, seed=seed).metrics


def drop_nonzeros(X, fraction: float, seed: int = 0) -> sp.csr_matrix:
    """``X`` with a random ``fraction`` of its non-zeros removed (the dropout test)."""
    X = sp.csr_matrix(X, copy=True)
    rng = np.random.default_rng(seed)
    X.data[rng.random(X.nnz) < fraction] = 0
    X.eliminate_zeros()
    return X


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
        elif method == "peakvi":
            try:
                peakvi_latent(tok, max_epochs=cfg.peakvi_epochs, seed=cfg.seed, max_minutes=cfg.peakvi_minutes)
            except ImportError:
                say("scvi-tools is not installed (pip install 'atacformer[peakvi]'): PeakVI is skipped")
                continue
            reps["PeakVI"] = ("X_peakvi", time.perf_counter() - t0)
        else:
            continue
        say(f"  {name}: {list(reps)[-1]} in {time.perf_counter() - t0:.1f}s")
    return reps


def train_recipe(recipe: str, cells, out: Path, cfg: BenchmarkConfig, max_steps: int | None = None,
                 **overrides):
    """Pretrain ``recipe`` on ``cells`` (AnnData / TokenizedCells, or a list) with the one
    training loop; ``overrides`` are further :class:`~atacformer.train.TrainConfig` fields
    (e.g. ``max_length``). Returns ``(model, summary)``."""
    from atacformer.models import load_model
    from atacformer.train import TrainConfig, pretrain

    tc = TrainConfig(out=str(out), recipe=recipe, max_steps=max_steps, time_budget=cfg.time_budget,
                     seed=cfg.seed, progress=False, tensorboard=False, overwrite=True, **overrides)
    summary = pretrain(tc, data=cells)
    return load_model(out / "model"), summary


def _atacformer(tokenized, cfg, out: Path, say) -> dict[str, dict[str, tuple[str, float, object]]]:
    """Train each recipe (per set; once on all sets with shared bins; or, with ``holdout``,
    on all sets but the one embedded: the zero-shot use of a foundation model) and embed
    untrained and trained models with :func:`atacformer.tools.embed`."""
    from atacformer import tools as tl

    reps: dict[str, dict] = {n: {} for n in tokenized}
    for rname in cfg.recipes:
        if cfg.vocab == "bins" and cfg.holdout:  # train on the other sets, embed the held-out one
            groups = [(f"without-{n}", [m for m in tokenized if m != n], [n]) for n in tokenized]
        elif cfg.vocab == "bins":
            groups = [("all", list(tokenized), list(tokenized))]
        else:
            groups = [(n, [n], [n]) for n in tokenized]
        for gname, train_names, names in groups:
            cells = [tokenized[n][0] for n in train_names]
            for label, steps in (("untrained", 0), ("", cfg.steps)):
                t0 = time.perf_counter()
                model, summary = train_recipe(rname, cells if len(cells) > 1 else cells[0],
                                              out / "runs" / f"{gname}-{rname}{'-' + label if label else ''}",
                                              cfg, steps)
                secs = time.perf_counter() - t0
                method = (f"atacformer {rname}" + (" zero-shot" if cfg.holdout else "")
                          + (f" {label}" if label else ""))
                n_all = sum(tokenized[n][0].n_obs for n in names)
                for n in names:
                    key = f"X_atacformer[{rname}{'|' + label if label else ''}]"
                    t1 = time.perf_counter()
                    tl.embed(tokenized[n][0], model, key_added=key)
                    share = secs * tokenized[n][0].n_obs / n_all
                    reps[n][method] = (key, share + time.perf_counter() - t1, model)
                if steps != 0:
                    say(f"  {gname} {method}: {summary['steps']} steps, {summary['tokens_seen']:,} tokens, "
                        f"{secs:.0f}s, final loss {summary['final_loss']}")
                if steps != 0 and cfg.holdout and cfg.continue_minutes:
                    for n in names:  # brief continued pretraining on the held-out set's own cells
                        reps[n].update(_continued(rname, tokenized[n][0], out / "runs" / f"{gname}-{rname}",
                                                  cfg, say))
    return reps


def _continued(rname, cells, run: Path, cfg: BenchmarkConfig, say) -> dict:
    """The zero-shot model of ``run`` pretrained further on ``cells`` for
    ``cfg.continue_minutes`` (the foundation model adapted to a new set, labels unused)."""
    from atacformer import tools as tl
    from atacformer.models import load_model
    from atacformer.train import TrainConfig, pretrain

    t0 = time.perf_counter()
    out = run.with_name(run.name + "-continued")
    summary = pretrain(TrainConfig(out=str(out), init_from=str(run / "model"), recipe=rname,
                                   time_budget=cfg.continue_minutes, seed=cfg.seed, progress=False,
                                   tensorboard=False, overwrite=True), data=cells)
    model = load_model(out / "model")
    key = f"X_atacformer[{rname}|continued]"
    tl.embed(cells, model, key_added=key)
    say(f"  {out.name}: {summary['steps']} steps, {time.perf_counter() - t0:.0f}s")
    return {f"atacformer {rname} zero-shot+continued": (key, time.perf_counter() - t0, model)}


def run_benchmark(data_dir, out_dir, cfg: BenchmarkConfig | None = None, say=logger.info) -> pd.DataFrame:
    """Run the benchmark and write ``benchmark.csv``, ``benchmark.md``, UMAP grids and one
    ``clustering`` report per method and set under ``reports/`` (:mod:`atacformer.evaluation.suites`).

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

    cfg = cfg or BenchmarkConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sets = load_labelled_sets(data_dir, cfg.datasets, cfg.max_cells, cfg.seed)
    tokenized = tokenize_sets(sets, cfg.vocab)
    say(f"datasets: {', '.join(f'{n} ({t.n_obs} cells x {t.n_vars:,} tokens)' for n, (t, _) in tokenized.items())}")
    reps = {n: _baselines(n, tok, cfg, say) for n, (tok, _) in tokenized.items()}
    models = {n: {} for n in tokenized}
    if "atacformer" in cfg.methods:
        for name, r in _atacformer(tokenized, cfg, out, say).items():
            for method, (key, secs, model) in r.items():
                reps[name][method] = (key, secs)
                models[name][method] = model
    rows = []
    for name, (tok, _) in tokenized.items():
        for method, (rep, secs) in reps[name].items():
            row = {"dataset": name, "method": method, "dropout": 0.0,
                   **score_embedding(tok, rep, cfg.seed, model=method, dataset=name, reports_dir=out / "reports"),
                   "seconds": secs}
            rows.append(row)
            say(f"  {name} {method}: Leiden ARI {row['leiden_ari']:.3f}, k-means ARI {row['kmeans_ari']:.3f}, "
                f"transfer {row['transfer_acc']:.3f} ({secs:.1f}s)")
        for frac in cfg.dropout:
            rows += _dropout_rows(name, tok, frac, reps[name], models[name], cfg, say, out)
        if cfg.umap:
            _umap_grid(tok, reps[name], out / f"umap_{name}.png", cfg.seed)
    table = add_gains(pd.DataFrame(rows))
    table.to_csv(out / "benchmark.csv", index=False)
    (out / "benchmark.md").write_text(format_table(table))
    say(f"wrote {out / 'benchmark.csv'}, {out / 'benchmark.md'}" + (" and UMAP grids" if cfg.umap else ""))
    return table


#: Peers refit on thinned cells in the dropout test (the others take minutes per refit).
DROPOUT_REFITS = ("lsi", "snapatac2")


def _dropout_rows(name, tok, frac, reps, models, cfg, say, out: Path) -> list[dict]:
    """LSI and SnapATAC2 refit on ``tok`` with ``frac`` of its non-zeros dropped, and the
    atacformer models (already trained) embedding the thinned cells."""
    from atacformer import tools as tl

    import dataclasses

    thin = AnnData(drop_nonzeros(tok.X, frac, cfg.seed), obs=tok.obs[[LABEL_KEY]].copy(), var=tok.var)
    refit = dataclasses.replace(cfg, methods=tuple(m for m in cfg.methods if m in DROPOUT_REFITS))
    thin_reps = _baselines(name, thin, refit, lambda m: None)
    for method, model in models.items():
        t0 = time.perf_counter()
        tl.embed(thin, model, key_added=reps[method][0])
        thin_reps[method] = (reps[method][0], time.perf_counter() - t0)
    rows = []
    for method, (rep, secs) in thin_reps.items():
        row = {"dataset": name, "method": method, "dropout": frac,
               **score_embedding(thin, rep, cfg.seed, model=method, dataset=f"{name} dropout {frac:g}",
                                 reports_dir=out / "reports"),
               "seconds": secs}
        rows.append(row)
        say(f"  {name} {method} ({frac:.0%} dropped): Leiden ARI {row['leiden_ari']:.3f}")
    return rows


def _umap_grid(tok, reps, path, seed) -> None:
    from atacformer import plotting as pl
    from atacformer import tools as tl

    views = {}
    for method, (rep, _) in reps.items():
        v = AnnData(obs=tok.obs[[LABEL_KEY]].copy())
        v.obsm[rep] = tok.obsm[rep]
        tl.umap(v, rep, seed=seed)
        views[method] = v
    pl.umap_grid(views, LABEL_KEY, path)


def add_gains(table: pd.DataFrame) -> pd.DataFrame:
    """A ``leiden_ari_gain`` column on trained atacformer rows: trained minus untrained
    Leiden ARI of the same recipe, set and dropout."""
    table = table.copy()
    table["leiden_ari_gain"] = np.nan
    for i, r in table.iterrows():
        m = r["method"]
        if m.startswith("atacformer ") and not m.endswith(" untrained"):
            base = table[(table.dataset == r.dataset) & (table.method == f"{m} untrained")
                         & (table.dropout == r.dropout)]
            if len(base):
                table.loc[i, "leiden_ari_gain"] = r["leiden_ari"] - base.iloc[0]["leiden_ari"]
    return table


def format_table(table: pd.DataFrame) -> str:
    """A markdown table of the main columns."""
    cols = ["dataset", "method", "dropout", "leiden_ari", "leiden_ari_gain", "leiden_nmi", "kmeans_ari",
            "transfer_acc", "transfer_f1", "seconds"]
    return table[[c for c in cols if c in table]].to_markdown(index=False, floatfmt=".3f") + "\n"

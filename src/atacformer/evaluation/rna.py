"""RNA benchmark: ATAC -> RNA retrieval and RNA imputation from ATAC, the peers side by side.

On each paired set (RNA counts and ATAC counts of the same cells) the cells are split once,
stratified by ``obs["cell_type"]`` with a fixed seed (:func:`atacformer.metrics.stratified_split`),
into training and held-out cells; every method learns from the training cells only and is
scored on the held-out ones.

Retrieval (the held-out cells' ATAC profiles are the queries, their RNA profiles the targets;
scored by :func:`~atacformer.metrics.foscttm` and :func:`~atacformer.metrics.retrieval_recall`):

- ``genescore``: the cell's gene activity (:func:`atacformer.preprocessing.gene_activity`),
  log-normalised, correlated with the log-normalised expression over the genes both have
  (no training at all);
- ``multivi``: MultiVI (Ashuach et al. 2023, scvi-tools) trained on the paired training
  cells; the held-out cells are never trained on: their ATAC is encoded by the
  accessibility encoder alone, their RNA by the expression encoder alone, into the one
  latent space (Euclidean distances);
- ``craft``: the CRAFT dual encoder trained on the training cells (``atacformer.tl.train_craft``),
  the held-out ATAC embedded with ``tl.embed(..., modality="atac")``, their RNA with
  ``modality="rna"`` (cosine);
- ``random``: the held-out RNA profiles matched against a shuffled copy of themselves (the
  floor: FOSCTTM 0.5, recall@k = k / n).

Imputation (each held-out cell's expression predicted from its ATAC alone; per-gene and
per-cell Pearson with the log-normalised measured expression over the evaluation genes, see
:func:`~atacformer.metrics.pearson_per_gene`; their means over the finite values):

- ``genescore``: the log-normalised gene activity itself (Pearson is scale-free);
- ``knn``: LSI (:func:`atacformer.tools.lsi`) fitted on the training ATAC, the held-out
  cells projected onto its components, each cell's prediction the mean log-normalised RNA
  of its 15 nearest training cells (cosine);
- ``multivi``: MultiVI's normalised expression of the held-out cells from their ATAC alone,
  as ``log1p(1e4 * expression)``;
- ``craft``: ``atacformer.tl.impute`` (over the evaluation genes the model predicts);
- ``random``: the measured expression of another held-out cell (a shuffle). Per-cell
  Pearson of this floor is far above 0: it is what the genes' mean expression alone gives.

Evaluation genes: the RNA genes that the gene annotation also names (all RNA genes when gene
activity is unavailable), so every imputation method is scored on the same genes.
Log-normalised = counts scaled to 1e4 per cell, then ``log1p`` (scanpy).

What CRAFT is handed: ``tl.train_craft(atac_train, rna_train, out / "craft" / name,
base=..., time_budget=craft_minutes, seed=seed, overwrite=True)`` with the training cells
only (ATAC peak counts with ``var`` chrom/start/end, RNA raw counts with gene symbols as
``var_names``, the same ``obs_names``), returning the model folder; ``tl.embed(adata, model_path,
modality="atac" | "rna", copy=False)`` on the held-out cells, read from
``obsm["X_atacformer"]`` (or from the AnnData it returns); ``tl.impute(adata, model_path)``
returning cells x genes of ``log1p`` counts per 1e4 with genes as ``var_names``.

A method whose library or API is missing is reported with ``status = "unavailable: ..."``,
not dropped. ``seconds`` is a method's whole time on the set (training included), shared by
its retrieval and imputation rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from atacformer.io._atomic import write_text_atomic

logger = logging.getLogger(__name__)

LABEL_KEY = "cell_type"
METHODS = ("genescore", "multivi", "knn", "craft", "random")
#: Which tasks each method takes part in.
TASKS = {"genescore": ("retrieval", "imputation"), "multivi": ("retrieval", "imputation"),
         "knn": ("imputation",), "craft": ("retrieval", "imputation"), "random": ("retrieval", "imputation")}
#: Distance each retrieval method is scored with.
RETRIEVAL_METRIC = {"genescore": "correlation", "multivi": "euclidean", "craft": "cosine", "random": "correlation"}
COLUMNS = ["dataset", "task", "method", "metric", "foscttm", "recall@1", "recall@5", "recall@10",
           "pearson_gene", "pearson_cell", "n_cells", "n_genes", "n_nan_genes", "n_nan_cells", "seconds", "status",
           "note"]

#: name -> (folder, RNA file, ATAC file, genome) of the paired sets in ``../shared/data``.
PAIRED_SETS = {
    "scicar": ("scicar2018_a549_multiome", "scicar_a549_rna.h5ad", "scicar_a549_atac.h5ad", "hg19"),
    "neurips": ("neurips2021_bmmc_multiome_500", "bmmc_multiome_500_rna.h5ad", "bmmc_multiome_500_atac.h5ad",
                "hg38"),
}


class Unavailable(Exception):
    """A method cannot run here (a library or an API is missing); the reason is reported."""


@dataclass
class RnaPair:
    """One paired set: RNA counts (``var_names`` = gene symbols) and ATAC counts (``var``:
    chrom, start, end) of the same cells in the same order, ``obs["cell_type"]`` on the RNA,
    and the gene annotation that :func:`atacformer.preprocessing.gene_activity` reads."""

    name: str
    rna: AnnData
    atac: AnnData
    genes: object  # a path or a DataFrame; None: no annotation (no gene scores)
    genome: str

    def __post_init__(self):
        if self.rna.n_obs != self.atac.n_obs or not (self.rna.obs_names == self.atac.obs_names).all():
            raise ValueError(f"{self.name}: RNA ({self.rna.n_obs} cells) and ATAC ({self.atac.n_obs} cells) "
                             "must hold the same cells in the same order")
        if LABEL_KEY not in self.rna.obs:
            raise KeyError(f"{self.name}: RNA obs has no column {LABEL_KEY!r} (the split is stratified by it)")


def _tss_annotation(path, rna: AnnData) -> pd.DataFrame:
    """A 1-bp TSS BED whose names are versioned Ensembl ids, as a gene table (chrom, start,
    end, strand, gene_name, gene_id) named by the RNA's symbols where its ``var["gene_ids"]``
    knows them (else by the Ensembl id)."""
    bed = pd.read_csv(path, sep="\t", header=None, usecols=[0, 1, 2, 3, 5],
                      names=["chrom", "start", "end", "gene_id", "strand"])
    symbol = pd.Series(rna.var_names.to_numpy(), index=rna.var["gene_ids"].astype(str).to_numpy())
    symbol = symbol[~symbol.index.duplicated()]
    ens = bed["gene_id"].str.split(".").str[0]
    bed["gene_name"] = ens.map(symbol).fillna(ens).to_numpy()
    return bed[["chrom", "start", "end", "strand", "gene_name", "gene_id"]]


def _clip_to_genome(atac: AnnData, genome: str) -> AnnData:
    """Peaks that run past their chromosome's end clipped to it (sci-CAR has one, 51 bp past
    the end of hg19 chr17), so that the genome checks of gene activity accept the matrix."""
    from atacformer.genome import get_genome

    sizes = get_genome(genome).chrom_sizes
    limit = atac.var["chrom"].astype(str).map(sizes).to_numpy(dtype=float)  # NaN: contigs the genome lacks
    end = atac.var["end"].to_numpy()
    past = np.isfinite(limit) & (end > limit)
    if past.any():
        logger.info("%d peak(s) run past their chromosome's end in %s: clipped", int(past.sum()), genome)
        atac.var["end"] = np.where(past, limit, end).astype(end.dtype)
    return atac


def load_rna_pairs(data_dir, names=tuple(PAIRED_SETS)) -> dict[str, RnaPair]:
    """The paired sets of ``../shared/data``: sci-CAR A549 (hg19; ArchR's hg19 genes) and the
    NeurIPS 2021 BMMC multiome starter (hg38; GENCODE TSSs named by Ensembl id, mapped to the
    RNA's symbols).

    Examples
    --------
    >>> pairs = load_rna_pairs("../shared/data", ["neurips"])  # doctest: +SKIP
    >>> pairs["neurips"].rna.n_obs  # doctest: +SKIP
    500
    """
    import anndata as ad

    data_dir = Path(data_dir)
    out = {}
    for name in names:
        if name not in PAIRED_SETS:
            raise ValueError(f"unknown paired set {name!r}; known: {list(PAIRED_SETS)}")
        folder, rna_file, atac_file, genome = PAIRED_SETS[name]
        rna = ad.read_h5ad(data_dir / folder / rna_file)
        atac = _clip_to_genome(ad.read_h5ad(data_dir / folder / atac_file), genome)
        if name == "scicar":
            genes = data_dir / "genome_annotations" / "hg19" / "hg19_genes.archr.bed.gz"
        else:
            genes = _tss_annotation(data_dir / "genome_annotations" / "hg38" / "hg38_gencode_tss_unique.bed.gz", rna)
        out[name] = RnaPair(name, rna, atac, genes, genome)
    return out


# --- shared pieces -------------------------------------------------------------------------


def log_normalize(x, target_sum: float = 1e4) -> sp.csr_matrix:
    """Counts scaled to ``target_sum`` per cell, then ``log1p`` (scanpy); float32 CSR."""
    import scanpy as sc

    a = AnnData(sp.csr_matrix(x, dtype=np.float32))
    sc.pp.normalize_total(a, target_sum=target_sum)
    sc.pp.log1p(a)
    return sp.csr_matrix(a.X)


def _gene_activity_fn():
    from atacformer import preprocessing as pp

    fn = getattr(pp, "gene_activity", None)
    if fn is None:
        raise Unavailable("atacformer.preprocessing has no gene_activity")
    return fn


def gene_activity_lognorm(pair: RnaPair, cells: np.ndarray) -> AnnData:
    """Log-normalised gene activity of ``pair.atac[cells]``, one column per gene symbol (the
    first of duplicated names)."""
    fn = _gene_activity_fn()
    if pair.genes is None:
        raise Unavailable(f"{pair.name} has no gene annotation")
    ga = fn(pair.atac[cells].copy(), pair.genes, genome=pair.genome)
    ga = ga[:, ~pd.Index(ga.var_names).duplicated()]
    return AnnData(log_normalize(ga.X), obs=pd.DataFrame(index=pair.atac.obs_names[cells]),
                   var=pd.DataFrame(index=ga.var_names.astype(str)))


def _columns(adata: AnnData, genes) -> sp.csr_matrix:
    """``adata``'s columns named ``genes``, in that order."""
    idx = adata.var_names.get_indexer(list(genes))
    if (idx < 0).any():
        missing = list(np.asarray(genes)[idx < 0][:3])
        raise KeyError(f"{int((idx < 0).sum())} genes are not in var_names, e.g. {missing}")
    return sp.csr_matrix(adata.X)[:, idx]


# --- the methods ---------------------------------------------------------------------------


def genescore_retrieval(pair: RnaPair, heldout: np.ndarray, genes=None,
                        activity: AnnData | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Queries and targets of gene-score retrieval: the held-out cells' log-normalised gene
    activity (``activity``, or computed by :func:`gene_activity_lognorm`) and log-normalised
    expression over ``genes`` (default: all genes both have).

    Examples
    --------
    >>> q, t = genescore_retrieval(pair, ~train_mask)  # doctest: +SKIP
    >>> foscttm(q, t, "correlation")  # doctest: +SKIP
    """
    ga = activity if activity is not None else gene_activity_lognorm(pair, heldout)
    rna = AnnData(log_normalize(pair.rna[heldout].X), var=pd.DataFrame(index=pair.rna.var_names))
    genes = [g for g in rna.var_names if g in set(ga.var_names)] if genes is None else list(genes)
    if not genes:
        raise ValueError(f"{pair.name}: the gene activity and the RNA share no gene name")
    return _columns(ga, genes).toarray(), _columns(rna, genes).toarray()


def genescore_imputation(pair: RnaPair, heldout: np.ndarray, genes, activity: AnnData | None = None) -> np.ndarray:
    """The held-out cells' log-normalised gene activity over ``genes`` as the predicted expression."""
    ga = activity if activity is not None else gene_activity_lognorm(pair, heldout)
    return _columns(ga, genes).toarray()


def _multivi_mudata(pair: RnaPair, cells: np.ndarray, rna: bool = True, atac: bool = True):
    """A MuData of ``cells`` with both modalities (counts); a modality left out is all zero,
    which MultiVI reads as not measured."""
    import mudata as md

    r = sp.csr_matrix(pair.rna[cells].X, dtype=np.float32)
    a = sp.csr_matrix(pair.atac[cells].X, dtype=np.float32)
    obs = pd.DataFrame(index=pair.rna.obs_names[cells].astype(str))
    mdata = md.MuData({
        "rna": AnnData(r if rna else sp.csr_matrix(r.shape, dtype=np.float32), obs=obs,
                       var=pd.DataFrame(index=pair.rna.var_names.astype(str))),
        "atac": AnnData(a if atac else sp.csr_matrix(a.shape, dtype=np.float32), obs=obs.copy(),
                        var=pd.DataFrame(index=pair.atac.var_names.astype(str))),
    })
    # setup_mudata writes this cell index; scvi-tools 1.4 expects it on new data as well
    mdata.obs["_indices"] = np.arange(mdata.n_obs)
    return mdata


def multivi_fit(pair: RnaPair, train: np.ndarray, max_epochs: int = 500, max_minutes: float | None = None,
                seed: int = 0):
    """MultiVI (scvi-tools) on the paired training cells: default model, ``max_epochs``
    (scvi-tools' default 500) with its early stopping on a validation tenth, or ``max_minutes``.

    100 epochs are too few: on the NeurIPS starter (256 training cells) the expression MultiVI
    reconstructs from a training cell's own RNA then correlates 0.23 per cell with the
    measurement (a random other cell: 0.34), and 0.54 after 500 epochs."""
    try:
        import scvi
    except ImportError as e:
        raise Unavailable("scvi-tools is not installed (pip install 'atacformer[peakvi]')") from e
    scvi.settings.seed = seed
    mdata = _multivi_mudata(pair, train)
    scvi.model.MULTIVI.setup_mudata(mdata, modalities={"rna_layer": "rna", "atac_layer": "atac"})
    model = scvi.model.MULTIVI(mdata, n_genes=pair.rna.n_vars, n_regions=pair.atac.n_vars)
    limit = {} if max_minutes is None else {"max_time": {"minutes": float(max_minutes)}}
    model.train(max_epochs=max_epochs, accelerator="cpu", enable_progress_bar=False, early_stopping=True,
                **limit)
    logger.info("MultiVI on %s: %d epochs", pair.name, len(model.history["elbo_train"]))
    return model


def multivi_retrieval(pair: RnaPair, train: np.ndarray, heldout: np.ndarray, model=None, **fit) -> tuple:
    """Latents of the held-out cells from their ATAC alone (accessibility encoder) and from
    their RNA alone (expression encoder) of a MultiVI trained on the training cells (``model``,
    or fitted with ``fit`` passed to :func:`multivi_fit`). The held-out cells are never
    trained on. Returns ``(z_atac, z_rna)``."""
    model = model if model is not None else multivi_fit(pair, train, **fit)
    z_atac = model.get_latent_representation(_multivi_mudata(pair, heldout, rna=False), modality="accessibility")
    z_rna = model.get_latent_representation(_multivi_mudata(pair, heldout, atac=False), modality="expression")
    return np.asarray(z_atac, np.float64), np.asarray(z_rna, np.float64)


def multivi_imputation(pair: RnaPair, train: np.ndarray, heldout: np.ndarray, genes, model=None,
                       **fit) -> np.ndarray:
    """MultiVI's normalised expression of the held-out cells from their ATAC alone, as
    ``log1p(1e4 * expression)``, over ``genes``."""
    model = model if model is not None else multivi_fit(pair, train, **fit)
    expr = model.get_normalized_expression(_multivi_mudata(pair, heldout, rna=False), return_numpy=True)
    expr = AnnData(np.asarray(expr, np.float64), var=pd.DataFrame(index=pair.rna.var_names))
    return np.log1p(1e4 * _columns(expr, genes).toarray())


def lsi_project(reference: AnnData, query, key: str = "X_lsi") -> np.ndarray:
    """Coordinates of ``query`` counts (same regions as ``reference``) on the LSI that
    :func:`atacformer.tools.lsi` fitted on ``reference``: TF-IDF with the reference's idf and
    scale factor, times its kept loadings, unit length when the fit was (the reference's own
    rows come back as ``reference.obsm[key]``)."""
    from atacformer.preprocessing import inverse_document_frequency, tfidf_matrix

    params = reference.uns[key]["params"]
    if not params.get("tfidf", True):
        raise ValueError(f"lsi_project: the LSI in {key!r} was fitted without TF-IDF; project it yourself")
    idf = inverse_document_frequency(reference.X, log_idf=params["log_idf"])
    m, _ = tfidf_matrix(query, binarize=params["binarize"], log_idf=params["log_idf"],
                        scale_factor=params["scale_factor"], idf=idf)
    z = np.asarray(m @ reference.varm[key], dtype=np.float64)
    if params["l2_normalize"]:
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        z = np.divide(z, norms, out=np.zeros_like(z), where=norms > 0)
    return z


def knn_imputation(pair: RnaPair, train: np.ndarray, heldout: np.ndarray, genes, k: int = 15,
                   n_components: int = 30, seed: int = 0) -> np.ndarray:
    """Each held-out cell's expression over ``genes``: the mean log-normalised RNA of its ``k``
    nearest training cells (cosine) in an LSI fitted on the training ATAC (module notes)."""
    from sklearn.neighbors import NearestNeighbors

    from atacformer import tools as tl

    ref = AnnData(sp.csr_matrix(pair.atac[train].X, dtype=np.float32))
    tl.lsi(ref, n_components=min(n_components, min(ref.shape) - 1), seed=seed)
    z_query = lsi_project(ref, pair.atac[heldout].X)
    k = min(k, ref.n_obs)
    nn = NearestNeighbors(n_neighbors=k, metric="cosine").fit(ref.obsm["X_lsi"])
    idx = nn.kneighbors(z_query, return_distance=False)  # (n_heldout, k)
    n_q = idx.shape[0]
    weights = sp.csr_matrix((np.full(idx.size, 1.0 / k), (np.repeat(np.arange(n_q), k), idx.ravel())),
                            shape=(n_q, ref.n_obs))
    rna = _columns(AnnData(log_normalize(pair.rna[train].X), var=pd.DataFrame(index=pair.rna.var_names)), genes)
    return np.asarray((weights @ rna).todense())


def _craft_api():
    """``(train_craft, embed, impute)`` of ``atacformer.tools``, or :class:`Unavailable` naming
    what is missing."""
    from atacformer import tools as tl

    missing = [f for f in ("train_craft", "embed", "impute") if not hasattr(tl, f)]
    if missing:
        raise Unavailable(f"atacformer.tl has no {', '.join(missing)}")
    return tl.train_craft, tl.embed, tl.impute


def craft_embed(embed, model_path, adata: AnnData, modality: str) -> np.ndarray:
    """``obsm["X_atacformer"]`` of ``adata`` embedded in place by ``embed`` (``tl.embed``)."""
    embed(adata, model_path, modality=modality)
    return np.asarray(adata.obsm["X_atacformer"], np.float64)


def craft_imputation(impute, model_path, atac: AnnData, genes) -> tuple[np.ndarray, list[str]]:
    """``impute``'s log-normalised expression of ``atac`` over those of ``genes`` the model
    predicts; returns ``(prediction, genes kept)``."""
    imputed = impute(atac, model_path)
    have = set(imputed.var_names.astype(str))
    kept = [g for g in genes if g in have]
    if not kept:
        raise ValueError(f"the CRAFT model predicts none of the {len(genes)} evaluation genes")
    return _columns(imputed, kept).toarray(), kept


# --- the benchmark -------------------------------------------------------------------------


def _retrieval_row(q, t, metric: str) -> dict:
    """The ``retrieval`` suite (:mod:`atacformer.evaluation.suites`) with ``metric``."""
    from atacformer.evaluation.suites import retrieval

    return {"metric": metric, **retrieval(q, t, metric)}


def _imputation_row(truth: np.ndarray, pred: np.ndarray) -> dict:
    """The ``expression`` suite's per-gene / per-cell Pearson (and how many were undefined)."""
    from atacformer.evaluation.suites import expression

    s = expression(truth, pred)
    return {k: s[k] for k in ("pearson_gene", "pearson_cell", "n_cells", "n_genes", "n_nan_genes", "n_nan_cells")}


def _activity_and_genes(pair: RnaPair, heldout: np.ndarray, say) -> tuple[AnnData | Unavailable, list[str]]:
    """The held-out cells' gene activity (or why there is none) and the evaluation genes."""
    try:
        ga = gene_activity_lognorm(pair, heldout)
    except Unavailable as e:
        say(f"  {pair.name}: {e}: imputation is scored on all {pair.rna.n_vars} RNA genes")
        return e, list(pair.rna.var_names)
    have = set(ga.var_names)
    genes = [g for g in pair.rna.var_names if g in have]
    say(f"  {pair.name}: {len(genes)} of {pair.rna.n_vars} RNA genes are in the gene annotation")
    return ga, genes


def _run_method(method, pair, train, heldout, genes, truth, activity, cfg, out) -> list[dict]:
    """The rows (retrieval and / or imputation) of one method on one set."""
    rows = []
    seed = cfg["seed"]
    if method == "genescore":
        if isinstance(activity, Unavailable):
            raise activity
        q, t = genescore_retrieval(pair, heldout, genes, activity)
        rows.append(("retrieval", _retrieval_row(q, t, RETRIEVAL_METRIC[method])))
        rows.append(("imputation", _imputation_row(truth, genescore_imputation(pair, heldout, genes, activity))))
    elif method == "multivi":
        t0 = time.perf_counter()
        model = multivi_fit(pair, train, max_epochs=cfg["multivi_epochs"], max_minutes=cfg["multivi_minutes"],
                            seed=seed)
        note = {"note": f"{len(model.history['elbo_train'])} epochs in {(time.perf_counter() - t0) / 60:.1f} min "
                        f"(caps: {cfg['multivi_epochs']} epochs, {cfg['multivi_minutes']} min)"}
        q, t = multivi_retrieval(pair, train, heldout, model=model)
        rows.append(("retrieval", {**_retrieval_row(q, t, RETRIEVAL_METRIC[method]), **note}))
        rows.append(("imputation", {**_imputation_row(truth, multivi_imputation(pair, train, heldout, genes, model)),
                                    **note}))
    elif method == "knn":
        pred = knn_imputation(pair, train, heldout, genes, k=cfg["k"], n_components=cfg["n_components"], seed=seed)
        rows.append(("imputation", _imputation_row(truth, pred)))
    elif method == "craft":
        train_craft, embed, impute = _craft_api()
        base = cfg["craft_base"]
        if base is None and cfg.get("craft_pretrain_minutes"):  # the ATAC encoder pretrained on the training cells
            from atacformer.train import TrainConfig, pretrain

            base = pretrain(TrainConfig(out=str(out / "craft_base" / pair.name), overwrite=True, progress=False,
                                        tensorboard=False, seed=seed, time_budget=cfg["craft_pretrain_minutes"]),
                            data=pair.atac[train].copy())["model_dir"]
        model_path = train_craft(pair.atac[train].copy(), pair.rna[train].copy(), str(out / "craft" / pair.name),
                                 base=base, time_budget=cfg["craft_minutes"], seed=seed, overwrite=True)
        q = craft_embed(embed, model_path, pair.atac[heldout].copy(), "atac")
        t = craft_embed(embed, model_path, pair.rna[heldout].copy(), "rna")
        rows.append(("retrieval", _retrieval_row(q, t, RETRIEVAL_METRIC[method])))
        pred, kept = craft_imputation(impute, model_path, pair.atac[heldout].copy(), genes)
        rows.append(("imputation", _imputation_row(truth[:, pd.Index(genes).get_indexer(kept)], pred)))
    elif method == "random":
        perm = np.random.default_rng(seed).permutation(truth.shape[0])
        rna_all = log_normalize(pair.rna[heldout].X).toarray()
        rows.append(("retrieval", _retrieval_row(rna_all[perm], rna_all, RETRIEVAL_METRIC[method])))
        rows.append(("imputation", _imputation_row(truth, truth[perm])))
    else:
        raise ValueError(f"unknown method {method!r}; known: {METHODS}")
    return [{"task": task, **row} for task, row in rows]


def _describe(row: dict, status: str) -> str:
    if status != "ok":
        return status
    if row["task"] == "retrieval":
        return (f"FOSCTTM {row['foscttm']:.3f}, recall@1/5/10 "
                f"{row['recall@1']:.3f}/{row['recall@5']:.3f}/{row['recall@10']:.3f}")
    return f"Pearson per gene {row['pearson_gene']:.3f}, per cell {row['pearson_cell']:.3f}"


def format_rna_table(table: pd.DataFrame) -> str:
    """A markdown table: retrieval columns, then imputation columns."""
    cols = [c for c in COLUMNS if c in table and table[c].notna().any()]
    shown = table[cols].astype(object).where(table[cols].notna(), None)  # blank, not "nan"
    return shown.to_markdown(index=False, floatfmt=".3f", missingval="") + "\n"


def run_rna_benchmark(pairs, methods=METHODS, out="rna_benchmark", seed: int = 0, craft_minutes: float = 5.0,
                      craft_base=None, craft_pretrain_minutes: float = 0.0, train_fraction: float = 0.5,
                      multivi_epochs: int = 500,
                      multivi_minutes: float | None = 10.0, k: int = 15, n_components: int = 30,
                      say=logger.info) -> pd.DataFrame:
    """Run the RNA benchmark (module notes) and write ``rna_benchmark.tsv`` and
    ``rna_benchmark.md`` to ``out``.

    Parameters
    ----------
    pairs
        ``{name: RnaPair}`` (see :func:`load_rna_pairs`) or a list of :class:`RnaPair`.
    methods
        Any of :data:`METHODS`.
    out
        Output folder (created).
    seed
        Seed of the split, LSI, MultiVI, CRAFT and the random floor.
    craft_minutes, craft_base, craft_pretrain_minutes
        CRAFT's training time budget and the pretrained model it starts from (``None``: a new
        ATAC encoder, or with ``craft_pretrain_minutes`` one pretrained first for that long, by
        the default recipe, on the set's training ATAC cells).
    train_fraction
        Share of each cell type's cells used for training.
    multivi_epochs, multivi_minutes
        MultiVI's epoch cap (with early stopping) and time cap; the epochs it ran are in ``note``.
    k, n_components
        Neighbours and LSI components of the ``knn`` imputation.
    say
        Progress callback.

    Returns
    -------
    pandas.DataFrame
        One row per (dataset, task, method): :data:`COLUMNS`.

    Examples
    --------
    >>> table = run_rna_benchmark(load_rna_pairs("../shared/data"), ("genescore", "knn", "random"),
    ...                           "out/rna")  # doctest: +SKIP
    """
    from atacformer.metrics import stratified_split

    pairs = pairs if isinstance(pairs, dict) else {p.name: p for p in pairs}
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {list(METHODS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dict(seed=seed, craft_minutes=craft_minutes, craft_base=craft_base,
               craft_pretrain_minutes=craft_pretrain_minutes, multivi_epochs=multivi_epochs,
               multivi_minutes=multivi_minutes, k=k, n_components=n_components)
    rows = []
    for name, pair in pairs.items():
        train = stratified_split(pair.rna.obs[LABEL_KEY].astype(str).to_numpy(), seed, train_fraction)
        heldout = ~train
        say(f"{name}: {int(train.sum())} training / {int(heldout.sum())} held-out cells, "
            f"{pair.rna.n_vars} genes, {pair.atac.n_vars} peaks")
        activity, genes = _activity_and_genes(pair, heldout, say)
        rna_heldout = AnnData(log_normalize(pair.rna[heldout].X), var=pd.DataFrame(index=pair.rna.var_names))
        truth = _columns(rna_heldout, genes).toarray()
        for method in methods:
            t0 = time.perf_counter()
            try:
                got = _run_method(method, pair, train, heldout, genes, truth, activity, cfg, out)
                status = "ok"
            except Unavailable as e:
                got = [{"task": task} for task in TASKS[method]]
                status = f"unavailable: {e}"
            secs = time.perf_counter() - t0
            for row in got:
                rows.append({"dataset": name, "method": method, **row, "seconds": secs, "status": status})
                say(f"  {name} {row['task']} {method}: {_describe(row, status)} ({secs:.1f}s)")
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    for c in ("n_cells", "n_genes", "n_nan_genes", "n_nan_cells"):
        table[c] = table[c].astype("Int64")
    order = {**{name: i for i, name in enumerate(pairs)}, "retrieval": 0, "imputation": 1}
    table = table.sort_values(["dataset", "task"], key=lambda c: c.map(order), kind="stable").reset_index(drop=True)
    write_text_atomic(out / "rna_benchmark.tsv", table.to_csv(sep="\t", index=False))
    write_text_atomic(out / "rna_benchmark.md", format_rna_table(table))
    say(f"wrote {out / 'rna_benchmark.tsv'} and {out / 'rna_benchmark.md'}")
    return table

"""Fine-tuning, annotation and batch integration side by side with their peers, in one run.

Annotation (per labelled set): the cells are split by a fixed seed into stratified reference
and query halves (:func:`atacformer.metrics.stratified_split`). The base model is the
default pretraining on all cells of the set (no label used); the fine-tuned models see the
reference half's labels only. Every method labels the query half, scored by macro-F1 and
accuracy (``tl.annotate``; unassigned counts as wrong, ``min_confidence=0``), and the query
half's own Leiden clustering at the true k is scored by ARI / NMI:

- ``LSI + kNN``, ``SnapATAC2 + kNN``: the peers, fitted on all cells (no label);
- ``atacformer base + kNN``: the base model's embedding;
- ``atacformer triplet + kNN``: fine-tuned with the triplet objective on the reference half;
- ``atacformer classify head``: the label head fine-tuned on the reference half.

Integration (per batch task: cells with a batch column and labels): ``LSI``, ``Harmony on
LSI``, PeakVI and ``Harmony on PeakVI`` (optional), the base model and the model fine-tuned
with the ``batch-adversarial`` objective on all cells (batches only, no label), each scored
by :func:`atacformer.metrics.integration_scores` (iLISI, kBET, batch ASW, graph
connectivity; ARI, NMI, cell-type ASW, cLISI).
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

from atacformer.evaluation.harness import LABEL_KEY, load_labelled_sets, snapatac2_spectral, tokenize_sets

logger = logging.getLogger(__name__)

ANNOTATION_SETS = ("Granja-D6T1", "BM0828", "Schep600")
#: Batch tasks: a name -> how to build it (see :func:`batch_tasks`).
BATCH_TASKS = ("BM0828+Schep600", "NeurIPS-2donors")


@dataclass
class FinetuneBenchmarkConfig:
    """What :func:`run_finetune_benchmark` runs (minutes are time budgets per training run)."""

    datasets: tuple[str, ...] = ANNOTATION_SETS
    batch_tasks: tuple[str, ...] = BATCH_TASKS
    max_cells: int | None = None
    base_minutes: float = 4.0
    finetune_minutes: float = 3.0
    finetune_epochs: float = 10.0
    peakvi_minutes: float | None = 5.0
    snapatac2: bool = True
    k: int = 15
    seed: int = 0


def _train(out: Path, data, minutes: float, seed: int, **kw):
    from atacformer.models import load_model
    from atacformer.train import TrainConfig, pretrain

    t0 = time.perf_counter()
    summary = pretrain(TrainConfig(out=str(out), time_budget=minutes, seed=seed, progress=False, tensorboard=False,
                                   overwrite=True, **kw), data=data)
    return load_model(out / "model"), summary, time.perf_counter() - t0


def _query_clusters(query: AnnData, rep: str, seed: int) -> dict:
    from atacformer.metrics import clustering_scores
    from atacformer.metrics._evaluate import cluster_at_k, labelled_view

    view = labelled_view(query, rep, LABEL_KEY)  # the one protocol's cells and Leiden at k
    labels = view.obs[LABEL_KEY].to_numpy()
    s = clustering_scores(labels, cluster_at_k(view, rep, "leiden", len(np.unique(labels)), seed))
    return {"query_leiden_ari": float(s["ari"]), "query_leiden_nmi": float(s["nmi"])}


def _annotate_row(ref: AnnData, query: AnnData, rep: str, model, cfg, seed, *, method: str, dataset: str,
                  reports_dir: Path) -> dict:
    """kNN from the reference half (``model=None``: ``obsm[rep]`` already in both), or the
    model's head (``ref=None``); the query half's labels scored by the ``annotation`` suite
    (:mod:`atacformer.evaluation.suites`), whose report is written to ``reports_dir``."""
    from atacformer import tools as tl
    from atacformer.evaluation.suites import evaluate

    q = query.copy()
    if ref is None:
        tl.annotate(q, model, min_confidence=0.0)
    else:
        tl.annotate(q, model, reference=ref.copy(), labels_key=LABEL_KEY, use_rep=rep, k=cfg.k, min_confidence=0.0)
    report = evaluate(method, "annotation", dataset=dataset, out_dir=reports_dir,
                      truth=q.obs[LABEL_KEY].to_numpy(), predicted=q.obs["predicted_label"].to_numpy())
    return {"macro_f1": report.metrics["macro_f1"], "accuracy": report.metrics["accuracy"]}


def annotation_rows(name: str, tok: AnnData, out: Path, cfg: FinetuneBenchmarkConfig, say=logger.info) -> list[dict]:
    """The annotation rows of one tokenized labelled set (see the module notes)."""
    from atacformer import tools as tl
    from atacformer.metrics import stratified_split

    seed = cfg.seed
    ref_mask = stratified_split(tok.obs[LABEL_KEY].astype(str).to_numpy(), seed)
    rows = []

    def add(method, rep, secs, model=None, head=False):
        ref, query = tok[ref_mask].copy(), tok[~ref_mask].copy()
        if model is not None:
            tl.embed(query, model, key_added=rep)
            tl.embed(ref, model, key_added=rep)
        row = {"dataset": name, "method": method,
               **_annotate_row(None if head else ref, query, rep, model, cfg, seed, method=method, dataset=name,
                               reports_dir=out / "reports"),
               **_query_clusters(query, rep, seed), "seconds": secs}
        rows.append(row)
        say(f"  {name} {method}: macro-F1 {row['macro_f1']:.3f}, query Leiden ARI {row['query_leiden_ari']:.3f}")

    t0 = time.perf_counter()
    tl.lsi(tok, n_components=min(30, min(tok.shape) - 2), seed=seed)
    add("LSI + kNN", "X_lsi", time.perf_counter() - t0)
    if cfg.snapatac2:
        t0 = time.perf_counter()
        try:
            snapatac2_spectral(tok, min(30, tok.n_obs - 2), seed=seed)
            add("SnapATAC2 + kNN", "X_spectral", time.perf_counter() - t0)
        except ImportError:
            say("snapatac2 is not installed: the peer is skipped")
    base, _, secs = _train(out / name / "base", tok, cfg.base_minutes, seed)
    add("atacformer base + kNN", "X_base", secs, model=base)
    reference = tok[ref_mask].copy()
    ft = dict(init_from=str(out / name / "base" / "model"), epochs=cfg.finetune_epochs)
    tri, _, secs = _train(out / name / "triplet", reference, cfg.finetune_minutes, seed, objective="triplet", **ft)
    add("atacformer triplet + kNN", "X_triplet", secs, model=tri)
    head, _, secs = _train(out / name / "classify", reference, cfg.finetune_minutes, seed, objective="classify", **ft)
    add("atacformer classify head", "X_head", secs, model=head, head=True)
    return rows


def batch_tasks(data_dir, names, max_cells: int | None = None, seed: int = 0) -> dict[str, AnnData]:
    """Tokenized cells with ``obs["batch"]`` and ``obs["cell_type"]``: ``BM0828+Schep600``
    (the two sets on their shared hg19 5 kb bins, dataset as the batch; LMPP is in both) and
    ``NeurIPS-2donors`` (the NeurIPS 2021 bone-marrow multiome ATAC, two donors, its own
    peaks)."""
    import anndata as ad

    from atacformer.tokenizers import peak_vocabulary, tokenize_peak_matrix

    out = {}
    for name in names:
        if name == "BM0828+Schep600":
            sets = load_labelled_sets(data_dir, ["BM0828", "Schep600"], max_cells, seed)
            tok = tokenize_sets(sets, "bins")
            parts = []
            for n, (t, _) in tok.items():
                t = t.copy()
                t.obs["batch"] = n
                t.obs_names = [f"{n}:{c}" for c in t.obs_names]
                parts.append(t)
            a = ad.concat(parts, merge="first")
            a.var = parts[0].var
        elif name == "NeurIPS-2donors":
            raw = ad.read_h5ad(Path(data_dir) / "neurips2021_bmmc_multiome_500" / "bmmc_multiome_500_atac.h5ad")
            a = tokenize_peak_matrix(raw, peak_vocabulary(raw)).to_anndata()
            a.obs["batch"] = raw.obs["batch"].astype(str).to_numpy()
            a.obs[LABEL_KEY] = raw.obs[LABEL_KEY].astype(str).to_numpy()
        else:
            raise ValueError(f"unknown batch task {name!r}; known: {BATCH_TASKS}")
        a.obs[LABEL_KEY] = a.obs[LABEL_KEY].astype(str).astype("category")
        a.obs["batch"] = a.obs["batch"].astype(str).astype("category")
        out[name] = a
    return out


def integration_rows(name: str, tok: AnnData, out: Path, cfg: FinetuneBenchmarkConfig, say=logger.info) -> list[dict]:
    """The integration rows of one batch task (see the module notes)."""
    from atacformer import tools as tl
    from atacformer.evaluation.harness import harmony, peakvi_latent
    from atacformer.evaluation.suites import evaluate

    seed, rows = cfg.seed, []

    def add(method, rep, secs):
        scores = evaluate(method, "integration", dataset=name, out_dir=out / "reports", adata=tok, rep=rep,
                          batch_key="batch", labels_key=LABEL_KEY, seed=seed).metrics
        row = {"task": name, "method": method, **{k: v for k, v in scores.items() if k != "n_cells"},
               "seconds": secs}
        rows.append(row)
        say(f"  {name} {method}: iLISI {row['ilisi']:.3f}, kBET {row['kbet']:.3f}, ARI {row['ari']:.3f}")

    t0 = time.perf_counter()
    tl.lsi(tok, n_components=min(30, min(tok.shape) - 2), seed=seed)
    add("LSI", "X_lsi", time.perf_counter() - t0)
    harmony(tok, "X_lsi", "batch", key_added="X_lsi_harmony", seed=seed)
    add("Harmony on LSI", "X_lsi_harmony", time.perf_counter() - t0)
    if cfg.peakvi_minutes:
        t1 = time.perf_counter()
        try:
            peakvi_latent(tok, seed=seed, max_minutes=cfg.peakvi_minutes)
            add("PeakVI", "X_peakvi", time.perf_counter() - t1)
            harmony(tok, "X_peakvi", "batch", key_added="X_peakvi_harmony", seed=seed)
            add("Harmony on PeakVI", "X_peakvi_harmony", time.perf_counter() - t1)
        except ImportError:
            say("scvi-tools is not installed (pip install 'atacformer[peakvi]'): PeakVI is skipped")
    cells = AnnData(sp.csr_matrix(tok.X), obs=tok.obs[["batch"]].copy(), var=tok.var)
    base, _, secs = _train(out / name / "base", cells, cfg.base_minutes, seed)
    tl.embed(tok, base, key_added="X_base")
    add("atacformer base", "X_base", secs)
    adv, _, secs2 = _train(out / name / "batch-adversarial", cells, cfg.finetune_minutes, seed,
                           init_from=str(out / name / "base" / "model"), objective="batch-adversarial",
                           batch_key="batch", epochs=cfg.finetune_epochs)
    tl.embed(tok, adv, key_added="X_adversarial")
    add("atacformer batch-adversarial", "X_adversarial", secs + secs2)
    return rows


def run_finetune_benchmark(data_dir, out_dir, cfg: FinetuneBenchmarkConfig | None = None,
                           say=logger.info) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run both parts; write ``annotation.csv/.md`` and ``integration.csv/.md`` in ``out_dir``
    (and one suite report per method under ``reports/``) and return the two tables."""
    cfg = cfg or FinetuneBenchmarkConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    if cfg.datasets:
        sets = load_labelled_sets(data_dir, cfg.datasets, cfg.max_cells, cfg.seed)
        for name, (tok, _) in tokenize_sets(sets, "peaks").items():
            say(f"annotation: {name} ({tok.n_obs} cells x {tok.n_vars:,} regions)")
            rows += annotation_rows(name, tok, out, cfg, say)
    annotation = pd.DataFrame(rows)
    rows = []
    for name, tok in batch_tasks(data_dir, cfg.batch_tasks, cfg.max_cells, cfg.seed).items():
        say(f"integration: {name} ({tok.n_obs} cells x {tok.n_vars:,} regions, "
            f"{tok.obs['batch'].nunique()} batches)")
        rows += integration_rows(name, tok, out, cfg, say)
    integration = pd.DataFrame(rows)
    for table, stem in ((annotation, "annotation"), (integration, "integration")):
        if len(table):
            table.to_csv(out / f"{stem}.csv", index=False)
            (out / f"{stem}.md").write_text(table.to_markdown(index=False, floatfmt=".3f") + "\n")
    say(f"wrote {out}/annotation.csv and {out}/integration.csv")
    return annotation, integration

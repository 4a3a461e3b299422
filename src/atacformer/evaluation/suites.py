"""Fixed metric suites: every model scored the same way, one report per model and task.

A suite is a plain function (AnnData or arrays in, one flat ``dict`` of metrics out) whose
metric names are fixed (:data:`SUITE_METRICS`), so reports of different models line up
column by column. The suites reuse the package's metrics, so each number has one definition:

- ``clustering`` (an embedding and labels): :func:`atacformer.metrics.evaluate_embedding`,
  the package's one embedding protocol (Leiden and k-means at the true number of labels,
  ARI / AMI / NMI / homogeneity, kNN label transfer), plus the number of scored cells.
- ``annotation`` (predicted and true labels): accuracy, macro-F1 and per-type F1 from
  :func:`atacformer.tools.annotation_scores` (the scoring of ``tl.annotate``; the types are
  those of the truth), and the share of cells the method declined to label (``"unassigned"``
  or ``"Unknown"``), which count as wrong calls.
- ``integration`` (an embedding, labels and batches): :func:`atacformer.metrics.integration_scores`
  (scib-metrics' batch correction and conservation of biology, Luecken et al. 2022).
- ``retrieval`` (two paired embeddings, row ``i`` the same cell): FOSCTTM (Liu et al. 2019)
  and recall@1/5/10 from :mod:`atacformer.metrics`.
- ``expression`` (alias ``imputation``; a predicted and an observed cells x genes matrix):
  Pearson and Spearman per gene and per cell (means over the defined values), MSE and MAE;
  with a ``group_key`` (e.g. cell types) and a ``control`` group, cell-eval's (Arc Institute)
  group-level metrics on the group means: Pearson of the deltas from the control group, MSE
  and MAE of the group means and of the deltas, and the discrimination score (L1), each
  averaged over the non-control groups. cell-eval scores perturbation predictions; here the
  groups take the place of perturbations (``pip install 'atacformer[eval]'``).

:func:`evaluate` runs one suite and returns a :class:`Report` (model, suite, dataset,
metrics); with ``out_dir`` it writes ``<out_dir>/<suite>/<dataset>/<model>.json`` and a
one-row ``.tsv`` beside it, each through a temporary file and a rename. Inputs are checked
before anything is computed or written. :func:`collect_reports` reads a folder of reports
into one side-by-side table.

Examples
--------
>>> from atacformer.evaluation.suites import evaluate, collect_reports
>>> evaluate("LSI", "clustering", dataset="BM0828", out_dir="reports",
...          adata=adata, rep="X_lsi", labels_key="cell_type")  # doctest: +SKIP
>>> collect_reports("reports", suite="clustering")  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from atacformer.io._atomic import write_text_atomic

logger = logging.getLogger(__name__)

__all__ = ["ALIASES", "SUITES", "SUITE_METRICS", "Report", "annotation", "clustering", "collect_reports",
           "evaluate", "expression", "format_reports", "integration", "read_report", "retrieval"]

#: Predictions that mean "no label given": they count as wrong, and as rejected.
REJECTED = ("unassigned", "Unknown")
#: cell-eval's group-level metrics, as named in the expression suite.
GROUP_METRICS = ("group_pearson_delta", "group_mse", "group_mae", "group_mse_delta", "group_mae_delta",
                 "group_discrimination_l1")
RETRIEVAL_KS = (1, 5, 10)


def _clustering_metrics() -> tuple[str, ...]:
    from atacformer.metrics._evaluate import COLUMNS

    return (*COLUMNS, "n_cells")


def _integration_metrics() -> tuple[str, ...]:
    from atacformer.metrics._integration import COLUMNS

    return (*COLUMNS, "n_cells")


#: suite -> its fixed metric names (``annotation`` adds ``f1[<type>]`` per true type).
SUITE_METRICS: dict[str, tuple[str, ...]] = {
    "clustering": _clustering_metrics(),
    "annotation": ("accuracy", "macro_f1", "fraction_rejected", "accuracy_accepted", "n_cells", "n_types"),
    "integration": _integration_metrics(),
    "retrieval": ("foscttm", *(f"recall@{k}" for k in RETRIEVAL_KS), "n_cells"),
    "expression": ("pearson_gene", "pearson_cell", "spearman_gene", "spearman_cell", "mse", "mae",
                   "n_cells", "n_genes", "n_nan_genes", "n_nan_cells", *GROUP_METRICS, "n_groups"),
}
#: other names of suites
ALIASES = {"imputation": "expression"}


# ----------------------------------------------------------------------------- suites


def _n_scorable(adata: AnnData, rep: str, keys: tuple[str, ...]) -> int:
    from atacformer.metrics._evaluate import labelled_view

    return labelled_view(adata, rep, keys[0], also=keys[1:]).n_obs


def clustering(adata: AnnData, rep: str, labels_key: str = "cell_type", seed: int = 0) -> dict:
    """The ``clustering`` suite: :func:`atacformer.metrics.evaluate_embedding` of
    ``obsm[rep]`` against ``obs[labels_key]``, and the number of cells scored.

    Examples
    --------
    >>> clustering(adata, "X_lsi", "cell_type")["leiden_ari"]  # doctest: +SKIP
    0.52
    """
    from atacformer.metrics import evaluate_embedding

    n = _n_scorable(adata, rep, (labels_key,))
    return {**evaluate_embedding(adata, rep, labels_key, seed), "n_cells": n}


def annotation(truth, predicted, rejected=REJECTED) -> dict:
    """The ``annotation`` suite: predicted labels against true ones.

    Parameters
    ----------
    truth, predicted
        Per-cell labels of one length (cells with a missing truth are not scored).
    rejected
        Predictions that mean "no label": wrong calls, counted by ``fraction_rejected``.

    Returns
    -------
    dict
        ``accuracy``, ``macro_f1`` (over the true types), ``fraction_rejected``,
        ``accuracy_accepted`` (among cells given a label), ``n_cells``, ``n_types``, and
        ``f1[<type>]`` for each true type.

    Examples
    --------
    >>> s = annotation(["a", "a", "b", "b"], ["a", "Unknown", "b", "a"])
    >>> round(s["macro_f1"], 3), s["fraction_rejected"], s["f1[b]"]
    (0.583, 0.25, 0.6666666666666666)
    """
    from atacformer.tools import annotation_scores

    truth = np.asarray(truth, dtype=object).ravel()
    predicted = np.asarray(predicted, dtype=object).ravel()
    if truth.shape != predicted.shape:
        raise ValueError(f"annotation: {truth.size} true labels and {predicted.size} predicted ones; "
                         "give one of each per cell")
    s = annotation_scores(truth, predicted)
    scored = pd.Series(truth).notna().to_numpy()
    y_true, y_pred = truth[scored].astype(str), predicted[scored].astype(str)
    rej = np.isin(y_pred, list(rejected))
    out = {"accuracy": s["accuracy"], "macro_f1": s["macro_f1"],
           "fraction_rejected": float(rej.mean()) if rej.size else float("nan"),
           "accuracy_accepted": float((y_true[~rej] == y_pred[~rej]).mean()) if (~rej).any() else float("nan"),
           "n_cells": int(s["n_scored"]), "n_types": int(len(s["per_type"]))}
    out.update({f"f1[{t}]": float(v) for t, v in s["per_type"]["f1"].items()})
    return out


def integration(adata: AnnData, rep: str, batch_key: str = "batch", labels_key: str = "cell_type",
                seed: int = 0, backend: str = "auto") -> dict:
    """The ``integration`` suite: :func:`atacformer.metrics.integration_scores` of
    ``obsm[rep]`` and the number of cells scored.

    Examples
    --------
    >>> integration(adata, "X_lsi_harmony", "batch", "cell_type")["total"]  # doctest: +SKIP
    0.61
    """
    from atacformer.metrics import integration_scores

    n = _n_scorable(adata, rep, (labels_key, batch_key))
    return {**integration_scores(adata, rep, batch_key, labels_key, seed=seed, backend=backend), "n_cells": n}


def retrieval(x, y, metric: str = "cosine") -> dict:
    """The ``retrieval`` suite: paired cells across two embeddings in one space (row ``i`` of
    ``x`` and of ``y`` the same cell): FOSCTTM and recall@1/5/10 (:mod:`atacformer.metrics`),
    both with ``metric``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(20, 4))
    >>> retrieval(x, x + 0.01)["recall@1"]
    1.0
    """
    from atacformer.metrics import foscttm, retrieval_recall

    return {"foscttm": foscttm(x, y, metric), **retrieval_recall(x, y, ks=RETRIEVAL_KS, metric=metric),
            "n_cells": int(np.shape(x)[0])}


def _matrix_of(a, layer: str | None, name: str):
    if isinstance(a, AnnData):
        if layer is not None and layer not in a.layers:
            raise KeyError(f"{name}: layers has no {layer!r} (layers: {list(a.layers)})")
        return a.layers[layer] if layer is not None else a.X
    return a


def _check_pair(real, pred) -> None:
    """Two AnnData must hold the same cells and genes in the same order."""
    if not (isinstance(real, AnnData) and isinstance(pred, AnnData)):
        return
    for what, r, p in (("cells (obs_names)", real.obs_names, pred.obs_names),
                       ("genes (var_names)", real.var_names, pred.var_names)):
        if len(r) != len(p) or not (r == p).all():
            diff = next((i for i, (u, v) in enumerate(zip(r, p)) if u != v), min(len(r), len(p)))
            raise ValueError(f"expression: real and pred differ in their {what}: {len(r)} vs {len(p)}, first "
                             f"difference at position {diff}; give the same ones in the same order")


def _ranks(m, axis: int) -> np.ndarray:
    """Average ranks along ``axis`` (ties share their mean rank, as Spearman's rho takes them)."""
    from scipy.stats import rankdata

    d = m.toarray() if sp.issparse(m) else np.asarray(m, dtype=np.float64)
    return rankdata(d, axis=axis)


def _group_metrics(real: AnnData, pred: AnnData, group_key: str, control: str) -> dict:
    """cell-eval's group-level metrics (module notes), each averaged over the non-control groups."""
    try:
        from cell_eval._types import PerturbationAnndataPair
        from cell_eval.metrics import discrimination_score, mae, mae_delta, mse, mse_delta, pearson_delta
    except ImportError as e:
        raise ImportError("expression: group metrics need cell-eval (pip install 'atacformer[eval]')") from e

    if group_key not in real.obs.columns:  # the cells are the same: pred's groups are real's
        raise KeyError(f"expression: real.obs has no column {group_key!r} (columns: {list(real.obs.columns)})")
    groups = real.obs[group_key].astype(str).to_numpy()
    if control not in set(groups):
        raise ValueError(f"expression: control {control!r} is not a value of obs[{group_key!r}] "
                         f"(values: {sorted(set(groups))})")
    if len(set(groups)) < 2:
        raise ValueError(f"expression: obs[{group_key!r}] holds one group; the deltas need another one")

    def copy(a):
        x = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
        return AnnData(np.asarray(x, dtype=np.float64), obs=pd.DataFrame({group_key: groups}, index=a.obs_names),
                       var=pd.DataFrame(index=a.var_names))

    pair = PerturbationAnndataPair(real=copy(real), pred=copy(pred), pert_col=group_key, control_pert=control)
    out = {}
    for name, fn in (("group_pearson_delta", pearson_delta), ("group_mse", mse), ("group_mae", mae),
                     ("group_mse_delta", mse_delta), ("group_mae_delta", mae_delta)):
        out[name] = float(np.mean(list(fn(pair).values())))
    # genes are not perturbation targets here: none is excluded
    out["group_discrimination_l1"] = float(np.mean(list(
        discrimination_score(pair, metric="l1", exclude_target_gene=False).values())))
    out["n_groups"] = int(len(set(groups)))
    return out


def expression(real, pred, layer: str | None = None, group_key: str | None = None,
               control: str | None = None) -> dict:
    """The ``expression`` (``imputation``) suite: a predicted cells x genes matrix against the
    observed one (module notes).

    Parameters
    ----------
    real, pred
        AnnData (the same cells and genes, in the same order) or matrices of one shape, dense
        or sparse. Compare values on the scale the model predicts (e.g. log-normalised).
    layer
        Read this layer of both AnnData instead of ``X``.
    group_key, control
        ``obs`` column of groups and the control group: adds cell-eval's group metrics
        (AnnData inputs only); without them those metrics are NaN.

    Returns
    -------
    dict
        The ``expression`` names of :data:`SUITE_METRICS`; per-gene / per-cell correlations are
        means over the genes / cells where both are non-constant (``n_nan_*`` count the others).

    Examples
    --------
    >>> import numpy as np
    >>> real = np.array([[1.0, 2, 3], [2, 1, 5], [0, 3, 1]])
    >>> s = expression(real, 2 * real)
    >>> s["pearson_gene"], s["spearman_cell"], s["mse"]
    (1.0, 1.0, 6.0)
    """
    from atacformer.metrics import pearson_per_cell, pearson_per_gene, pearson_summary
    from atacformer.metrics._crossmodal import _same_shape

    _check_pair(real, pred)
    if (group_key is None) != (control is None):
        raise ValueError("expression: give group_key and control together (or neither)")
    if group_key is not None and not (isinstance(real, AnnData) and isinstance(pred, AnnData)):
        raise ValueError("expression: group metrics need AnnData inputs (groups in obs[group_key])")
    t, p = _same_shape(_matrix_of(real, layer, "real"), _matrix_of(pred, layer, "pred"))
    group = {name: float("nan") for name in GROUP_METRICS} | {"n_groups": 0}
    if group_key is not None:
        group = _group_metrics(real if layer is None else AnnData(t, obs=real.obs, var=real.var),
                               pred if layer is None else AnnData(p, obs=pred.obs, var=pred.var), group_key, control)
    g, c = pearson_summary(pearson_per_gene(t, p)), pearson_summary(pearson_per_cell(t, p))
    sg = pearson_summary(pearson_per_gene(_ranks(t, 0), _ranks(p, 0)))
    sc = pearson_summary(pearson_per_cell(_ranks(t, 1), _ranks(p, 1)))
    diff = (p - t)
    diff = diff.toarray() if sp.issparse(diff) else np.asarray(diff)
    return {"pearson_gene": g["mean"], "pearson_cell": c["mean"], "spearman_gene": sg["mean"],
            "spearman_cell": sc["mean"], "mse": float(np.mean(diff ** 2)), "mae": float(np.mean(np.abs(diff))),
            "n_cells": int(t.shape[0]), "n_genes": int(t.shape[1]), "n_nan_genes": g["n_nan"],
            "n_nan_cells": c["n_nan"], **group}


#: suite -> its function
SUITES = {"clustering": clustering, "annotation": annotation, "integration": integration,
          "retrieval": retrieval, "expression": expression}


# ----------------------------------------------------------------------------- reports


@dataclass
class Report:
    """One model's metrics on one suite and dataset.

    Examples
    --------
    >>> r = Report("LSI", "annotation", "BM0828", {"accuracy": 0.9})
    >>> r.row()["accuracy"]
    0.9
    """

    model: str
    suite: str
    dataset: str
    metrics: dict
    inputs: dict = field(default_factory=dict)
    created: str = ""
    version: str = ""

    def row(self) -> dict:
        """The report as one flat row: ``suite``, ``dataset``, ``model``, then the metrics."""
        return {"suite": self.suite, "dataset": self.dataset, "model": self.model, **self.metrics}

    def to_json(self) -> dict:
        """A JSON-ready dict (NaN as ``null``)."""
        d = asdict(self)
        d["metrics"] = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.metrics.items()}
        return d

    @classmethod
    def from_json(cls, d: dict) -> Report:
        d = dict(d)
        d["metrics"] = {k: (float("nan") if v is None else v) for k, v in d["metrics"].items()}
        return cls(**d)

    def write(self, path) -> Path:
        """Write ``path`` (``.json``) and a one-row ``.tsv`` beside it, each atomically;
        returns the JSON path."""
        path = Path(os.fspath(path))
        if path.suffix != ".json":
            raise ValueError(f"{path}: a report is written to a .json file")
        write_text_atomic(path, json.dumps(self.to_json(), indent=1) + "\n")
        write_text_atomic(path.with_suffix(".tsv"), pd.DataFrame([self.row()]).to_csv(sep="\t", index=False))
        return path


def _slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._+-]+", "_", str(name)).strip("_.")
    return s or "_"


def report_path(out_dir, suite: str, dataset: str, model: str) -> Path:
    """Where :func:`evaluate` writes a report: ``<out_dir>/<suite>/<dataset>/<model>.json``
    (names reduced to letters, digits and ``._+-``)."""
    return Path(out_dir) / _slug(suite) / _slug(dataset or "_") / f"{_slug(model)}.json"


def _suite(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose from {sorted([*SUITES, *ALIASES])}")
    return name


def _check_inputs(suite: str, inputs: dict) -> None:
    params = inspect.signature(SUITES[suite]).parameters
    unknown = sorted(set(inputs) - set(params))
    if unknown:
        raise TypeError(f"suite {suite!r} takes no input(s) {unknown}; its inputs: {list(params)}")
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in inputs]
    if missing:
        raise TypeError(f"suite {suite!r} needs input(s) {missing}; its inputs: {list(params)}")


def _describe(v):
    """What a report records of an input: strings and numbers as they are, arrays by shape."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (tuple, list)) and all(isinstance(x, (str, int, float)) for x in v) and len(v) <= 20:
        return list(v)
    shape = getattr(v, "shape", None)
    return f"{type(v).__name__} {'x'.join(map(str, shape))}" if shape is not None else type(v).__name__


def evaluate(model: str, suite: str, *, dataset: str = "", out_dir=None, overwrite: bool = True,
             **inputs) -> Report:
    """Score one model on one suite; with ``out_dir``, write its report there.

    Parameters
    ----------
    model
        The model's name in the report (e.g. ``"LSI"``, ``"atacformer profile"``).
    suite
        A name of :data:`SUITES` (or :data:`ALIASES`).
    dataset
        The data set's name in the report.
    out_dir
        Folder of reports: writes ``<out_dir>/<suite>/<dataset>/<model>.json`` and ``.tsv``
        (see :func:`report_path`) after the metrics are computed; nothing is written when the
        inputs are refused or a metric fails.
    overwrite
        Replace an existing report of the same model, suite and dataset.
    **inputs
        The suite function's arguments (e.g. ``adata``, ``rep``, ``labels_key``).

    Returns
    -------
    Report

    Examples
    --------
    >>> r = evaluate("kNN", "annotation", dataset="BM0828", truth=["a", "b"], predicted=["a", "a"])
    >>> r.metrics["accuracy"]
    0.5
    """
    from atacformer import __version__

    name = _suite(suite)
    _check_inputs(name, inputs)
    path = None
    if out_dir is not None:
        path = report_path(out_dir, name, dataset, model)
        if path.exists() and not overwrite:
            from atacformer.errors import OutputError

            raise OutputError(f"{path} exists; pass overwrite=True to replace it")
    metrics = SUITES[name](**inputs)
    missing = [m for m in SUITE_METRICS[name] if m not in metrics]
    if missing:  # a suite that lost a fixed name is a bug, not a data problem
        raise RuntimeError(f"suite {name!r} returned no {missing}")
    report = Report(model=str(model), suite=name, dataset=str(dataset),
                    metrics={k: (v if isinstance(v, int) else float(v)) for k, v in metrics.items()},
                    inputs={k: _describe(v) for k, v in inputs.items()},
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"), version=__version__)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        report.write(path)
        logger.info("evaluate: wrote %s", path)
    return report


def read_report(path) -> Report:
    """Read a report written by :meth:`Report.write` / :func:`evaluate`.

    Examples
    --------
    >>> read_report("reports/clustering/BM0828/LSI.json").metrics["leiden_ari"]  # doctest: +SKIP
    0.52
    """
    path = Path(os.fspath(path))
    try:
        return Report.from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise ValueError(f"{path}: not a report ({e})") from e


def collect_reports(out_dir, suite: str | None = None) -> pd.DataFrame:
    """Every report under ``out_dir`` (optionally of one suite) side by side: one row per
    suite, dataset and model; the suite's fixed metrics first, in their fixed order.

    Examples
    --------
    >>> collect_reports("reports", "clustering")[["model", "leiden_ari"]]  # doctest: +SKIP
    """
    root = Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of reports")
    name = _suite(suite) if suite is not None else None
    files = sorted((root / name).rglob("*.json") if name else root.rglob("*.json"))
    rows = [read_report(f).row() for f in files]
    if not rows:
        return pd.DataFrame(columns=["suite", "dataset", "model"])
    table = pd.DataFrame(rows)
    fixed = [m for s in ([name] if name else SUITES) for m in SUITE_METRICS[s]]
    cols = ["suite", "dataset", "model", *dict.fromkeys(c for c in fixed if c in table)]
    cols += [c for c in table.columns if c not in cols]
    return table[cols].sort_values(["suite", "dataset", "model"], kind="stable").reset_index(drop=True)


def format_reports(table: pd.DataFrame, columns=None) -> str:
    """A markdown table of collected reports (``columns``: which metrics; default all).

    Examples
    --------
    >>> print(format_reports(collect_reports("reports", "clustering"), ["leiden_ari"]))  # doctest: +SKIP
    """
    keep = ["suite", "dataset", "model", *(columns or [c for c in table.columns
                                                       if c not in ("suite", "dataset", "model")])]
    return table[[c for c in keep if c in table]].to_markdown(index=False, floatfmt=".3f") + "\n"

"""Cell-type annotation of a query: from a labelled reference, or from a model's own classifier.

With a ``reference``, both datasets are embedded by one model (:func:`~atacformer.tools.embed`)
and each query cell takes the majority label of its ``k`` nearest reference cells
(:func:`~atacformer.tools.transfer_labels`; confidence = the winner's share of the votes), the
usual label transfer of single-cell atlases (Stuart 2019; Lotfollahi 2022). Without one, a
fine-tuned model's classification head labels the cells (confidence = the largest class
probability). Either way a cell whose confidence is below ``min_confidence`` is called
``"unassigned"`` rather than given a guess.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from atacformer.errors import AtacformerError, VocabularyMismatchError
from atacformer.tools._embed import _check_columns, embed
from atacformer.tools._transfer import transfer_labels

logger = logging.getLogger(__name__)

__all__ = ["UNASSIGNED", "annotate", "annotation_scores"]

UNASSIGNED = "unassigned"
_CHUNK = 8192  # query cells read at once on the classifier path (backed AnnData)


def _check_vocabulary(adata: AnnData, model, which: str) -> None:
    """The columns of ``adata`` are the model's regions: their number (as :func:`embed`
    checks it) and, when both sides have coordinates, the regions themselves in order."""
    try:
        _check_columns(adata, model)
    except ValueError as err:
        raise VocabularyMismatchError(f"{which}: {err}") from err
    vocab = getattr(model, "vocab", None)
    if vocab is None:
        return
    from atacformer.errors import InputFormatError
    from atacformer.tokenizers._inputs import peak_vocabulary

    try:
        own = peak_vocabulary(adata)
    except InputFormatError:
        return  # columns without coordinates: only their number can be compared
    if own.region_hash() != vocab.region_hash():
        raise VocabularyMismatchError(
            f"{which}: its {adata.n_vars:,} columns are not the model's regions (other peaks, or the same "
            "peaks in another order); tokenize the cells into the model's vocabulary first "
            "(atacformer.tokenizers.tokenize_peak_matrix(adata, model.vocab))")


def _reference_labels(reference: AnnData, labels_key: str) -> pd.Series:
    """The reference's labels as strings, missing ones as NaN; errors for too few classes."""
    if labels_key not in reference.obs:
        raise KeyError(f"reference: labels_key={labels_key!r} is not an obs column "
                       f"(columns: {list(reference.obs.columns)})")
    raw = reference.obs[labels_key]
    missing = raw.isna().to_numpy()
    if missing.all():
        raise ValueError(f"reference: obs[{labels_key!r}] has no label (all {reference.n_obs:,} are missing)")
    if missing.any():
        logger.info("annotate: %d of %d reference cells have no %r label and are left out",
                    int(missing.sum()), reference.n_obs, labels_key)
    labels = pd.Series(np.where(missing, None, raw.astype(str).to_numpy()), index=reference.obs_names,
                       dtype=object)
    classes = sorted(labels.dropna().unique())
    if len(classes) < 2:
        raise ValueError(f"reference: obs[{labels_key!r}] has one class only ({classes[0]!r}); a reference "
                         "needs at least two cell types to tell apart")
    if UNASSIGNED in classes:
        raise ValueError(f"reference: {UNASSIGNED!r} is one of its labels, which annotate keeps for cells "
                         "below min_confidence; rename that class")
    return labels


def _has_head(model) -> bool:
    names = getattr(getattr(model, "config", None), "label_names", None)
    return bool(names)


def _embeddings(query: AnnData, reference: AnnData, model, use_rep: str, batch_size: int, device):
    """Query and reference vectors in one space: embedded by ``model``, or the ``obsm[use_rep]``
    both already hold when there is no model."""
    if model is None:
        lacking = [w for w, a in (("query", query), ("reference", reference)) if use_rep not in a.obsm]
        if lacking:
            raise ValueError(f"{' and '.join(lacking)}: no obsm[{use_rep!r}]; pass a model to embed the "
                             f"cells, or compute obsm[{use_rep!r}] in both")
        x_q = np.asarray(query.obsm[use_rep], dtype=np.float32)
        x_r = np.asarray(reference.obsm[use_rep], dtype=np.float32)
        if x_q.ndim != 2 or x_r.ndim != 2 or x_q.shape[1] != x_r.shape[1]:
            raise ValueError(f"obsm[{use_rep!r}] has {x_r.shape[1:]} dims in the reference but {x_q.shape[1:]} "
                             "in the query; both must come from one embedding")
        return x_q, x_r
    for adata in (reference, query):
        embed(adata, model, batch_size=batch_size, device=device, key_added=use_rep)
    return (np.asarray(query.obsm[use_rep], dtype=np.float32),
            np.asarray(reference.obsm[use_rep], dtype=np.float32))


def _from_reference(query, reference, labels, model, use_rep, k, batch_size, device):
    """(labels, confidence) per query cell by kNN vote; NaN confidence where the query cell has
    no finite embedding."""
    x_q, x_r = _embeddings(query, reference, model, use_rep, batch_size, device)
    why = "(NaN or infinite: the model's weights are not finite, or no cell has a token in its vocabulary)"
    ok_q = np.isfinite(x_q).all(1)
    if not ok_q.any():
        raise AtacformerError(f"query: no cell has a finite embedding {why}")
    bad_r = ~np.isfinite(x_r).all(1)
    if bad_r.all():
        raise AtacformerError(f"reference: no cell has a finite embedding {why}")
    if bad_r.any():
        logger.warning("annotate: %d reference cells have no finite embedding (no token in the vocabulary) "
                       "and are left out", int(bad_r.sum()))
    ok_r = ~bad_r & labels.notna().to_numpy()
    if len(set(labels[ok_r])) < 2:
        raise AtacformerError("reference: fewer than two cell types remain among the cells with a finite "
                              "embedding and a label")
    # transfer_labels on throwaway containers: the user's obs gets only annotate's own columns
    ref = AnnData(obs=pd.DataFrame({"label": pd.Categorical(labels[ok_r].to_numpy())},
                                   index=np.arange(int(ok_r.sum())).astype(str)), obsm={"x": x_r[ok_r]})
    q = AnnData(obs=pd.DataFrame(index=np.arange(int(ok_q.sum())).astype(str)), obsm={"x": x_q[ok_q]})
    transfer_labels(ref, q, "x", "label", k=k, key_added="label")
    pred = np.full(query.n_obs, None, dtype=object)
    conf = np.full(query.n_obs, np.nan)
    pred[ok_q] = q.obs["label"].astype(str).to_numpy()
    conf[ok_q] = q.obs["label_confidence"].to_numpy()
    return pred, conf, sorted(set(labels[ok_r]))


def _from_head(query, model, batch_size, device):
    """(labels, confidence) per query cell from the model's classification head."""
    from atacformer.models import predict_label_probabilities
    names = [str(v) for v in model.config.label_names]
    if UNASSIGNED in names:
        raise ValueError(f"the model's classes include {UNASSIGNED!r}, which annotate keeps for cells below "
                         "min_confidence")
    probs = np.empty((query.n_obs, len(names)), dtype=np.float64)
    for s in range(0, query.n_obs, _CHUNK):
        chunk = sp.csr_matrix(query.X[s: s + _CHUNK])
        p = np.asarray(predict_label_probabilities(model, chunk, batch_size=batch_size, device=device))
        if p.shape != (chunk.shape[0], len(names)):
            raise AtacformerError(f"the classifier returned probabilities of shape {p.shape} for "
                                  f"{chunk.shape[0]} cells and {len(names)} classes")
        probs[s: s + chunk.shape[0]] = p
    ok = np.isfinite(probs).all(1)
    if not ok.any():
        raise AtacformerError("query: the classifier gave no cell finite probabilities")
    best = np.argmax(np.where(ok[:, None], probs, 0.0), axis=1)
    pred = np.where(ok, np.asarray(names, dtype=object)[best], None)
    conf = np.where(ok, probs[np.arange(query.n_obs), best], np.nan)
    return pred, np.clip(conf, 0.0, 1.0), names


def annotation_scores(truth, predicted) -> dict:
    """Per-type precision, recall, F1 and support, macro-F1, accuracy and the fraction
    unassigned, with scikit-learn's metrics.

    Every cell with a true label counts; ``"unassigned"`` is a wrong call (it lowers the recall
    of the cell's true type). Types are those of ``truth``; a predicted type the truth does
    not have only makes its cells wrong.

    Parameters
    ----------
    truth, predicted
        Per-cell labels (missing truth: the cell is not scored).

    Returns
    -------
    dict
        ``per_type`` (DataFrame indexed by type: precision, recall, f1, support), ``macro_f1``,
        ``accuracy``, ``fraction_unassigned``, ``n_scored``.

    Examples
    --------
    >>> s = annotation_scores(["a", "a", "b", "b"], ["a", "unassigned", "b", "a"])
    >>> round(s["macro_f1"], 3), s["fraction_unassigned"]
    (0.583, 0.25)
    """
    from sklearn.metrics import precision_recall_fscore_support

    truth = pd.Series(np.asarray(truth, dtype=object))
    predicted = pd.Series(np.asarray(predicted, dtype=object))
    scored = truth.notna().to_numpy()
    y_true = truth[scored].astype(str).to_numpy()
    y_pred = predicted[scored].astype(str).to_numpy()
    types = sorted(set(y_true))
    p, r, f, n = precision_recall_fscore_support(y_true, y_pred, labels=types, zero_division=0)
    per_type = pd.DataFrame({"precision": p, "recall": r, "f1": f, "support": n.astype(int)},
                            index=pd.Index(types, name="type"))
    return {"per_type": per_type, "macro_f1": float(np.mean(f)) if len(f) else float("nan"),
            "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else float("nan"),
            "fraction_unassigned": float(np.mean(y_pred == UNASSIGNED)) if len(y_pred) else float("nan"),
            "n_scored": int(scored.sum())}


def annotate(
    query: AnnData,
    model=None,
    *,
    reference: AnnData | None = None,
    labels_key: str = "cell_type",
    use_rep: str = "X_atacformer",
    k: int = 15,
    min_confidence: float = 0.5,
    key_added: str = "predicted_label",
    confidence_key: str = "prediction_confidence",
    truth_key: str | None = None,
    batch_size: int = 64,
    device=None,
) -> dict | None:
    """Label every query cell with a cell type, or ``"unassigned"`` when the call is unsure.

    Parameters
    ----------
    query
        Cells to label, tokenized into the model's vocabulary (columns = its regions).
    model
        An atacformer model (:func:`atacformer.models.load_model`). With a ``reference`` it
        embeds both datasets; without one it must have a classification head
        (``model.config.label_names``), run by
        ``atacformer.models.predict_label_probabilities``. ``None`` with a reference whose
        ``obsm[use_rep]`` and the query's already share one embedding.
    reference
        Labelled cells in the same vocabulary; each query cell gets the majority label of its
        ``k`` nearest reference cells. Takes precedence over a model's head. Cells without a
        label are left out (their number is logged). With a model, ``obsm[use_rep]`` of
        both datasets is (re)written by :func:`atacformer.tools.embed`.
    labels_key
        ``reference.obs`` column of the labels (compared as strings).
    use_rep
        ``obsm`` key of the embedding shared by query and reference.
    k
        Reference neighbours voting.
    min_confidence
        Cells whose confidence (vote share, or largest class probability) is below it are
        ``"unassigned"``; ``0`` assigns every cell.
    key_added, confidence_key
        ``obs`` columns written: the label (categorical: the classes, then ``"unassigned"``)
        and the confidence in [0, 1] (0 for a cell without a finite embedding, which is
        unassigned).
    truth_key
        ``query.obs`` column of true labels: score the annotation (see
        :func:`annotation_scores`) into the return value and ``uns["annotation"]``.
    batch_size, device
        As in :func:`atacformer.tools.embed`.

    Returns
    -------
    dict or None
        With ``truth_key``: ``per_type`` (precision, recall, f1, support per true type),
        ``macro_f1``, ``accuracy``, ``fraction_unassigned``, ``n_scored``.

    Raises
    ------
    KeyError
        ``labels_key`` is not in the reference, or ``truth_key`` not in the query.
    ValueError
        A reference with fewer than two labelled classes, bad ``k`` / ``min_confidence``,
        embeddings of different widths, no source of labels (a model without a head and no
        reference); :class:`~atacformer.errors.VocabularyMismatchError` when query or
        reference columns are not the model's regions. These are raised before any
        embedding, and nothing is written to either AnnData.
    atacformer.errors.AtacformerError
        No query (or reference) cell has a finite embedding, or fewer than two types remain
        among the reference cells that have one; ``obs`` and ``uns`` are left as they were.

    Examples
    --------
    >>> from atacformer import tools as tl
    >>> tl.annotate(query, model, reference=ref, labels_key="cell_type")    # doctest: +SKIP
    >>> query.obs["predicted_label"].value_counts()                          # doctest: +SKIP
    >>> tl.annotate(query, fine_tuned_model)  # its own classifier           # doctest: +SKIP
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
    if truth_key is not None and truth_key not in query.obs:
        raise KeyError(f"query: truth_key={truth_key!r} is not an obs column (columns: {list(query.obs.columns)})")
    if reference is None and model is None:
        raise ValueError("annotate needs a labelled reference (reference=, labels_key=) or a model with a "
                         "classification head")
    if reference is None and not _has_head(model):
        raise ValueError(f"the model ({type(model).__name__}) has no classification head (no "
                         "config.label_names); pass a labelled reference (reference=, labels_key=)")
    if model is not None:
        _check_vocabulary(query, model, "query")
    if reference is not None:
        labels = _reference_labels(reference, labels_key)
        if model is not None:
            _check_vocabulary(reference, model, "reference")
        pred, conf, classes = _from_reference(query, reference, labels, model, use_rep, k, batch_size, device)
        source = "reference"
    else:
        pred, conf, classes = _from_head(query, model, batch_size, device)
        source = "classifier"

    no_vector = np.isnan(conf)
    conf = np.where(no_vector, 0.0, conf)
    unsure = no_vector | (conf < min_confidence)
    labels_out = np.where(unsure, UNASSIGNED, pred)
    query.obs[key_added] = pd.Categorical(labels_out, categories=[*classes, UNASSIGNED])
    query.obs[confidence_key] = conf.astype(np.float64)
    info = {"source": source, "labels_key": labels_key if source == "reference" else "",
            "use_rep": use_rep if source == "reference" else "", "k": int(k),
            "min_confidence": float(min_confidence), "n_cells": int(query.n_obs),
            "n_assigned": int((~unsure).sum()), "n_unassigned": int(unsure.sum()),
            "n_without_embedding": int(no_vector.sum()), "classes": list(classes)}
    scores = None
    if truth_key is not None:
        scores = annotation_scores(query.obs[truth_key], labels_out)
        info.update(truth_key=truth_key, macro_f1=scores["macro_f1"], accuracy=scores["accuracy"],
                    fraction_unassigned=scores["fraction_unassigned"], n_scored=scores["n_scored"],
                    per_type=scores["per_type"].reset_index())
    query.uns["annotation"] = info
    if no_vector.any():
        logger.warning("annotate: %d query cells have no finite embedding and are unassigned", int(no_vector.sum()))
    logger.info("annotate (%s): %d cells, %d assigned, %d unassigned (confidence < %g)", source, query.n_obs,
                info["n_assigned"], info["n_unassigned"], min_confidence)
    return scores

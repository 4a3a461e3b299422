"""Cell-type annotation (``tl.annotate``) and its confusion matrix (``pl.confusion_matrix``).

Real labelled cells are split into reference and query halves (stratified, fixed seed). The
model is the LSI-initialised profile model exported before any step (``max_steps=0``), fitted
on the reference half only. Votes, confidences and scores are checked against scikit-learn's
``KNeighborsClassifier`` on the same embedding and against counts made here.

Measured here (split seed 0, k=15, min_confidence=0): Schep 600 with that model, macro-F1
0.579 (scikit-learn kNN 0.571); BM0828 with LSI (no model), macro-F1 0.704 (scikit-learn
0.707). The bounds below sit about 0.1 under them.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KNeighborsClassifier

from atacformer import plotting as pl
from atacformer import tools as tl
from atacformer.errors import VocabularyMismatchError

K = 15


def stratified_halves(labels, seed: int = 0) -> np.ndarray:
    """Boolean mask of the reference half: per label, a seeded half of its cells."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).astype(str)
    is_ref = np.zeros(len(labels), dtype=bool)
    for v in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == v))
        is_ref[idx[: len(idx) // 2]] = True
    return is_ref


@pytest.fixture(scope="module")
def schep_halves(schep):
    is_ref = stratified_halves(schep.obs["cell_type"])
    return schep[is_ref].copy(), schep[~is_ref].copy()


@pytest.fixture(scope="module")
def schep_model(schep_halves, tmp_path_factory):
    """The LSI-initialised profile model of the reference half, before any training step."""
    from atacformer.models import load_model
    from atacformer.train import TrainConfig, pretrain

    out = tmp_path_factory.mktemp("annotate") / "run"
    pretrain(TrainConfig(out=str(out), recipe="lsi-init-profile", max_steps=0, progress=False,
                         tensorboard=False), data=schep_halves[0])
    yield load_model(out / "model")


@pytest.fixture(scope="module")
def annotated(schep_halves, schep_model):
    """Query and reference after one annotation with the model (every cell assigned)."""
    ref, query = schep_halves[0].copy(), schep_halves[1].copy()
    scores = tl.annotate(query, schep_model, reference=ref, truth_key="cell_type", min_confidence=0.0, k=K)
    return ref, query, scores


def _sklearn_knn(ref, query, use_rep="X_atacformer"):
    knn = KNeighborsClassifier(n_neighbors=K).fit(ref.obsm[use_rep], ref.obs["cell_type"].astype(str))
    return knn.predict(query.obsm[use_rep]), knn.predict_proba(query.obsm[use_rep])


def _macro_f1(truth, pred) -> float:
    """Per-type F1 counted here, averaged over the true types."""
    f1 = []
    for t in np.unique(truth):
        tp = np.sum((pred == t) & (truth == t))
        precision = tp / max(np.sum(pred == t), 1)
        recall = tp / np.sum(truth == t)
        f1.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    return float(np.mean(f1))


def test_split_is_stratified_and_fixed(schep, schep_halves):
    ref, query = schep_halves
    assert set(ref.obs_names).isdisjoint(query.obs_names) and ref.n_obs + query.n_obs == schep.n_obs
    counts = pd.crosstab(pd.concat([ref.obs, query.obs])["cell_type"],
                         np.r_[np.zeros(ref.n_obs), np.ones(query.n_obs)])
    assert (counts[0.0] - counts[1.0]).abs().max() <= 1  # 25 / 25 of each of the 12 types
    assert (stratified_halves(schep.obs["cell_type"]) == schep.obs_names.isin(ref.obs_names)).all()


def test_reference_recovers_labels_like_sklearn_knn(annotated, schep_model, record_property):
    ref, query, scores = annotated
    truth = query.obs["cell_type"].astype(str).to_numpy()
    pred = query.obs["predicted_label"].astype(str).to_numpy()
    sk_pred, sk_proba = _sklearn_knn(ref, query)
    record_property("annotate_macro_f1_schep", scores["macro_f1"])
    record_property("sklearn_knn_macro_f1_schep", _macro_f1(truth, sk_pred))
    assert scores["macro_f1"] > 0.45  # measured 0.579; 12 balanced types: chance about 0.08
    assert scores["macro_f1"] == pytest.approx(_macro_f1(truth, pred), abs=1e-12)
    assert abs(scores["macro_f1"] - _macro_f1(truth, sk_pred)) < 0.05
    # the vote share is scikit-learn's uniform-weight probability of the winning class
    np.testing.assert_allclose(query.obs["prediction_confidence"], sk_proba.max(1), atol=1e-12)
    # where scikit-learn's top class is not tied, both pick it
    top = np.sort(sk_proba, axis=1)
    clear = top[:, -1] > top[:, -2]
    assert clear.mean() > 0.8 and (pred[clear] == sk_pred[clear]).all()
    recall = scores["per_type"]["recall"]
    for t in np.unique(truth):
        assert recall[t] == pytest.approx(np.mean(pred[truth == t] == t))
    assert (scores["per_type"]["support"] == 25).all() and scores["fraction_unassigned"] == 0.0
    assert query.obsm["X_atacformer"].shape == (300, schep_model.config.hidden_size)


def test_precomputed_lsi_without_model_on_bm0828(bm0828, record_property):
    a = bm0828.copy()
    tl.lsi(a)
    is_ref = stratified_halves(a.obs["cell_type"])
    ref, query = a[is_ref].copy(), a[~is_ref].copy()
    scores = tl.annotate(query, reference=ref, use_rep="X_lsi", truth_key="cell_type", min_confidence=0.0)
    truth = query.obs["cell_type"].astype(str).to_numpy()
    sk_pred, _ = _sklearn_knn(ref, query, "X_lsi")
    record_property("annotate_macro_f1_bm0828_lsi", scores["macro_f1"])
    assert scores["macro_f1"] > 0.6  # measured 0.704; 7 types: chance about 0.14
    assert abs(scores["macro_f1"] - _macro_f1(truth, sk_pred)) < 0.05


def test_high_min_confidence_leaves_cells_unassigned(annotated):
    ref, query, _ = annotated
    q = query.copy()
    truth = q.obs["cell_type"].astype(str).to_numpy()
    conf = query.obs["prediction_confidence"].to_numpy()
    unassigned, accuracy_assigned = [], []
    for threshold in (0.0, 0.5, 0.9):
        s = tl.annotate(q, reference=ref, truth_key="cell_type", min_confidence=threshold)  # obsm reused
        pred = q.obs["predicted_label"].astype(str).to_numpy()
        assert "unassigned" in q.obs["predicted_label"].cat.categories
        assert ((pred == "unassigned") == (conf < threshold)).all()
        assert s["fraction_unassigned"] == pytest.approx(np.mean(conf < threshold))
        unassigned.append(s["fraction_unassigned"])
        kept = pred != "unassigned"
        accuracy_assigned.append(np.mean(pred[kept] == truth[kept]))
        assert s["accuracy"] == pytest.approx(np.mean(pred == truth))  # unassigned counts as wrong
        assert q.uns["annotation"]["n_unassigned"] == int((~kept).sum())
    assert unassigned[0] == 0.0 and 0.0 < unassigned[1] < unassigned[2]
    assert accuracy_assigned[2] > accuracy_assigned[0]  # surer calls are more often right


def test_missing_reference_labels_are_dropped_and_logged(annotated, caplog):
    ref, query, _ = annotated
    r, q = ref.copy(), query.copy()
    labels = r.obs["cell_type"].astype(object).to_numpy()
    labels[:10] = np.nan
    r.obs["cell_type"] = labels
    with caplog.at_level(logging.INFO, logger="atacformer.tools._annotate"):
        tl.annotate(q, reference=r, min_confidence=0.0)
    assert "10 of 300 reference cells have no 'cell_type' label" in caplog.text
    assert q.obs["predicted_label"].notna().all()


def _bad_inputs(ref, query, model):
    """name -> (call, expected error, message pattern)."""
    one_class = ref.copy()
    one_class.obs["cell_type"] = "K562"
    all_nan = ref.copy()
    all_nan.obs["cell_type"] = np.nan
    narrow = query.copy()
    narrow.obsm["X_atacformer"] = narrow.obsm["X_atacformer"][:, :5]
    wrong_cols = query[:, :-1].copy()
    reordered = query[:, ::-1].copy()
    return {
        "unknown labels_key": (lambda q: tl.annotate(q, model, reference=ref, labels_key="nope"),
                               KeyError, "labels_key='nope'"),
        "one class": (lambda q: tl.annotate(q, model, reference=one_class), ValueError, "one class only"),
        "all labels NaN": (lambda q: tl.annotate(q, model, reference=all_nan), ValueError, "has no label"),
        "query columns": (lambda q: tl.annotate(wrong_cols, model, reference=ref), VocabularyMismatchError,
                          "query: adata has 5,035 regions"),
        "query order": (lambda q: tl.annotate(reordered, model, reference=ref), VocabularyMismatchError,
                        "not the model's regions"),
        "reference columns": (lambda q: tl.annotate(q, model, reference=ref[:, :-1].copy()),
                              VocabularyMismatchError, "reference: adata has 5,035"),
        "widths": (lambda q: tl.annotate(narrow, reference=ref), ValueError, "one embedding"),
        "no head, no reference": (lambda q: tl.annotate(q, model), ValueError, "pass a labelled reference"),
        "nothing": (lambda q: tl.annotate(q), ValueError, "needs a labelled reference"),
        "truth_key": (lambda q: tl.annotate(q, model, reference=ref, truth_key="nope"), KeyError, "truth_key"),
    }


@pytest.mark.parametrize("case", ["unknown labels_key", "one class", "all labels NaN", "query columns",
                                  "query order", "reference columns", "widths", "no head, no reference",
                                  "nothing", "truth_key"])
def test_bad_inputs_raise_and_write_nothing(annotated, schep_model, case):
    ref, query, _ = annotated
    ref = ref.copy()
    q = query.copy()
    q.obs = q.obs[["cell_type"]]
    del q.uns["annotation"]
    call, error, pattern = _bad_inputs(ref, q, schep_model)[case]
    before = {"obs": list(q.obs.columns), "obsm": q.obsm["X_atacformer"].copy(), "ref_obs": list(ref.obs.columns)}
    with pytest.raises(error, match=pattern):
        call(q)
    assert list(q.obs.columns) == before["obs"] and "annotation" not in q.uns
    assert list(ref.obs.columns) == before["ref_obs"]
    np.testing.assert_array_equal(q.obsm["X_atacformer"], before["obsm"])


def test_classifier_head_without_reference(schep_halves, monkeypatch):
    """A model with ``config.label_names`` is run through
    ``atacformer.models.predict_label_probabilities``; confidence is the top probability."""
    import atacformer.models

    query = schep_halves[1].copy()
    names = ["B", "T", "NK"]
    probs = np.random.default_rng(0).dirichlet(np.ones(3) * 0.7, size=query.n_obs)
    seen = {}

    def fake_predict(model, X, batch_size=64, device=None):
        seen["shape"], seen["batch_size"] = X.shape, batch_size
        return probs[: X.shape[0]]

    monkeypatch.setattr(atacformer.models, "predict_label_probabilities", fake_predict, raising=False)
    model = SimpleNamespace(config=SimpleNamespace(label_names=names, n_regions=query.n_vars))
    tl.annotate(query, model, min_confidence=0.6, batch_size=7)
    assert seen == {"shape": (query.n_obs, query.n_vars), "batch_size": 7}
    best = np.asarray(names)[probs.argmax(1)]
    expected = np.where(probs.max(1) < 0.6, "unassigned", best)
    assert (query.obs["predicted_label"].astype(str).to_numpy() == expected).all()
    np.testing.assert_allclose(query.obs["prediction_confidence"], probs.max(1))
    assert list(query.obs["predicted_label"].cat.categories) == [*names, "unassigned"]
    assert query.uns["annotation"]["source"] == "classifier"


def test_annotation_survives_h5ad(annotated, tmp_path):
    _, query, scores = annotated
    query.write_h5ad(tmp_path / "q.h5ad")
    back = ad.read_h5ad(tmp_path / "q.h5ad")
    assert back.obs["predicted_label"].dtype == "category"
    assert back.uns["annotation"]["macro_f1"] == pytest.approx(scores["macro_f1"])
    assert list(back.uns["annotation"]["per_type"]["type"]) == list(scores["per_type"].index)


def test_confusion_matrix_is_row_normalised_counts(annotated, tmp_path):
    _, query, _ = annotated
    q = query.copy()
    tl.annotate(q, reference=annotated[0], min_confidence=0.6)  # some unassigned: an extra column
    png = tmp_path / "sub" / "confusion.png"
    fig = pl.confusion_matrix(q, "cell_type", save=png)
    table = pd.crosstab(q.obs["cell_type"].astype(str), q.obs["predicted_label"].astype(str))
    types = sorted(q.obs["cell_type"].astype(str).unique())
    cols = types + ["unassigned"]
    expected = table.reindex(index=types, columns=cols, fill_value=0).to_numpy(float)
    expected /= expected.sum(1, keepdims=True)
    image = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_allclose(image, expected)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == cols
    assert [t.get_text() for t in ax.get_yticklabels()][0] == f"{types[0]} (n=25)"
    assert ax.get_xlabel() == "predicted (predicted_label)" and ax.get_ylabel() == "true (cell_type)"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(png.parent.iterdir()) == [png]  # no temporary file left
    with pytest.raises(KeyError, match="nope"):
        pl.confusion_matrix(q, "nope")

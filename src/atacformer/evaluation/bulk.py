"""Bulk region sets as documents: embed each region set as one "cell", then classify its
metadata with gradient-boosted trees under cross-validation.

A region set is a BED / narrowPeak file (:func:`bed_region_sets`, one row per file through
:func:`atacformer.tokenizers.tokenize_bed`) or a pseudo-bulk set drawn from a labelled
single-cell peak matrix (:func:`pseudobulk_region_sets`: a random group of 10-50 cells of one
type, and the regions open in any of them). Every set is then a binary row over the same
regions as the cells, so the package's tools embed it as they embed a cell.

:func:`run_bulk_benchmark` compares, on the same sets and the same stratified folds
(:func:`classify_region_sets`, XGBoost as in the LeRoy 2025 dissertation; Chen 2016
XGBoost):

- ``atacformer``: a model pretrained self-supervised (package defaults, no label) on the
  single cells of the same matrix, then :func:`atacformer.tools.embed` of the sets;
- ``atacformer untrained``: the same recipe exported at ``max_steps=0`` (random init);
- ``LSI``: :func:`atacformer.tools.lsi` of the sets (the package's one TF-IDF);
- ``scEmbed``: :func:`atacformer.tools.scembed` trained on the cells, then the sets' mean
  region vectors by :func:`atacformer.tools.scembed_project`.

A pseudo-bulk set is far longer than a cell: on BM0828 a set of 10-50 cells holds a median
24,793 of the 35,983 peaks (a cell 2,025), on Schep 600 4,663 of the 5,036 peaks, so the
union nearly saturates there. Longer than the model's context (4,096 tokens with the
``cpu`` preset), a set is embedded from a seeded random subset of its tokens, as
:func:`atacformer.models.embed_cells` does for any long cell.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from atacformer.evaluation.harness import LABEL_KEY, load_labelled_sets, tokenize_sets

logger = logging.getLogger(__name__)

__all__ = ["bed_region_sets", "classify_region_sets", "pseudobulk_region_sets", "region_set_folds",
           "run_bulk_benchmark", "format_bulk_table"]

#: The labelled sets :func:`run_bulk_benchmark` is run on by ``benchmarks/bench_bulk.py``.
BULK_SETS = ("BM0828", "Schep600")


def _binary(x) -> sp.csr_matrix:
    m = sp.csr_matrix(x, copy=True)
    m.eliminate_zeros()
    m = sp.csr_matrix((np.ones(m.nnz, np.float32), m.indices, m.indptr), shape=m.shape)
    m.sort_indices()
    return m


def pseudobulk_region_sets(adata: AnnData, label_key: str = LABEL_KEY, *, sets_per_type: int = 30,
                           min_cells: int = 10, max_cells: int = 50, seed: int = 0, layer: str | None = None,
                           return_groups: bool = False):
    """Pseudo-bulk region sets: random groups of cells of one type, and the regions open in
    any cell of the group.

    For each type (in sorted order) ``sets_per_type`` groups are drawn; a group's size is
    uniform in ``[min_cells, min(max_cells, n_type)]`` and its cells are drawn without
    replacement from that type (different groups may share cells). A type with fewer than
    ``min_cells`` cells gives no set (logged).

    Groups of one type overlap (on BM0828 a group of up to 50 cells is drawn from 51-128),
    so under cross-validation a held-out set shares many cells with training sets of its
    type: the task measures how well an embedding keeps a set's type, not generalisation
    to unseen cells.

    Parameters
    ----------
    adata
        Cells x regions counts (or binary) in ``X`` (or ``layers[layer]``), labels in
        ``obs[label_key]``.
    label_key
        ``obs`` column of the cell types.
    sets_per_type, min_cells, max_cells
        Groups per type and their size bounds (inclusive).
    seed
        Seed of the group sizes and members: one seed, one set of groups.
    layer
        Read from this layer instead of ``X``.
    return_groups
        Also return the groups (a list of sorted cell-index arrays, one per set).

    Returns
    -------
    sets, labels[, groups]
        ``(n_sets, n_regions)`` binary float32 CSR, the sets' labels (``(n_sets,)`` str),
        and with ``return_groups`` the cell indices of each set.

    Examples
    --------
    >>> import anndata as ad, pandas as pd
    >>> x = sp.random(40, 30, density=0.1, format="csr", random_state=0)
    >>> a = ad.AnnData(x, obs=pd.DataFrame({"cell_type": ["a", "b"] * 20}, index=[f"c{i}" for i in range(40)]))
    >>> sets, labels = pseudobulk_region_sets(a, sets_per_type=3, min_cells=5, max_cells=10)
    >>> sets.shape, labels.tolist()
    ((6, 30), ['a', 'a', 'a', 'b', 'b', 'b'])
    """
    if not 1 <= min_cells <= max_cells:
        raise ValueError(f"need 1 <= min_cells <= max_cells, got {min_cells}, {max_cells}")
    if sets_per_type < 1:
        raise ValueError(f"sets_per_type must be >= 1, got {sets_per_type}")
    if label_key not in adata.obs:
        raise KeyError(f"obs has no column {label_key!r} (columns: {list(adata.obs.columns)})")
    b = _binary(adata.layers[layer] if layer is not None else adata.X)
    cell_labels = adata.obs[label_key].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    groups, labels = [], []
    for t in np.unique(cell_labels):
        members = np.flatnonzero(cell_labels == t)
        if members.size < min_cells:
            logger.warning("pseudobulk: type %r has %d cells (< min_cells=%d): no set", t, members.size, min_cells)
            continue
        hi = min(max_cells, members.size)
        for _ in range(sets_per_type):
            size = int(rng.integers(min_cells, hi + 1))
            groups.append(np.sort(rng.choice(members, size, replace=False)))
            labels.append(t)
    if not groups:
        raise ValueError(f"pseudobulk: no type has min_cells={min_cells} cells")
    rows = np.repeat(np.arange(len(groups)), [g.size for g in groups])
    member = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, np.concatenate(groups))),
                           shape=(len(groups), b.shape[0]))
    sets = _binary(member @ b)
    labels = np.asarray(labels, dtype=object).astype(str)
    return (sets, labels, groups) if return_groups else (sets, labels)


def bed_region_sets(paths, vocab, genome=None) -> sp.csr_matrix:
    """Region sets of BED / narrowPeak files: one binary row per file, its columns the
    vocabulary regions overlapped by any of the file's regions
    (:func:`atacformer.tokenizers.tokenize_bed`).

    Parameters
    ----------
    paths
        BED-like files (gzipped or not), one set each.
    vocab
        :class:`atacformer.vocab.Vocabulary` (a model's, or e.g. genome bins).
    genome
        Checked against the files' coordinates (default ``vocab.genome``).

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(len(paths), vocab.n_regions)`` binary float32; wrap it as
        ``AnnData(sets, var=vocab.to_dataframe())`` to embed it.

    Examples
    --------
    >>> from atacformer.vocab import Vocabulary
    >>> sets = bed_region_sets(["a.narrowPeak.gz", "b.bed"], Vocabulary.from_bins("hg38", 5000))  # doctest: +SKIP
    >>> sets.shape  # doctest: +SKIP
    (2, 617665)
    """
    from atacformer.tokenizers.regions import tokenize_bed

    ids = [np.asarray(tokenize_bed(p, vocab, genome=genome), dtype=np.int64) for p in paths]
    indptr = np.concatenate([[0], np.cumsum([i.size for i in ids])])
    indices = np.concatenate(ids) if ids else np.empty(0, np.int64)
    return sp.csr_matrix((np.ones(indices.size, np.float32), indices, indptr), shape=(len(ids), vocab.n_regions))


def region_set_folds(labels, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Stratified fold of each set (``(n,)`` int in ``[0, folds)``), the one split that
    :func:`classify_region_sets` uses for every embedding.

    Examples
    --------
    >>> region_set_folds(["a"] * 4 + ["b"] * 4, folds=2).tolist().count(0)
    4
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels).astype(str)
    _, counts = np.unique(labels, return_counts=True)
    if counts.min() < folds:
        raise ValueError(f"every label needs at least folds={folds} sets; the rarest has {counts.min()}")
    fold = np.empty(labels.size, np.int64)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(skf.split(np.zeros(labels.size), labels)):
        fold[test] = k
    return fold


def _xgb(n_classes: int, seed: int, params: dict | None):
    from xgboost import XGBClassifier

    kw = dict(n_estimators=100, max_depth=4, learning_rate=0.1, subsample=0.8, colsample_bytree=0.8,
              tree_method="hist", max_bin=64, n_jobs=1, random_state=seed, verbosity=0)
    if n_classes > 2:
        kw["objective"] = "multi:softprob"
    kw.update(params or {})
    return XGBClassifier(**kw)


def classify_region_sets(embeddings: dict, labels, *, folds: int = 5, seed: int = 0,
                         xgb_params: dict | None = None) -> pd.DataFrame:
    """Cross-validated XGBoost classification of region-set labels from each embedding.

    Every embedding is scored on the same stratified folds (:func:`region_set_folds`): an
    ``xgboost.XGBClassifier`` (100 trees of depth 4, learning rate 0.1, row and column
    subsampling 0.8, 64 histogram bins; as in the LeRoy 2025 dissertation, Chen 2016
    XGBoost) is fit on the other folds and predicts the held-out one. NaN entries (e.g. a
    set with no token) are left to XGBoost's missing value handling.

    One thread and 64 bins by default: fitting 288 sets x 128 dims x 12 classes took 2.4 s
    with one thread and 64 bins, 8.3 s with 256 bins (XGBoost's default) and 17-31 s with
    ``n_jobs=2`` on 2 busy cores (threads contending with other work on such small
    trees); pass ``xgb_params={"n_jobs": 2}`` on an idle machine. With a few hundred sets,
    64 bins still leave several sets per bin.

    Parameters
    ----------
    embeddings
        name -> ``(n_sets, d)`` array, rows in the order of ``labels``.
    labels
        ``(n_sets,)`` labels (each needs at least ``folds`` sets).
    folds
        Number of stratified folds.
    seed
        Seed of the folds and of XGBoost.
    xgb_params
        Overrides of the ``XGBClassifier`` arguments.

    Returns
    -------
    pandas.DataFrame
        One row per embedding: ``embedding``, ``dims``, ``accuracy`` and ``accuracy_sd``,
        ``macro_f1`` and ``macro_f1_sd`` (mean and standard deviation over the folds),
        ``folds``. ``table.attrs["fold"]`` lists the fold of each set.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(["a", "b"], 20)
    >>> x = rng.normal(size=(40, 3)) + (y == "b")[:, None] * 5
    >>> t = classify_region_sets({"x": x}, y, folds=4)
    >>> bool(t.loc[0, "accuracy"] > 0.9), len(t.attrs["fold"])
    (True, 40)
    """
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import LabelEncoder

    labels = np.asarray(labels).astype(str)
    y = LabelEncoder().fit_transform(labels)
    n_classes = int(y.max()) + 1
    fold = region_set_folds(labels, folds, seed)
    rows = []
    for name, emb in embeddings.items():
        x = np.asarray(emb, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != labels.size:
            raise ValueError(f"embedding {name!r} has shape {x.shape}; expected ({labels.size}, d)")
        acc, f1 = [], []
        for k in range(folds):
            test = fold == k
            clf = _xgb(n_classes, seed, xgb_params)
            clf.fit(x[~test], y[~test])
            pred = np.asarray(clf.predict(x[test])).astype(np.int64).ravel()
            acc.append(accuracy_score(y[test], pred))
            f1.append(f1_score(y[test], pred, average="macro", labels=np.arange(n_classes), zero_division=0))
        rows.append({"embedding": name, "dims": x.shape[1], "accuracy": float(np.mean(acc)),
                     "accuracy_sd": float(np.std(acc)), "macro_f1": float(np.mean(f1)),
                     "macro_f1_sd": float(np.std(f1)), "folds": folds})
    table = pd.DataFrame(rows)
    table.attrs["fold"] = fold.tolist()  # a list: pandas compares attrs when concatenating tables
    return table


def _train(out: Path, cells: AnnData, seed: int, minutes: float | None, steps: int | None, overrides: dict):
    from atacformer.evaluation.finetune import _train as train

    kw = dict(overrides)
    if steps is not None:
        kw["max_steps"] = steps
    return train(out, cells, minutes, seed, **kw)


def run_bulk_benchmark(dataset, *, data_dir=None, out_dir=None, label_key: str = LABEL_KEY,
                       max_cells: int | None = None, sets_per_type: int = 30, min_cells: int = 10,
                       max_cells_per_set: int = 50, folds: int = 5, pretrain_minutes: float | None = 3.0,
                       pretrain_steps: int | None = None, train_overrides: dict | None = None,
                       scembed_epochs: int = 10, n_components: int = 30, untrained: bool = True,
                       xgb_params: dict | None = None, seed: int = 0, say=logger.info) -> pd.DataFrame:
    """Pseudo-bulk region sets of a labelled peak matrix, embedded four ways and classified.

    The cells are tokenized into their own peaks
    (:func:`atacformer.evaluation.harness.tokenize_sets`), pseudo-bulk sets are drawn
    (:func:`pseudobulk_region_sets`), each embedding of the sets is made by the package's
    own functions (module notes) and all are scored by :func:`classify_region_sets` on the
    same folds. Labels are only used to draw the sets and to score them; no model sees one.

    Parameters
    ----------
    dataset
        A name of :data:`atacformer.evaluation.harness.LABELLED_SETS` (read from
        ``data_dir``) or an AnnData peak matrix with coordinates and ``obs[label_key]``.
    data_dir
        The real data folder (``../shared/data``) when ``dataset`` is a name.
    out_dir
        Folder of the training runs (default: a temporary folder, removed after).
    label_key
        ``obs`` column of the labels.
    max_cells
        Stratified subsample of the cells first (tests).
    sets_per_type, min_cells, max_cells_per_set
        See :func:`pseudobulk_region_sets`.
    folds, xgb_params
        See :func:`classify_region_sets`.
    pretrain_minutes, pretrain_steps, train_overrides
        Budget of the self-supervised pretraining on the cells (the package's default
        recipe and ``cpu`` preset): ``time_budget`` minutes, or exactly ``pretrain_steps``
        optimizer steps; further :class:`~atacformer.train.TrainConfig` fields.
    scembed_epochs, n_components
        scEmbed epochs on the cells; LSI components of the sets (before the first is dropped).
    untrained
        Also score the same model at initialisation (``max_steps=0``).
    seed
        Seed of the sets, the folds and every model.
    say
        Progress callback.

    Returns
    -------
    pandas.DataFrame
        :func:`classify_region_sets`'s table with ``dataset``, ``n_sets``, ``n_types`` and
        ``seconds`` (time to make the embedding, training included).

    Examples
    --------
    >>> table = run_bulk_benchmark("Schep600", data_dir="../shared/data", pretrain_minutes=2)  # doctest: +SKIP
    >>> print(format_bulk_table(table))  # doctest: +SKIP
    """
    import tempfile

    from atacformer import tools as tl

    if isinstance(dataset, str):
        if data_dir is None:
            raise ValueError("a dataset name needs data_dir (the ../shared/data folder)")
        name = dataset
        cells = load_labelled_sets(data_dir, [name], max_cells, seed)[name]
    else:
        name = dataset.uns.get("name", "dataset") if hasattr(dataset, "uns") else "dataset"
        cells = dataset.copy()
        cells.obs[LABEL_KEY] = cells.obs[label_key].astype(str).astype("category")
        if max_cells is not None:
            from atacformer.evaluation.harness import _subsample

            cells = _subsample(cells, max_cells, seed)
    tok, _ = tokenize_sets({name: cells}, "peaks")[name]
    t0 = time.perf_counter()
    sets, labels = pseudobulk_region_sets(tok, LABEL_KEY, sets_per_type=sets_per_type, min_cells=min_cells,
                                          max_cells=max_cells_per_set, seed=seed)
    docs = AnnData(sets, obs=pd.DataFrame({LABEL_KEY: labels}, index=[f"set{i}" for i in range(len(labels))]),
                   var=tok.var.copy(), uns={k: v for k, v in tok.uns.items() if k == "atacformer_vocab"})
    secs_sets = time.perf_counter() - t0
    depth = np.diff(sets.indptr)
    say(f"{name}: {tok.n_obs} cells x {tok.n_vars:,} regions -> {docs.n_obs} pseudo-bulk sets of "
        f"{len(np.unique(labels))} types (median {int(np.median(depth)):,} regions per set; "
        f"{secs_sets:.1f}s)")

    embeddings, seconds = {}, {}
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="atacformer-bulk-")
        out = Path(tmp.name)
    else:
        out = Path(out_dir) / name
    try:
        overrides = dict(train_overrides or {})
        model, summary, secs = _train(out / "atacformer", tok, seed, pretrain_minutes, pretrain_steps, overrides)
        t1 = time.perf_counter()
        tl.embed(docs, model, key_added="X_atacformer")
        embeddings["atacformer"] = docs.obsm["X_atacformer"]
        seconds["atacformer"] = secs + time.perf_counter() - t1
        say(f"  {name} atacformer: {summary['steps']} steps on the cells, final loss {summary['final_loss']} "
            f"({seconds['atacformer']:.0f}s)")
        if untrained:
            model0, _, secs0 = _train(out / "untrained", tok, seed, pretrain_minutes, 0, overrides)
            t1 = time.perf_counter()
            tl.embed(docs, model0, key_added="X_untrained")
            embeddings["atacformer untrained"] = docs.obsm["X_untrained"]
            seconds["atacformer untrained"] = secs0 + time.perf_counter() - t1
    finally:
        if tmp is not None:
            tmp.cleanup()
    t1 = time.perf_counter()
    tl.lsi(docs, n_components=min(n_components, min(docs.shape) - 2), seed=seed)
    embeddings["LSI"] = docs.obsm["X_lsi"]
    seconds["LSI"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    ref = AnnData(tok.X, obs=pd.DataFrame(index=tok.obs_names), var=pd.DataFrame(index=tok.var_names))
    tl.scembed(ref, epochs=scembed_epochs, seed=seed)
    tl.scembed_project(docs, ref)
    embeddings["scEmbed"] = docs.obsm["X_scembed"]
    seconds["scEmbed"] = time.perf_counter() - t1
    say(f"  {name} LSI {seconds['LSI']:.1f}s, scEmbed {seconds['scEmbed']:.1f}s; classifying ({folds} folds)")
    t1 = time.perf_counter()
    table = classify_region_sets(embeddings, labels, folds=folds, seed=seed, xgb_params=xgb_params)
    say(f"  {name} classification: {time.perf_counter() - t1:.1f}s")
    table.insert(0, "dataset", name)
    table["n_sets"] = docs.n_obs
    table["n_types"] = len(np.unique(labels))
    table["seconds"] = table["embedding"].map(seconds)
    return table


def format_bulk_table(table: pd.DataFrame) -> str:
    """Markdown table: dataset, embedding, accuracy and macro-F1 as ``mean ± sd`` over folds.

    Examples
    --------
    >>> t = pd.DataFrame({"dataset": ["d"], "embedding": ["LSI"], "accuracy": [0.9], "accuracy_sd": [0.05],
    ...                   "macro_f1": [0.88], "macro_f1_sd": [0.04]})
    >>> print(format_bulk_table(t).splitlines()[2])
    | d         | LSI         | 0.900 ± 0.050 | 0.880 ± 0.040 |
    """
    view = pd.DataFrame({
        "dataset": table["dataset"], "embedding": table["embedding"],
        "accuracy": [f"{m:.3f} ± {s:.3f}" for m, s in zip(table["accuracy"], table["accuracy_sd"])],
        "macro-F1": [f"{m:.3f} ± {s:.3f}" for m, s in zip(table["macro_f1"], table["macro_f1_sd"])],
    })
    if "seconds" in table:
        view["seconds"] = [f"{s:.0f}" for s in table["seconds"]]
    return view.to_markdown(index=False) + "\n"

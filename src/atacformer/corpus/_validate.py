"""Checks and normalisation of what is appended to a corpus: count matrices and cell metadata.

Every check raises :class:`ValueError` naming the dataset, the cell (row) and the value, so
that the message alone says what to fix.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

# Columns every shard's obs.parquet has, in this order; any other obs columns follow them.
OBS_COLUMNS = ("barcode", "dataset", "batch", "cell_type")
_MAX_COUNT = np.iinfo(np.uint32).max


def count_dtype(max_count: int) -> np.dtype:
    """Smallest unsigned integer dtype that holds ``max_count`` (counts are never clipped).

    Examples
    --------
    >>> count_dtype(1), count_dtype(300), count_dtype(70_000)
    (dtype('uint8'), dtype('uint16'), dtype('uint32'))
    """
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_count <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"count {max_count} does not fit in uint32 (max {_MAX_COUNT})")


def as_count_csr(X, n_regions: int, where: str, row_offset: int = 0) -> sp.csr_matrix:
    """Validate ``X`` as cells x vocabulary counts; return a canonical CSR copy.

    Canonical: sorted token ids per row, duplicates summed, explicit zeros removed, int32
    indices and int64 counts. Accepted counts: non-negative integers, as integer, boolean or
    integral float values (h5ad files often store counts as float32).

    Parameters
    ----------
    X
        A scipy sparse matrix or a dense 2-D array, shape ``(n_cells, n_regions)``.
    n_regions
        Number of vocabulary regions (the required number of columns).
    where
        What is being appended (e.g. ``"dataset 'pbmc'"``), for error messages.
    row_offset
        Row number of ``X``'s first row within the dataset, for error messages.

    Examples
    --------
    >>> as_count_csr(np.array([[0, 2.0], [1, 0]]), 2, "demo").toarray().tolist()
    [[0, 2], [1, 0]]
    """
    if sp.issparse(X):
        X = sp.csr_matrix(X, copy=True)
    else:
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise ValueError(f"{where}: counts must be a 2-D cells x regions matrix, got {arr.ndim}-D")
        X = sp.csr_matrix(arr)
    if X.shape[1] != n_regions:
        raise ValueError(
            f"{where}: matrix has {X.shape[1]} columns but the corpus vocabulary has {n_regions} "
            f"regions; columns must be the vocabulary's token ids (tokenize with the corpus vocabulary)"
        )
    X.sum_duplicates()  # also sorts the indices of every row
    data = _integer_counts(X, where, row_offset)
    X = sp.csr_matrix((data, X.indices.astype(np.int32), X.indptr.astype(np.int64)), shape=X.shape)
    X.eliminate_zeros()
    return X


def _integer_counts(X: sp.csr_matrix, where: str, row_offset: int) -> np.ndarray:
    """``X.data`` as int64 after checking that it holds non-negative integers."""
    data = X.data
    kind = data.dtype.kind
    if kind == "b":
        return data.astype(np.int64)
    if kind not in "iuf":
        raise ValueError(f"{where}: counts must be numbers, got dtype {data.dtype}")
    if kind == "f":
        bad = ~np.isfinite(data) | (data != np.floor(data))
        _raise_first(bad, X, data, where, row_offset, "counts must be whole numbers")
    _raise_first(data < 0, X, data, where, row_offset, "counts must be non-negative")
    _raise_first(data > _MAX_COUNT, X, data, where, row_offset, f"counts must be at most {_MAX_COUNT}")
    return data.astype(np.int64)


def _raise_first(bad: np.ndarray, X: sp.csr_matrix, data, where: str, row_offset: int, what: str):
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        row = int(np.searchsorted(X.indptr, k, side="right") - 1)
        raise ValueError(
            f"{where}: {what}; cell {row + row_offset}, token {int(X.indices[k])} has count "
            f"{data[k]!r} (counts are integer fragment/read numbers per token)"
        )


def normalize_obs(obs, n_cells: int, dataset: str, batch: str | None, where: str,
                  row_offset: int = 0) -> pd.DataFrame:
    """Per-cell metadata for one chunk, with the corpus' fixed columns first.

    ``barcode`` is the cell's identity: the index of ``obs`` (an AnnData's ``obs_names``), else
    the cell's row number within the dataset. A ``barcode`` column that differs from the index
    (a raw barcode repeated across libraries of a multi-sample set) is kept as
    ``raw_barcode``. ``dataset`` is always ``dataset``.
    ``batch`` is the ``batch`` argument when given, else an ``obs["batch"]`` column, else the
    dataset name. ``cell_type`` is ``obs["cell_type"]`` or missing. Other columns are kept;
    categorical and text columns are stored as strings.

    Examples
    --------
    >>> normalize_obs(None, 2, "d", None, "demo").values.tolist()
    [['0', 'd', 'd', None], ['1', 'd', 'd', None]]
    """
    if obs is None:
        obs = pd.DataFrame(index=pd.RangeIndex(row_offset, row_offset + n_cells).astype(str))
    if not isinstance(obs, pd.DataFrame):
        raise TypeError(f"{where}: obs must be a pandas DataFrame, got {type(obs).__name__}")
    if len(obs) != n_cells:
        raise ValueError(f"{where}: obs has {len(obs)} rows but the count matrix has {n_cells} cells")
    out = pd.DataFrame(index=pd.RangeIndex(n_cells))
    out["barcode"] = _strings(pd.Series(obs.index), "barcode", where, row_offset, allow_missing=False)
    if "barcode" in obs.columns:
        raw = obs["barcode"].astype(str).to_numpy()
        if not (raw == out["barcode"].to_numpy()).all():
            out["raw_barcode"] = raw
    out["dataset"] = dataset
    if batch is not None:
        out["batch"] = str(batch)
    elif "batch" in obs.columns:
        out["batch"] = _strings(obs["batch"], "batch", where, row_offset, allow_missing=False)
    else:
        out["batch"] = dataset
    if "cell_type" in obs.columns:
        out["cell_type"] = _strings(obs["cell_type"], "cell_type", where, row_offset, allow_missing=True)
    else:
        out["cell_type"] = pd.Series([None] * n_cells, dtype=object)
    for col in obs.columns:
        if col in OBS_COLUMNS:
            continue
        if not isinstance(col, str):
            raise TypeError(f"{where}: obs column names must be strings, got {col!r}")
        out[col] = _extra_column(obs[col], col, where)
    return out


def _strings(values, col: str, where: str, row_offset: int, allow_missing: bool) -> np.ndarray:
    s = pd.Series(np.asarray(values, dtype=object))
    missing = s.isna().to_numpy()
    if missing.any() and not allow_missing:
        i = int(np.flatnonzero(missing)[0])
        raise ValueError(f"{where}: obs column {col!r} is missing for cell {i + row_offset}")
    out = s.astype(str).to_numpy(dtype=object)
    out[missing] = None
    return out


def _extra_column(s: pd.Series, col: str, where: str) -> np.ndarray:
    """A user column as numbers, booleans or strings (what parquet stores unambiguously)."""
    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype) or dt == object or pd.api.types.is_string_dtype(dt):
        kinds = {type(v) for v in s.dropna()}
        if isinstance(dt, pd.CategoricalDtype) or kinds <= {str}:
            return _strings(s, col, where, 0, allow_missing=True)
        raise ValueError(
            f"{where}: obs column {col!r} mixes value types {sorted(k.__name__ for k in kinds)}; "
            "convert it to one type (e.g. .astype(str)) before appending"
        )
    if pd.api.types.is_extension_array_dtype(dt):
        return s.array  # nullable Int64 / boolean / Float64: pyarrow keeps the missing values
    if dt.kind in "biufM":
        return s.to_numpy()
    raise ValueError(f"{where}: obs column {col!r} has unsupported dtype {dt}; use numbers or strings")

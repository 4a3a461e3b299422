"""Readers of peak (or bin) by cell count matrices: ``.h5ad``, 10x ``.h5``, Matrix Market.

Every reader returns a :class:`PeakMatrix` with cells as rows and one row of ``peaks``
(``chrom``, ``start``, ``end``; 0-based half-open, chromosome names normalised) per column.
Coordinates come from feature columns when there are any (``chrom``/``chr``/``seqnames``/
``chromosome`` + ``start`` + ``end``), otherwise from feature names such as ``chr1:100-200``,
``chr1-100-200`` or ``chr1_100_200``, which are taken as BED coordinates, as 10x writes them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from atacformer.errors import InputFormatError
from atacformer.genome import get_genome, normalize_chroms

__all__ = ["PeakMatrix", "check_counts", "peak_matrix_from_anndata", "peaks_from_names", "read_peak_matrix"]

logger = logging.getLogger(__name__)

_CHROM_COLS = ("chrom", "chr", "seqnames", "chromosome", "seqname")
_START_COLS = ("start", "chromstart")
_END_COLS = ("end", "chromend")
# Separators are matched from the right so that chromosome names may contain ``_`` and ``-``
# (``chrUn_KI270742v1_100_200``); a ``:`` can only be the chromosome/start separator.
_NAME_RE = r"^(?P<chrom>[^:\s]+)[:_-](?P<start>-?\d+)[-_](?P<end>\d+)$"
_NAME_FORMS = "'chr1:100-200', 'chr1-100-200' or 'chr1_100_200'"
_PEAK_TYPE = "Peaks"


@dataclass
class PeakMatrix:
    """A cells x peaks count matrix with its peak coordinates and cell metadata.

    Attributes
    ----------
    X
        ``scipy.sparse.csr_matrix`` of shape ``(n_cells, n_peaks)``, counts as stored.
    peaks
        One row per column of ``X``: ``chrom`` (str, normalised), ``start``, ``end`` (int64,
        0-based half-open), then any other feature metadata; index = feature names.
    obs
        Cell metadata, index = barcodes.
    path
        The file or directory the matrix was read from (``None`` for in-memory data).

    Examples
    --------
    >>> pm = read_peak_matrix("pbmc.h5ad")  # doctest: +SKIP
    >>> pm.X.shape == (len(pm.obs), len(pm.peaks))  # doctest: +SKIP
    True
    """

    X: sp.csr_matrix
    peaks: pd.DataFrame
    obs: pd.DataFrame
    path: str | None

    @property
    def shape(self) -> tuple[int, int]:
        return self.X.shape

    def to_anndata(self):
        """Return an :class:`anndata.AnnData` (``var`` = ``peaks``) sharing the data."""
        import anndata as ad

        return ad.AnnData(X=self.X, obs=self.obs, var=self.peaks)


def read_peak_matrix(path, genome=None) -> PeakMatrix:
    """Read a peak-by-cell count matrix in any supported format.

    Parameters
    ----------
    path
        A ``.h5ad`` file (always cells x features), a 10x ``.h5`` file (features x barcodes;
        only ``Peaks`` features are kept when feature types are given), or a Matrix Market
        directory (``matrix.mtx[.gz]`` + ``peaks.bed[.gz]`` or ``features.tsv[.gz]`` +
        ``barcodes.tsv[.gz]``; the ``.mtx`` file itself may be given). The orientation of a
        Matrix Market matrix is found from the peak and barcode counts.
    genome
        Optional genome name (``"hg38"``...), ``.chrom.sizes`` path or
        :class:`~atacformer.genome.Genome`; the peaks are checked against it.

    Returns
    -------
    PeakMatrix

    Raises
    ------
    InputFormatError
        When the file is missing, unreadable or inconsistent, or has no peak coordinates.
    GenomeMismatchError
        When ``genome`` is given and a peak's chromosome or end does not fit it.

    Examples
    --------
    >>> pm = read_peak_matrix("filtered_peak_bc_matrix.h5", genome="hg38")  # doctest: +SKIP
    >>> pm.peaks[["chrom", "start", "end"]].head(1)  # doctest: +SKIP
                   chrom  start    end
    chr1:10109-10357  chr1  10109  10357
    """
    p = Path(os.fspath(path))
    if not p.exists():
        raise InputFormatError(p, "no such file or directory")
    name = p.name.lower()
    if p.is_dir() or name.endswith((".mtx", ".mtx.gz")):
        pm = _read_mtx_dir(p if p.is_dir() else p.parent)
    elif name.endswith(".h5ad"):
        pm = _read_h5ad(p)
    elif name.endswith((".h5", ".hdf5")):
        pm = _read_10x_h5(p)
    else:
        raise InputFormatError(
            p, "unknown matrix format: expected a .h5ad file, a 10x .h5 file or a Matrix "
            "Market directory (matrix.mtx[.gz] + peaks.bed[.gz]/features.tsv[.gz] + barcodes.tsv[.gz])"
        )
    if genome is not None:
        get_genome(genome).check_intervals(pm.peaks["chrom"].to_numpy(), pm.peaks["end"].to_numpy(), source=str(p))
    logger.info("read %d cells x %d peaks from %s", pm.X.shape[0], pm.X.shape[1], p)
    return pm


def check_counts(pm: PeakMatrix) -> PeakMatrix:
    """Refuse a matrix without cells or peaks, and negative or non-finite (NaN, inf) values,
    naming the file, the (cell, peak) position and the value. Returns ``pm``.

    Examples
    --------
    >>> import pandas as pd, scipy.sparse as sp
    >>> pm = PeakMatrix(sp.csr_matrix([[1, -2]]), peaks_from_names(["chr1:1-5", "chr1:9-20"]),
    ...                 pd.DataFrame(index=["AAC"]), "m.h5ad")
    >>> check_counts(pm)
    Traceback (most recent call last):
    ...
    atacformer.errors.InputFormatError: m.h5ad: negative count at cell 0 ('AAC'), peak 1 ('chr1:9-20') (got -2)
    """
    n_cells, n_peaks = pm.X.shape
    if n_cells == 0 or n_peaks == 0:
        raise InputFormatError(pm.path, f"the matrix has {n_cells} cells and {n_peaks} peaks; "
                               "tokenizing needs at least one of each")
    X = pm.X if sp.issparse(pm.X) and pm.X.format == "csr" else sp.csr_matrix(pm.X)
    data = np.asarray(X.data)
    if data.dtype.kind not in "biuf":
        raise InputFormatError(pm.path, f"counts must be numbers, found values of type {data.dtype}")
    checks = [(data < 0, "negative count")] if data.dtype.kind in "if" else []
    if data.dtype.kind == "f":
        checks.insert(0, (~np.isfinite(data), "non-finite count (NaN or infinity)"))
    for bad, what in checks:
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            i = int(np.searchsorted(X.indptr, k, side="right")) - 1
            j = int(X.indices[k])
            cell = pm.obs.index[i] if i < len(pm.obs) else i
            peak = pm.peaks.index[j] if j < len(pm.peaks) else j
            v = data[k].item()
            raise InputFormatError(pm.path, f"{what} at cell {i} ({cell!r}), peak {j} ({peak!r})",
                                   value=int(v) if float(v).is_integer() else v)
    return pm


def peaks_from_names(names, path=None) -> pd.DataFrame:
    """Parse peak names such as ``chr1:100-200``, ``chr1-100-200`` or ``chr1_100_200``.

    The numbers are taken as they are (BED: 0-based start, half-open end), as 10x writes
    them; chromosome names may contain ``_`` or ``-`` because names are parsed from the right.

    Parameters
    ----------
    names
        Sequence of peak names.
    path
        The file the names come from, for error messages.

    Returns
    -------
    pandas.DataFrame
        Columns ``chrom`` (normalised), ``start``, ``end`` (int64); index = the names.

    Examples
    --------
    >>> peaks_from_names(["1:100-200", "chrUn_KI270742v1_5_9"]).values.tolist()
    [['chr1', 100, 200], ['chrUn_KI270742v1', 5, 9]]
    """
    names = pd.Index(np.asarray(names, dtype=object).astype(str))
    parts = pd.Series(names, dtype=object).str.extract(_NAME_RE)
    bad = parts["chrom"].isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputFormatError(
            path, f"feature name at position {i} is not a peak coordinate; accepted forms are "
            f"{_NAME_FORMS} (or chrom/start/end columns)", value=names[i],
        )
    try:
        start = parts["start"].astype(np.int64).to_numpy()
        end = parts["end"].astype(np.int64).to_numpy()
    except OverflowError:
        raise InputFormatError(path, "peak coordinate too large in feature names") from None
    peaks = pd.DataFrame(
        {"chrom": _chroms(parts["chrom"].to_numpy()), "start": start, "end": end}, index=names
    )
    _validate(peaks, path)
    return peaks


def _chroms(values) -> np.ndarray:
    """Normalised chromosome names as an object array of plain ``str``."""
    return normalize_chroms(values).astype(str).astype(object)


def _validate(peaks: pd.DataFrame, path, label=None) -> None:
    """Reject negative starts and starts past ends, naming the first offending peak."""
    label = label or (lambda i: f"feature {peaks.index[i]!r}")
    for bad, what in (
        (peaks["start"].to_numpy() < 0, "negative peak start"),
        (peaks["start"].to_numpy() > peaks["end"].to_numpy(), "peak start is greater than its end"),
    ):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            row = peaks.iloc[i]
            raise InputFormatError(
                path, f"{what} at row {i} ({label(i)})",
                value=f"{row['chrom']}:{row['start']}-{row['end']}",
            )


def _int_column(values, col: str, label, path) -> np.ndarray:
    """Convert a coordinate column to int64, naming the first non-integer value."""
    s = pd.Series(np.asarray(values))
    if pd.api.types.is_integer_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=np.int64)
    num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(num) | (num != np.floor(num)) | pd.api.types.is_bool_dtype(s.dtype)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputFormatError(
            path, f"column {col!r} has a non-integer coordinate at row {i} ({label(i)})",
            value=s.iloc[i].item() if isinstance(s.iloc[i], np.generic) else s.iloc[i],
        )
    return num.astype(np.int64)


def _find_col(columns, candidates) -> str | None:
    lower = {str(c).lower(): c for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def _peaks_from_var(var: pd.DataFrame, path=None, hint: str = "", label=None) -> pd.DataFrame:
    """Coordinates from chrom/start/end columns of ``var`` if present, else from its index."""
    names = pd.Index(var.index.astype(str))
    label = label or (lambda i: f"feature {names[i]!r}")
    cols = [_find_col(var.columns, c) for c in (_CHROM_COLS, _START_COLS, _END_COLS)]
    if all(c is not None for c in cols):
        c, s, e = cols
        peaks = pd.DataFrame(
            {
                "chrom": _chroms(var[c].astype(str).to_numpy()),
                "start": _int_column(var[s], s, label, path),
                "end": _int_column(var[e], e, label, path),
            },
            index=names,
        )
        _validate(peaks, path, label)
        rest = var.drop(columns=cols)
    else:
        ok = pd.Series(names, dtype=object).str.fullmatch(_NAME_RE).to_numpy(dtype=bool)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise InputFormatError(
                path, f"no peak coordinates: no chrom/start/end feature columns (accepted: "
                f"{'/'.join(_CHROM_COLS)} + start + end; found {list(map(str, var.columns))}) and "
                f"feature name at position {i} is not of the form {_NAME_FORMS}{hint}", value=names[i],
            )
        peaks = peaks_from_names(names, path)
        rest = var
    rest = rest.set_axis(names)
    for col in rest.columns:
        if col not in peaks.columns:
            peaks[col] = rest[col].to_numpy()
    return peaks


def _read_h5ad(path: Path) -> PeakMatrix:
    import anndata as ad

    try:
        adata = ad.read_h5ad(path)
    except Exception as err:  # anndata/h5py raise many types on a corrupt file
        raise InputFormatError(path, f"cannot read as .h5ad ({type(err).__name__}: {err})") from err
    return peak_matrix_from_anndata(adata, path=path)


def peak_matrix_from_anndata(adata, path=None) -> PeakMatrix:
    """Build a :class:`PeakMatrix` from an in-memory AnnData (cells x peaks).

    Coordinates come from ``var`` columns or, when absent, from ``var_names``, exactly as
    for ``.h5ad`` files; the orientation is never guessed.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> a = ad.AnnData(np.ones((2, 1), dtype=np.int32), var=pd.DataFrame(index=["chr1:10-20"]))
    >>> peak_matrix_from_anndata(a).peaks[["chrom", "start", "end"]].values.tolist()
    [['chr1', 10, 20]]
    """
    if adata.X is None:
        raise InputFormatError(path, "AnnData has no X matrix")
    X = sp.csr_matrix(adata.X)  # CSC, dense or CSR -> CSR, shared when already CSR
    hint = ""
    if adata.n_obs and _names_ok(adata.obs_names[:1]):
        hint = "; the obs names look like peaks: AnnData is read as cells x features, transpose it first"
    peaks = _peaks_from_var(adata.var, path, hint=hint)
    obs = adata.obs.copy()
    obs.index = obs.index.astype(str)
    return check_counts(PeakMatrix(X=X, peaks=peaks, obs=obs, path=None if path is None else str(path)))


def _names_ok(names) -> bool:
    """Whether every name parses as a peak coordinate (no error raised)."""
    return bool(pd.Series(np.asarray(names, dtype=str), dtype=object).str.fullmatch(_NAME_RE).all())


def _h5_strings(ds) -> np.ndarray:
    arr = ds[()]
    if arr.dtype.kind == "S":
        return np.char.decode(arr, "utf-8").astype(object)
    return np.array([a.decode() if isinstance(a, bytes) else str(a) for a in arr], dtype=object)


def _read_10x_h5(path: Path) -> PeakMatrix:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            is_anndata = "X" in f and "var" in f and "obs" in f
        if is_anndata:  # an AnnData file with an .h5 suffix
            return _read_h5ad(path)
        with h5py.File(path, "r") as f:
            g = _find_10x_group(f, path)
            feat = g["features"] if "features" in g else None
            ids = _h5_strings(feat["id"] if feat is not None else g["genes"])
            types = _h5_strings(feat["feature_type"]) if feat is not None and "feature_type" in feat else None
            alt = _h5_strings(feat["name"]) if feat is not None and "name" in feat else None
            barcodes = _h5_strings(g["barcodes"])
            data, indices, indptr = g["data"][()], g["indices"][()], g["indptr"][()]
            shape = tuple(int(v) for v in g["shape"][()])
    except InputFormatError:
        raise
    except (OSError, KeyError, ValueError) as err:
        raise InputFormatError(path, f"cannot read as a 10x .h5 matrix ({type(err).__name__}: {err})") from err
    n_f, n_b = len(ids), len(barcodes)
    if shape != (n_f, n_b) or len(indptr) != n_b + 1 or len(data) != len(indices) or indptr[-1] != len(data):
        raise InputFormatError(
            path, f"10x matrix is inconsistent: shape {shape}, {n_f} features, {n_b} barcodes, "
            f"{len(indptr)} indptr entries (expected {n_b + 1}), {len(indices)} indices, {len(data)} values",
        )
    if len(indices) and (indices.min() < 0 or indices.max() >= n_f):
        raise InputFormatError(path, f"10x matrix has a feature index outside 0..{n_f - 1}")
    X = sp.csc_matrix((data, indices, indptr), shape=shape).T.tocsr()  # (cells, features)
    if types is not None:
        X, keep = _keep_peaks(X, types, path)
        ids, alt = ids[keep], (alt[keep] if alt is not None else None)
    if not _names_ok(ids) and alt is not None and _names_ok(alt):
        ids = alt
    peaks = peaks_from_names(ids, path)
    return check_counts(PeakMatrix(X=X.tocsr(), peaks=peaks, obs=pd.DataFrame(index=pd.Index(barcodes, name="barcode")),
                                   path=str(path)))


def _keep_peaks(X, types, path):
    """Keep the columns of ``X`` whose feature type is ``Peaks`` (10x multiome files)."""
    keep = np.asarray(types) == _PEAK_TYPE
    if not keep.any():
        raise InputFormatError(path, f"no features of type {_PEAK_TYPE!r}", value=sorted(set(types))[:5])
    if not keep.all():
        logger.info("%s: dropping %d non-peak features", path, int((~keep).sum()))
    return X[:, np.flatnonzero(keep)], keep


def _find_10x_group(f, path):
    """The ``matrix`` group (CellRanger >= 3, ATAC) or the legacy single genome group."""
    if "matrix" in f:
        return f["matrix"]
    legacy = [k for k in f if hasattr(f[k], "keys") and {"data", "indptr", "barcodes"} <= set(f[k].keys())]
    if len(legacy) == 1 and ("genes" in f[legacy[0]] or "features" in f[legacy[0]]):
        return f[legacy[0]]
    raise InputFormatError(
        path, "not a 10x .h5 matrix: expected a 'matrix' group with data, indices, indptr, shape, "
        "barcodes and features/id (or one legacy genome group)", value=list(f.keys())[:5],
    )


def _first(directory: Path, stems) -> Path | None:
    for stem in stems:
        for suffix in ("", ".gz"):
            if (directory / (stem + suffix)).is_file():
                return directory / (stem + suffix)
    return None


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", header=None, dtype=str, comment="#", keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputFormatError(path, "file is empty") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise InputFormatError(path, f"cannot read as a tab-separated table ({err})") from err


def _read_mtx_dir(directory: Path) -> PeakMatrix:
    import scipy.io

    mtx = _first(directory, ["matrix.mtx"])
    feats = _first(directory, ["peaks.bed", "features.tsv"])
    bcs = _first(directory, ["barcodes.tsv"])
    missing = [n for n, p in (("matrix.mtx[.gz]", mtx), ("peaks.bed[.gz] or features.tsv[.gz]", feats),
                              ("barcodes.tsv[.gz]", bcs)) if p is None]
    if missing:
        raise InputFormatError(directory, f"Matrix Market directory is missing {', '.join(missing)}")
    try:
        X = sp.coo_matrix(scipy.io.mmread(str(mtx)))
    except Exception as err:  # scipy raises ValueError/OSError/EOFError/RuntimeError variously
        raise InputFormatError(mtx, f"cannot read as Matrix Market ({type(err).__name__}: {err})") from err
    table = _read_table(feats)
    barcodes = _read_table(bcs).iloc[:, 0].to_numpy(dtype=object)
    n_f, n_b = len(table), len(barcodes)
    if X.shape == (n_f, n_b) and X.shape != (n_b, n_f):
        X = X.T  # 10x writes features x barcodes
    elif X.shape != (n_b, n_f):
        raise InputFormatError(
            mtx, f"matrix is {X.shape[0]} x {X.shape[1]} but {feats.name} has {n_f} features and "
            f"{bcs.name} has {n_b} barcodes",
        )
    elif n_f == n_b:
        raise InputFormatError(
            mtx, f"cannot tell cells from peaks: the matrix is square ({n_f} x {n_b}) and there are "
            "as many features as barcodes",
        )
    X = X.tocsr()
    if feats.name.startswith("peaks.bed"):
        peaks = _peaks_from_bed(table, feats)
    else:
        X, peaks = _peaks_from_features(X, table, feats)
    obs = pd.DataFrame(index=pd.Index(barcodes, name="barcode"))
    return check_counts(PeakMatrix(X=X, peaks=peaks, obs=obs, path=str(directory)))


def _peaks_from_bed(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    if table.shape[1] < 3:
        raise InputFormatError(path, "expected at least 3 tab-separated columns chrom, start, end",
                               line=1, value="\t".join(table.iloc[0]))
    var = pd.DataFrame({"chrom": table[0].to_numpy(), "start": table[1].to_numpy(), "end": table[2].to_numpy()},
                       index=[f"line {i}" for i in range(1, len(table) + 1)])
    peaks = _peaks_from_var(var, path, label=lambda i: f"line {i + 1}")
    peaks.index = (peaks["chrom"] + ":" + peaks["start"].astype(str) + "-" + peaks["end"].astype(str)).to_numpy()
    return peaks


def _peaks_from_features(X, table: pd.DataFrame, path: Path):
    """10x ``features.tsv``: id, name, type[, chrom, start, end]; keep ``Peaks`` rows."""
    if table.shape[1] >= 3:
        X, keep = _keep_peaks(X, table[2].to_numpy(), path)
        table = table[keep]
    var = pd.DataFrame(index=pd.Index(table[0].to_numpy()))
    if table.shape[1] >= 6:
        var = var.assign(chrom=table[3].to_numpy(), start=table[4].to_numpy(), end=table[5].to_numpy())
    return X.tocsr(), _peaks_from_var(var, path)

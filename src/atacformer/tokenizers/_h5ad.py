"""Write tokenized cells to ``.h5ad`` with h5py alone (no AnnData object, no anndata import).

The file follows the AnnData on-disk format (``encoding-type`` / ``encoding-version``
attributes: ``anndata`` 0.1.0, ``csr_matrix`` 0.1.0, ``dataframe`` 0.2.0, ``categorical``
0.2.0, ``string-array`` 0.2.0, ``array`` 0.2.0, ``dict`` 0.1.0, ``string`` /
``numeric-scalar`` 0.2.0), so ``anndata.read_h5ad`` reads it back as
:meth:`TokenizedCells.to_anndata` would have built it (tested). Importing anndata (which
imports dask when installed) and building an AnnData with hundreds of thousands of
barcodes cost more than the write itself, and a command line that only writes needs neither.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from atacformer._core.names import region_names_bytes, unicode_to_ascii
from atacformer.io._atomic import atomic_path


def _attrs(obj, kind: str, version: str) -> None:
    obj.attrs["encoding-type"] = kind
    obj.attrs["encoding-version"] = version


def _strings(g, key: str, values) -> None:
    import h5py

    arr = np.asarray(values)
    if arr.dtype.kind == "S" and len(arr):
        _attrs(g.create_dataset(key, data=arr), "string-array", "0.2.0")
        return
    # fixed-width ASCII is written in one block (anndata reads it through h5py's asstr())
    fixed = None
    if arr.dtype.kind == "U":
        fixed = unicode_to_ascii(arr)  # None when not ASCII
    elif arr.dtype.kind == "O":
        try:
            fixed = arr.astype("S")
        except UnicodeEncodeError:
            fixed = None
    if fixed is not None and fixed.dtype.itemsize == 0:
        fixed = None
    if fixed is not None and len(fixed):
        d = g.create_dataset(key, data=fixed)
    else:
        d = g.create_dataset(key, data=arr.astype(object), dtype=h5py.string_dtype("utf-8"))
    _attrs(d, "string-array", "0.2.0")


def _value(g, key: str, v) -> None:
    """One ``uns`` / column value in AnnData's encoding."""
    import h5py

    if isinstance(v, dict):
        sub = g.create_group(key)
        _attrs(sub, "dict", "0.1.0")
        for k, x in v.items():
            _value(sub, str(k), x)
    elif isinstance(v, str):
        d = g.create_dataset(key, data=v, dtype=h5py.string_dtype("utf-8"))
        _attrs(d, "string", "0.2.0")
    elif isinstance(v, (bool, np.bool_, int, float, np.integer, np.floating)):
        d = g.create_dataset(key, data=np.asarray(v))
        _attrs(d, "numeric-scalar", "0.2.0")
    elif isinstance(v, pd.Categorical) or isinstance(getattr(v, "dtype", None), pd.CategoricalDtype):
        cat = pd.Categorical(v)
        sub = g.create_group(key)
        _attrs(sub, "categorical", "0.2.0")
        sub.attrs["ordered"] = bool(cat.ordered)
        codes = sub.create_dataset("codes", data=cat.codes)
        _attrs(codes, "array", "0.2.0")
        _strings(sub, "categories", np.asarray(cat.categories.astype(str), dtype=object))
    else:
        arr = np.asarray(v)
        if arr.dtype.kind in "OUS":
            _strings(g, key, arr.astype(str).astype(object))
        else:
            d = g.create_dataset(key, data=arr)
            _attrs(d, "array", "0.2.0")


def _dataframe(f, key: str, df: pd.DataFrame, index) -> None:
    g = f.create_group(key)
    _attrs(g, "dataframe", "0.2.0")
    g.attrs["_index"] = "_index"
    g.attrs["column-order"] = np.array(list(map(str, df.columns)), dtype=object)
    _strings(g, "_index", index)
    for c in df.columns:
        col = df[c]
        if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):  # as AnnData writes them
            col = pd.Categorical(col)
        _value(g, str(c), col if isinstance(col.dtype, pd.CategoricalDtype) else col.to_numpy())


def write_cells_h5ad(cells, path) -> None:
    """Write :class:`~atacformer.tokenizers.TokenizedCells` as ``.h5ad`` through a temporary
    file and a rename (a failure leaves nothing behind).

    Examples
    --------
    >>> write_cells_h5ad(cells, "cells.h5ad")  # doctest: +SKIP
    >>> anndata.read_h5ad("cells.h5ad")  # doctest: +SKIP
    """
    import h5py

    v = cells.vocab
    X = cells.X
    with atomic_path(path, ".tmp.h5ad") as tmp, h5py.File(tmp, "w") as f:
        _attrs(f, "anndata", "0.1.0")
        g = f.create_group("X")
        _attrs(g, "csr_matrix", "0.1.0")
        g.attrs["shape"] = np.array(X.shape, dtype=np.int64)
        g.create_dataset("data", data=X.data)
        g.create_dataset("indices", data=X.indices)
        g.create_dataset("indptr", data=X.indptr)
        _dataframe(f, "obs", cells.obs, np.asarray(cells.barcodes))
        chrom = pd.Categorical(v.chroms, categories=v.chrom_names)
        var = pd.DataFrame({"chrom": chrom, "start": v.starts, "end": v.ends})
        try:
            names = region_names_bytes(chrom.codes, v.chrom_names, v.starts, v.ends)
        except UnicodeEncodeError:  # a non-ASCII chromosome name
            names = np.asarray(v.region_names(), dtype=object)
        _dataframe(f, "var", var, names)
        uns = {"atacformer_vocab": {"hash": v.region_hash(), "genome": v.genome or "",
                                    "bin_size": int(v.bin_size or 0),
                                    "special_tokens": np.array(list(v.special_tokens), dtype=object)}}
        uns.update(cells.uns)
        u = f.create_group("uns")
        _attrs(u, "dict", "0.1.0")
        for k, x in uns.items():
            _value(u, k, x)
        for k in ("obsm", "varm", "obsp", "varp", "layers"):
            _attrs(f.create_group(k), "dict", "0.1.0")

"""Writing one corpus shard chunk by chunk, without holding the dataset in memory.

A shard is a folder of three ``.npy`` arrays (``indptr`` int64, ``indices`` int32,
``counts`` uint8/uint16/uint32) and ``obs.parquet``. The ``.npy`` files are written as
plain appends after a header whose shape is rewritten when the shard is finished: numpy
pads every header so that its length does not depend on the shape
(``numpy.lib.format.GROWTH_AXIS_MAX_DIGITS``), so the final header fits the space reserved.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import numpy.lib.format as npf
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from atacformer.corpus._fs import fsync_dir, write_json
from atacformer.corpus._validate import as_count_csr, count_dtype, normalize_obs

logger = logging.getLogger(__name__)

SHARD_FILES = ("indptr.npy", "indices.npy", "counts.npy", "obs.parquet")
_COPY_BLOCK = 1 << 24  # elements per block when a counts file is widened


class NpyAppender:
    """A 1-D ``.npy`` file grown by appending blocks; valid for ``numpy.load`` once closed.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> w = NpyAppender(p, np.int32); w.append(np.arange(3)); w.append([7]); w.close()
    >>> np.load(p).tolist()
    [0, 1, 2, 7]
    """

    def __init__(self, path, dtype):
        self.path = Path(path)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.n = 0
        self._f = open(self.path, "wb")  # noqa: SIM115 - stays open across append() calls
        self._header_len = self._write_header()

    def _write_header(self) -> int:
        self._f.seek(0)
        npf.write_array_header_1_0(
            self._f, {"descr": npf.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (self.n,)})
        return self._f.tell()

    def append(self, values) -> None:
        """Append a 1-D block (cast to the file's dtype; callers check the range)."""
        a = np.ascontiguousarray(values, dtype=self.dtype)
        self._f.write(a.tobytes())
        self.n += a.size

    def widen(self, dtype) -> None:
        """Rewrite what was written so far with a wider ``dtype`` (values unchanged)."""
        self.close()
        old = np.load(self.path, mmap_mode="r") if self.n else np.empty(0, self.dtype)
        tmp = self.path.with_name(self.path.name + ".widen")
        w = NpyAppender(tmp, dtype)
        for s in range(0, self.n, _COPY_BLOCK):
            w.append(old[s:s + _COPY_BLOCK])
        w.close()
        del old
        os.replace(tmp, self.path)
        self.dtype, self.n = w.dtype, w.n
        self._f = open(self.path, "r+b")  # noqa: SIM115 - stays open across append() calls
        self._f.seek(0, os.SEEK_END)

    def close(self) -> None:
        """Write the final shape into the header and flush the file to disk."""
        if self._f is None:
            return
        end = self._f.tell()
        if self._write_header() != self._header_len:  # numpy changed its header padding
            raise RuntimeError(f"{self.path}: .npy header length changed while appending")
        self._f.seek(end)
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class ShardWriter:
    """Write canonical CSR chunks and their obs into a (temporary) shard folder.

    Parameters
    ----------
    folder
        Empty folder to write into.
    where
        Description of the dataset for error messages.

    Examples
    --------
    >>> import tempfile
    >>> from atacformer.corpus._validate import normalize_obs
    >>> w = ShardWriter(tempfile.mkdtemp(), "demo")
    >>> w.add(sp.csr_matrix(np.array([[0, 3], [1, 0]])), normalize_obs(None, 2, "d", None, "demo"))
    >>> w.finish()["n_tokens"]
    2
    """

    def __init__(self, folder, where: str):
        self.folder = Path(folder)
        self.where = where
        self.n_cells = 0
        self.n_tokens = 0
        self.max_count = 0
        self._indptr = NpyAppender(self.folder / "indptr.npy", np.int64)
        self._indptr.append([0])
        self._indices = NpyAppender(self.folder / "indices.npy", np.int32)
        self._counts = NpyAppender(self.folder / "counts.npy", np.uint8)
        self._obs: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def add(self, X: sp.csr_matrix, obs: pd.DataFrame) -> None:
        """Append a canonical chunk (see ``as_count_csr``) and its normalised obs."""
        if X.nnz:
            mx = int(X.data.max())
            if mx > np.iinfo(self._counts.dtype).max:
                logger.debug("%s: widening counts to %s for count %d", self.where, count_dtype(mx), mx)
                self._counts.widen(count_dtype(mx))
            self.max_count = max(self.max_count, mx)
        self._indptr.append(X.indptr[1:] + self.n_tokens)
        self._indices.append(X.indices)
        self._counts.append(X.data)
        self._write_obs(obs)
        self.n_cells += X.shape[0]
        self.n_tokens += X.nnz

    def _write_obs(self, obs: pd.DataFrame) -> None:
        if self._schema is None:
            fields = [pa.field(c, pa.string()) if obs[c].dtype == object else
                      pa.Schema.from_pandas(obs[[c]], preserve_index=False).field(c) for c in obs.columns]
            self._schema = pa.schema(fields)
            self._obs = pq.ParquetWriter(self.folder / "obs.parquet", self._schema)
        if list(obs.columns) != self._schema.names:
            raise ValueError(f"{self.where}: obs columns {list(obs.columns)} differ from the first "
                             f"chunk's {self._schema.names}; every chunk needs the same columns")
        try:
            table = pa.Table.from_pandas(obs, schema=self._schema, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ValueError(f"{self.where}: obs chunk does not match the first chunk's column "
                             f"types {self._schema}: {e}") from None
        self._obs.write_table(table)

    def finish(self) -> dict:
        """Close every file; return the shard's manifest entry (without its name)."""
        if self.n_cells == 0:
            raise ValueError(f"{self.where}: no cells to append")
        for w in (self._indptr, self._indices, self._counts):
            w.close()
        self._obs.close()
        _fsync(self.folder / "obs.parquet")
        barcodes = pq.read_table(self.folder / "obs.parquet", columns=["barcode"]).column(0)
        if pc.count_distinct(barcodes).as_py() != len(barcodes):  # arrow strings: compact for 10^7 cells
            s = barcodes.to_pandas()
            raise ValueError(f"{self.where}: barcode {s[s.duplicated()].iloc[0]!r} occurs more than once; "
                             "barcodes must be unique within a dataset")
        return {"n_cells": self.n_cells, "n_tokens": self.n_tokens,
                "counts_dtype": self._counts.dtype.name, "max_count": self.max_count}

    def abort(self) -> None:
        """Close open files without finishing (the caller removes the folder)."""
        for w in (self._indptr, self._indices, self._counts):
            w.abort()
        if self._obs is not None:
            self._obs.close()


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_shard_folder(corpus_path) -> Path:
    """A new, empty temporary shard folder inside a corpus (removed as stale unless registered)."""
    tmp = Path(corpus_path) / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def write_shard(folder, chunks, dataset: str, batch, n_regions: int) -> dict:
    """Validate and write ``(X, obs)`` chunks of one dataset into ``folder``.

    Returns the shard's manifest entry without its name (``dataset``, ``n_cells``,
    ``n_tokens``, ``counts_dtype``, ``max_count``). On an error the open files are closed and
    the exception propagates; the caller removes ``folder``.

    Examples
    --------
    >>> import tempfile
    >>> chunks = [(sp.csr_matrix(np.array([[0, 3], [1, 0]])), None)]
    >>> write_shard(tempfile.mkdtemp(), chunks, "demo", None, 2)["n_cells"]
    2
    """
    where = f"dataset {dataset!r}"
    writer = ShardWriter(folder, where)
    try:
        for X, obs in chunks:
            X = as_count_csr(X, n_regions, where, row_offset=writer.n_cells)
            obs = normalize_obs(obs, X.shape[0], dataset, batch, where, row_offset=writer.n_cells)
            writer.add(X, obs)
        entry = {"dataset": dataset, **writer.finish()}
    except BaseException:
        writer.abort()
        raise
    logger.info("wrote %s: %d cells, %d tokens", where, writer.n_cells, writer.n_tokens)
    return entry


def matrix_chunks(X, obs, dataset: str, chunk_cells: int = 4096):
    """An in-memory dataset (``X`` sparse or dense, ``obs`` or ``None``) as row chunks for
    :func:`write_shard`, after checking its shape; ``chunk_cells`` rows at a time."""
    X = X.tocsr() if sp.issparse(X) else np.asarray(X)
    if obs is not None and not isinstance(obs, pd.DataFrame):
        raise TypeError(f"dataset {dataset!r}: obs must be a pandas DataFrame, got {type(obs).__name__}")
    if X.ndim != 2:
        raise ValueError(f"dataset {dataset!r}: counts must be a 2-D cells x regions matrix")
    if obs is not None and len(obs) != X.shape[0]:
        raise ValueError(f"dataset {dataset!r}: obs has {len(obs)} rows but the count matrix has "
                         f"{X.shape[0]} cells")
    step = max(int(chunk_cells), 1)
    return ((X[a:a + step], None if obs is None else obs.iloc[a:a + step]) for a in range(0, X.shape[0], step))


class Transaction:
    """Shards written under one writer lock, registered together by one manifest replace.

    Used by ``Corpus._transaction``: each :meth:`write_shard` streams a dataset into a
    temporary folder; :meth:`commit` renames the folders into ``shards/`` and then replaces
    ``manifest.json`` (the one step that makes them visible); :meth:`rollback` removes them.
    """

    def __init__(self, corpus):
        self.corpus = corpus
        self.pending: list[tuple[Path, dict]] = []
        self.installed: list[Path] = []

    def write_shard(self, chunks, dataset: str, batch) -> None:
        """Validate and write ``(X, obs)`` chunks of one dataset into a new temporary folder."""
        taken = set(self.corpus.datasets) | {e["dataset"] for _, e in self.pending}
        if not isinstance(dataset, str) or not dataset:
            raise ValueError(f"dataset name must be a non-empty string, got {dataset!r}")
        if dataset in taken:
            raise ValueError(f"dataset {dataset!r} is already in corpus {self.corpus.path}; "
                             "dataset names must be unique")
        tmp = temp_shard_folder(self.corpus.path)
        self.pending.append((tmp, {"dataset": dataset}))
        self.pending[-1][1].update(write_shard(tmp, chunks, dataset, batch, self.corpus.vocab.n_regions))

    def add_written(self, folder: Path, entry: dict) -> None:
        """Register a shard folder written elsewhere (by :func:`write_shard`) at the next commit."""
        self.pending.append((Path(folder), dict(entry)))

    def commit(self) -> None:
        """Move the written shards into ``shards/`` and register them in one manifest replace."""
        manifest = dict(self.corpus._manifest)
        shards = list(manifest["shards"])
        for tmp, entry in self.pending:
            name = f"{len(shards):05d}-{uuid.uuid4().hex[:8]}"
            final = self.corpus.path / "shards" / name
            os.rename(tmp, final)
            self.installed.append(final)
            shards.append({"name": name, **entry})
        manifest["shards"] = shards
        fsync_dir(self.corpus.path / "shards")
        write_json(self.corpus.path / "manifest.json", manifest)
        self.pending, self.installed = [], []  # registered: nothing to roll back any more
        self.corpus._set_manifest(manifest)

    def rollback(self) -> None:
        """Remove every folder this transaction wrote (none of them is registered)."""
        for p in [tmp for tmp, _ in self.pending] + self.installed:
            shutil.rmtree(p, ignore_errors=True)

"""The on-disk tokenized corpus: cells x vocabulary counts, appendable, memory-mapped.

Layout of a corpus folder::

    corpus/
      manifest.json        format version, vocabulary region hash, registered shards in order
      vocab/               the Vocabulary (universe.bed.gz + vocab.json)
      shards/00000-1a2b3c4d/
        indptr.npy         int64, n_cells + 1 (row pointers, starting at 0)
        indices.npy        int32, n_tokens (token ids, sorted within each cell)
        counts.npy         uint8/uint16/uint32, n_tokens (smallest that holds the largest count)
        obs.parquet        barcode, dataset, batch, cell_type, then any other columns

Scale: 10^10 tokens take 40 GB of int32 ids plus 10-40 GB of counts; both are memory-mapped,
so only the pages of the cells read are loaded, and any cell is reached in O(1) through
``indptr`` (80 MB for 10^7 cells, also memory-mapped). Appends stream chunk by chunk into a
temporary folder; a shard is registered only by an atomic replace of ``manifest.json`` after
every file is complete and synced, so a reader never sees a partial shard and an interrupted
append leaves the corpus as it was. One writer at a time (an OS file lock); any number of
readers. Obs of 10^7 cells is a few hundred MB of parquet, read only when ``obs`` is asked for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from atacformer.corpus import _reader
from atacformer.corpus._fs import LOCK_TIMEOUT, install_dir, write_json, writer_lock
from atacformer.corpus._validate import OBS_COLUMNS
from atacformer.corpus._writer import Transaction, matrix_chunks
from atacformer.errors import VocabularyMismatchError
from atacformer.vocab import Vocabulary

__all__ = ["Corpus", "ShardInfo"]

logger = logging.getLogger(__name__)

FORMAT = "atacformer.corpus"
VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ShardInfo:
    """A registered shard: one appended dataset.

    Attributes
    ----------
    name, dataset, n_cells, n_tokens, counts_dtype, max_count, offset
        Folder name under ``shards/``, dataset name, cells, non-zero (cell, token) entries,
        dtype of ``counts.npy``, largest count, global index of its first cell.
    source
        The input files and tokenizer options the shard was made from, when it was written
        by :func:`atacformer.corpus.tokenize_to_corpus` (which skips them on a rerun).
    """

    name: str
    dataset: str
    n_cells: int
    n_tokens: int
    counts_dtype: str
    max_count: int
    offset: int
    source: dict | None = None


class Corpus:
    """A tokenized corpus on disk. Create with :meth:`create`, open with :meth:`open`.

    Examples
    --------
    >>> import tempfile, scipy.sparse as sp
    >>> vocab = Vocabulary(["chr1"] * 3, [0, 10, 20], [10, 20, 30])
    >>> c = Corpus.create(Path(tempfile.mkdtemp()) / "corpus", vocab)
    >>> info = c.append(sp.csr_matrix([[1, 0, 2], [0, 3, 0]]), dataset="demo")
    >>> len(c), c.n_tokens, info.counts_dtype
    (2, 3, 'uint8')
    >>> c[0]
    (array([0, 2]), array([1, 2], dtype=int32))
    >>> c.get_rows([1, 0]).toarray()
    array([[0, 3, 0],
           [1, 0, 2]], dtype=int32)
    """

    #: Seconds an append waits for another process's append to finish (``None``: no limit)
    #: before :class:`~atacformer.errors.AtacformerError`.
    lock_timeout: float | None = LOCK_TIMEOUT

    def __init__(self, path, manifest: dict, vocab: Vocabulary):
        self.path = Path(path)
        self.vocab = vocab
        self._set_manifest(manifest)

    # -- creation and opening -----------------------------------------------------------
    @classmethod
    def create(cls, path, vocab: Vocabulary, overwrite: bool = False) -> Corpus:
        """Create an empty corpus folder for tokens of ``vocab``.

        Parameters
        ----------
        path
            Folder to create. It must not exist unless ``overwrite`` (and then it must be a
            corpus or empty: other folders are never deleted).
        vocab
            The vocabulary whose region ids are the columns.
        overwrite
            Replace an existing corpus (the new one is built aside, then swapped in).
        """
        return cls._build(path, vocab, overwrite, fill=None)

    @classmethod
    def _build(cls, path, vocab: Vocabulary, overwrite: bool, fill) -> Corpus:
        """Build a corpus in a temporary sibling folder, run ``fill(corpus)``, then install it."""
        path = Path(path)
        _check_target(path, overwrite)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            vocab.save(tmp / "vocab")
            (tmp / "shards").mkdir()
            manifest = {"format": FORMAT, "version": VERSION, "n_regions": int(vocab.n_regions),
                        "region_hash": vocab.region_hash(), "vocab_hash": vocab.hash, "shards": []}
            write_json(tmp / MANIFEST, manifest)
            if fill is not None:
                fill(cls(tmp, manifest, vocab))
            install_dir(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        logger.info("created corpus %s", path)
        return cls.open(path)

    @classmethod
    def open(cls, path, *, lock_timeout: float | None = LOCK_TIMEOUT) -> Corpus:
        """Open an existing corpus (reads the manifest and vocabulary, maps nothing yet).

        ``lock_timeout``: seconds an append waits while another process appends (``None``:
        no limit).
        """
        path = Path(path)
        manifest = _read_manifest(path)
        vocab = Vocabulary.load(path / "vocab")
        if vocab.region_hash() != manifest["region_hash"]:
            raise VocabularyMismatchError(
                f"{path}: vocab/ does not match the vocabulary recorded in {MANIFEST}")
        c = cls(path, manifest, vocab)
        c.lock_timeout = lock_timeout
        return c

    def reload(self) -> None:
        """Re-read the manifest, e.g. to see shards another process appended."""
        self._set_manifest(_read_manifest(self.path))

    def _set_manifest(self, manifest: dict) -> None:
        self._manifest = manifest
        n = [s["n_cells"] for s in manifest["shards"]]
        self._offsets = np.concatenate([[0], np.cumsum(n, dtype=np.int64)]).astype(np.int64)
        self._arrays: dict[int, _reader.ShardArrays] = {}
        self._obs: pd.DataFrame | None = None

    # -- facts --------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def n_tokens(self) -> int:
        """Number of non-zero (cell, token) entries over all cells."""
        return int(sum(s["n_tokens"] for s in self._manifest["shards"]))

    @property
    def shards(self) -> list[ShardInfo]:
        """Registered shards in corpus order."""
        return [ShardInfo(**s, offset=int(o)) for s, o in zip(self._manifest["shards"], self._offsets)]

    @property
    def datasets(self) -> list[str]:
        """Dataset names, one per shard, in corpus order."""
        return [s["dataset"] for s in self._manifest["shards"]]

    @property
    def counts_dtype(self) -> np.dtype:
        """dtype of counts returned by reads: int32, or int64 when a shard stores uint32."""
        wide = any(s["counts_dtype"] == "uint32" for s in self._manifest["shards"])
        return np.dtype(np.int64 if wide else np.int32)

    def __repr__(self) -> str:
        return (f"Corpus({str(self.path)!r}, {len(self):,} cells, {self.n_tokens:,} tokens, "
                f"{len(self.datasets)} datasets, {self.vocab!r})")

    def __getstate__(self):
        # Memory maps are not pickled (that would copy the data): workers re-map lazily.
        return {"path": self.path, "manifest": self._manifest, "vocab": self.vocab}

    def __setstate__(self, state):
        self.__init__(state["path"], state["manifest"], state["vocab"])

    # -- reading ------------------------------------------------------------------------
    def _shard(self, k: int) -> _reader.ShardArrays:
        if k not in self._arrays:
            entry = self._manifest["shards"][k]
            self._arrays[k] = _reader.ShardArrays(self.path / "shards" / entry["name"], entry)
        return self._arrays[k]

    def _all_shards(self) -> list:
        return [_LazyShard(self, k) for k in range(len(self._manifest["shards"]))]

    def _check_indices(self, idx) -> np.ndarray:
        idx = np.asarray(idx)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"cell indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64).ravel()
        n = len(self)
        bad = (idx < -n) | (idx >= n)
        if bad.any():
            raise IndexError(f"cell index {int(idx[bad][0])} out of range for a corpus of {n} cells")
        return np.where(idx < 0, idx + n, idx)

    def __getitem__(self, i):
        """``corpus[i]`` -> ``(token_ids int64, counts)``; a slice or an index array -> CSR."""
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step == 1:
                return _reader.take_slice(self._all_shards(), self._offsets, start, max(start, stop),
                                          self.vocab.n_regions, self.counts_dtype)
            return self.get_rows(np.arange(start, stop, step))
        if np.ndim(i) != 0:
            return self.get_rows(i)
        g = int(self._check_indices(i)[0])
        k = int(np.searchsorted(self._offsets, g, side="right") - 1)
        ids, counts = self._shard(k).row(g - int(self._offsets[k]))
        return ids, counts.astype(self.counts_dtype)

    def get_rows(self, indices) -> sp.csr_matrix:
        """Cells ``indices`` (any order, repeats allowed, negatives from the end) as CSR.

        Examples
        --------
        >>> X = corpus.get_rows([5, 0, 5])  # doctest: +SKIP
        >>> X.shape == (3, corpus.vocab.n_regions)  # doctest: +SKIP
        True
        """
        idx = self._check_indices(indices)
        return _reader.take_rows(self._all_shards(), self._offsets, idx, self.vocab.n_regions,
                                 self.counts_dtype)

    def iter_chunks(self, chunk_cells: int = 4096, start: int = 0, stop: int | None = None):
        """Stream cells ``start:stop`` as ``(first_cell_index, CSR)`` chunks of ``chunk_cells``.

        A chunk holds about ``chunk_cells`` x tokens-per-cell x 8 bytes (4,096 cells of 10^4
        tokens: 330 MB); chunks cross shard boundaries.

        Examples
        --------
        >>> total = sum(X.nnz for _, X in corpus.iter_chunks(10_000))  # doctest: +SKIP
        """
        if chunk_cells < 1:
            raise ValueError(f"chunk_cells must be positive, got {chunk_cells}")
        stop = len(self) if stop is None else min(stop, len(self))
        for a in range(start, stop, chunk_cells):
            yield a, self[a:min(a + chunk_cells, stop)]

    def shard_obs(self, k: int) -> pd.DataFrame:
        """Metadata of shard ``k``'s cells, as stored (default RangeIndex)."""
        entry = self._manifest["shards"][k]
        return pd.read_parquet(self.path / "shards" / entry["name"] / "obs.parquet")

    @property
    def obs(self) -> pd.DataFrame:
        """Metadata of every cell, in corpus order (read once, then cached).

        The index is the barcode when barcodes are unique over the whole corpus, otherwise
        ``"{dataset}:{barcode}"`` for every cell (unique: barcodes are unique within a dataset
        and dataset names within a corpus). The raw barcode is always in ``obs["barcode"]``.
        """
        if self._obs is None:
            parts = [self.shard_obs(k) for k in range(len(self._manifest["shards"]))]
            obs = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(OBS_COLUMNS))
            for col in ("dataset", "batch", "cell_type"):
                obs[col] = obs[col].astype("category")
            index = obs["barcode"].astype(str)
            if not index.is_unique:
                logger.info("%s: barcodes repeat across datasets; obs index is 'dataset:barcode'", self.path)
                index = obs["dataset"].astype(str) + ":" + index
            obs.index = pd.Index(index.to_numpy(), dtype=str, name="cell")
            self._obs = obs
        return self._obs

    # -- appending ----------------------------------------------------------------------
    def append(self, X, obs: pd.DataFrame | None = None, *, dataset: str, batch: str | None = None,
               chunk_cells: int = 4096) -> ShardInfo:
        """Append one dataset held in memory (written ``chunk_cells`` rows at a time).

        Parameters
        ----------
        X
            Cells x ``vocab.n_regions`` counts (scipy sparse or dense), non-negative integers.
        obs
            Per-cell metadata, one row per cell: barcodes from a ``barcode`` column or the
            index; ``batch`` and ``cell_type`` columns are used when present; other columns
            are kept.
        dataset
            Name of the dataset, unique within the corpus.
        batch
            Batch label of every cell; default: ``obs["batch"]`` if present, else ``dataset``.
        chunk_cells
            Rows validated and written at a time (bounds the temporary copies).

        Returns
        -------
        ShardInfo
            The new shard.

        Examples
        --------
        >>> corpus.append(adata.X, adata.obs, dataset="pbmc")  # doctest: +SKIP
        """
        return self.append_chunks(matrix_chunks(X, obs, dataset, chunk_cells), dataset=dataset, batch=batch)

    def append_chunks(self, chunks, *, dataset: str, batch: str | None = None) -> ShardInfo:
        """Append one dataset streamed as ``(X_chunk, obs_chunk_or_None)`` pairs.

        Only one chunk is in memory at a time, so a dataset of any size can be appended. The
        shard is registered after its last chunk is written; if the iterator raises (or the
        process dies) nothing is registered and the temporary files are removed.

        Examples
        --------
        >>> def chunks():
        ...     for a in range(0, n, 100_000):
        ...         yield X_backed[a:a + 100_000], obs.iloc[a:a + 100_000]
        >>> corpus.append_chunks(chunks(), dataset="atlas")  # doctest: +SKIP
        """
        with self._transaction() as txn:
            txn.write_shard(chunks, dataset, batch)
        return self.shards[-1]

    def append_tokenized(self, cells, *, dataset: str, batch: str | None = None,
                         chunk_cells: int = 4096) -> ShardInfo:
        """Append the output of a tokenizer (:class:`atacformer.tokenizers.TokenizedCells`).

        Raises
        ------
        VocabularyMismatchError
            When ``cells`` were tokenized with another vocabulary.

        Examples
        --------
        >>> cells = tokenize_fragments("fragments.tsv.gz", corpus.vocab)  # doctest: +SKIP
        >>> corpus.append_tokenized(cells, dataset="pbmc")  # doctest: +SKIP
        """
        self.vocab.check_same(cells.vocab, what=f"tokenized cells for dataset {dataset!r}")
        obs = cells.obs.copy()
        obs.index = pd.Index(np.asarray(cells.barcodes, dtype=str))
        return self.append(cells.X, obs, dataset=dataset, batch=batch, chunk_cells=chunk_cells)

    @contextlib.contextmanager
    def _transaction(self):
        """Hold the writer lock; register every shard written inside at once, or none."""
        with writer_lock(self.path, timeout=self.lock_timeout):
            self.reload()
            self._remove_stale()
            txn = Transaction(self)
            try:
                yield txn
                txn.commit()
            except BaseException:
                txn.rollback()
                raise

    def _remove_stale(self) -> None:
        """Remove temporary folders and unregistered shards left by interrupted appends."""
        registered = {s["name"] for s in self._manifest["shards"]}
        stale = list(self.path.glob(".tmp-*"))
        stale += [p for p in (self.path / "shards").iterdir() if p.name not in registered]
        for p in stale:
            logger.warning("%s: removing %s left by an interrupted append", self.path, p.name)
            shutil.rmtree(p, ignore_errors=True)

    # -- AnnData ------------------------------------------------------------------------
    def to_anndata(self):
        """The whole corpus as an in-memory AnnData (see :func:`atacformer.corpus.to_anndata`)."""
        from atacformer.corpus import _h5ad

        return _h5ad.to_anndata(self)

    def write_h5ad(self, path, chunk_cells: int = 4096) -> Path:
        """Stream the corpus into an ``.h5ad`` file (see :func:`atacformer.corpus.write_h5ad`)."""
        from atacformer.corpus import _h5ad

        return _h5ad.write_h5ad(self, path, chunk_cells)

    def append_anndata(self, adata, dataset: str | None = None, batch: str | None = None,
                       layer: str | None = None, chunk_cells: int = 4096) -> list[ShardInfo]:
        """Append an AnnData or ``.h5ad`` (see :func:`atacformer.corpus.append_anndata`)."""
        from atacformer.corpus import _h5ad

        return _h5ad.append_anndata(self, adata, dataset, batch, layer, chunk_cells)

    @classmethod
    def from_anndata(cls, adata, corpus_path, vocab: Vocabulary | None = None, **kwargs) -> Corpus:
        """A new corpus from an AnnData or ``.h5ad`` (see :func:`atacformer.corpus.from_anndata`)."""
        from atacformer.corpus import _h5ad

        return _h5ad.from_anndata(adata, corpus_path, vocab, **kwargs)


class _LazyShard:
    """Shard arrays mapped on first attribute access (slices touch only the shards they need)."""

    def __init__(self, corpus: Corpus, k: int):
        self._corpus, self._k = corpus, k

    def __getattr__(self, name):
        return getattr(self._corpus._shard(self._k), name)


def _check_target(path: Path, overwrite: bool) -> None:
    if not path.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    if not path.is_dir() or not ((path / MANIFEST).exists() or not any(path.iterdir())):
        raise FileExistsError(f"refusing to overwrite {path}: it is neither a corpus nor an empty folder")


def _read_manifest(path: Path) -> dict:
    f = path / MANIFEST
    if not f.is_file():
        raise FileNotFoundError(f"{path} is not an atacformer corpus (no {MANIFEST})")
    try:
        m = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{f}: not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ValueError(f"{f}: not an atacformer corpus manifest (format {m.get('format')!r})")
    if m.get("version", 0) > VERSION:
        raise ValueError(f"{f}: corpus format version {m['version']} is newer than this atacformer "
                         f"reads ({VERSION}); upgrade atacformer")
    return m

"""Import of AnnData / ``.h5ad`` into a corpus and export of a corpus to them.

The exchanged layout: ``X`` = cells x regions CSR of integer counts, ``var`` = ``chrom``,
``start``, ``end`` of every token (index ``chrom:start-end``, in token-id order),
``obs_names`` = barcodes, ``obs`` columns ``dataset``, ``batch``, ``cell_type`` and any
others, and ``uns["atacformer_vocab"]`` = the vocabulary's region hash, genome, bin size and
special tokens (what :class:`atacformer.tokenizers.TokenizedCells` writes too). Both ways
stream: an ``.h5ad`` path is opened backed and read ``chunk_cells`` rows at a time, and
:func:`write_h5ad` appends chunk after chunk to the file's ``X``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from atacformer.corpus.corpus import Corpus, ShardInfo
from atacformer.vocab import Vocabulary

__all__ = ["append_anndata", "from_anndata", "to_anndata", "write_h5ad"]

logger = logging.getLogger(__name__)
UNS_KEY = "atacformer_vocab"
_H5_CHUNK = 1 << 18  # elements per HDF5 chunk of X (1-2 MB)


def _export_parts(corpus: Corpus) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    obs = corpus.obs.copy()
    if (obs.index == obs["barcode"].astype(str)).all():
        obs = obs.drop(columns="barcode")  # it is obs_names; kept only when the index differs
    obs.index.name = None
    v = corpus.vocab
    uns = {UNS_KEY: {"hash": v.region_hash(), "genome": v.genome or "", "bin_size": int(v.bin_size or 0),
                     "special_tokens": list(v.special_tokens)}}
    return obs, v.to_dataframe(), uns


def to_anndata(corpus: Corpus):
    """The whole corpus as an in-memory :class:`anndata.AnnData` (use for small corpora).

    Examples
    --------
    >>> adata = corpus.to_anndata()  # doctest: +SKIP
    >>> adata.X.shape == (len(corpus), corpus.vocab.n_regions)  # doctest: +SKIP
    True
    """
    import anndata as ad

    obs, var, uns = _export_parts(corpus)
    return ad.AnnData(X=corpus[0:len(corpus)], obs=obs, var=var, uns=uns)


def write_h5ad(corpus: Corpus, path, chunk_cells: int = 4096) -> Path:
    """Write the corpus to ``path`` as ``.h5ad``, streaming ``X`` chunk by chunk.

    Only one chunk of counts is in memory at a time (obs, one row per cell, is written
    whole). The file is written under a temporary name and renamed when complete.

    Examples
    --------
    >>> corpus.write_h5ad("corpus.h5ad")  # doctest: +SKIP
    PosixPath('corpus.h5ad')
    """
    import anndata as ad
    import h5py

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}.h5ad")
    obs, var, uns = _export_parts(corpus)
    try:
        ad.AnnData(obs=obs, var=var, uns=uns).write_h5ad(tmp)
        with h5py.File(tmp, "a") as f:
            if "X" in f:
                del f["X"]
            empty = sp.csr_matrix((0, corpus.vocab.n_regions), dtype=corpus.counts_dtype)
            ad.io.write_elem(f, "X", empty, dataset_kwargs={"chunks": (_H5_CHUNK,)})  # h5py's guess: 1 KB
            del f["X"]["indptr"]  # scipy made it int32, which anndata cannot append past 2^31 tokens
            f["X"].create_dataset("indptr", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(_H5_CHUNK,))
            X = ad.io.sparse_dataset(f["X"])
            for _, chunk in corpus.iter_chunks(chunk_cells):
                X.append(chunk)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    logger.info("wrote %d cells x %d regions to %s", len(corpus), corpus.vocab.n_regions, path)
    return path


@contextlib.contextmanager
def _opened(adata):
    """Yield ``(AnnData, source_name)``; a path is opened backed (read-only) and closed after."""
    if isinstance(adata, (str, os.PathLike)):
        import anndata as ad

        path = Path(adata)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such .h5ad file")
        a = ad.read_h5ad(path, backed="r")
        try:
            yield a, str(path)
        finally:
            a.file.close()
    else:
        yield adata, "AnnData"


def vocab_from_var(adata, source: str = "AnnData") -> Vocabulary:
    """The vocabulary an AnnData's columns stand for: ``var`` chrom/start/end, else names.

    Special tokens, genome and bin size come from ``uns["atacformer_vocab"]`` when present.

    Examples
    --------
    >>> vocab_from_var(adata).n_regions == adata.n_vars  # doctest: +SKIP
    True
    """
    from atacformer.io.matrix import _peaks_from_var

    peaks = _peaks_from_var(adata.var, path=source)  # chrom/chr/seqnames columns, else peak names
    chroms, starts, ends = peaks["chrom"].to_numpy(), peaks["start"].to_numpy(), peaks["end"].to_numpy()
    meta = dict(adata.uns.get(UNS_KEY, {}))
    kwargs = {"special_tokens": list(meta["special_tokens"])} if "special_tokens" in meta else {}
    return Vocabulary(chroms, starts, ends, genome=meta.get("genome") or None,
                      bin_size=int(meta.get("bin_size", 0)) or None, **kwargs)


def _counts_matrix(adata, layer: str | None, source: str):
    X = adata.X if layer is None else adata.layers[layer]
    if X is None:
        raise ValueError(f"{source}: has no X matrix (pass layer= to use a layer)")
    if getattr(X, "format", None) == "csc":  # row slices of a CSC matrix read the whole matrix
        if sp.issparse(X):
            return X.tocsr()
        raise ValueError(f"{source}: X is stored as CSC; rows cannot be streamed. Convert it to CSR "
                         "(adata.X = adata.X.tocsr(); adata.write_h5ad(...)) and retry")
    return X


def _dataset_runs(obs: pd.DataFrame, dataset: str | None, source: str) -> list[tuple[str, int, int]]:
    """``(name, start, stop)`` of each dataset: the argument, an obs column, or the file name."""
    n = len(obs)
    if dataset is not None:
        if "dataset" in obs.columns:
            logger.warning("%s: obs['dataset'] is replaced by dataset=%r", source, dataset)
        return [(dataset, 0, n)]
    if "dataset" in obs.columns and n:
        values = obs["dataset"]
        if values.isna().any():
            raise ValueError(f"{source}: obs['dataset'] has missing values; pass dataset=")
        values = values.astype(str).to_numpy()
        starts = np.concatenate([[0], np.flatnonzero(values[1:] != values[:-1]) + 1])
        names = values[starts]
        if len(set(names)) != len(names):
            raise ValueError(f"{source}: the cells of each obs['dataset'] value must be contiguous "
                             f"({names[0]!r} is split); sort the cells by dataset or pass dataset=")
        stops = np.concatenate([starts[1:], [n]])
        return [(str(d), int(a), int(b)) for d, a, b in zip(names, starts, stops)]
    if source != "AnnData":
        return [(Path(source).stem, 0, n)]
    raise ValueError("an in-memory AnnData has no file name to name its dataset: pass dataset=")


def append_anndata(corpus: Corpus, adata, dataset: str | None = None, batch: str | None = None,
                   layer: str | None = None, chunk_cells: int = 4096) -> list[ShardInfo]:
    """Append the cells of an AnnData or ``.h5ad`` path, one shard per dataset.

    Parameters
    ----------
    corpus
        The corpus to append to.
    adata
        :class:`anndata.AnnData` or the path of an ``.h5ad`` (opened backed, streamed).
    dataset
        Dataset name for every cell. Default: the runs of ``obs["dataset"]`` (one shard
        each, as :func:`write_h5ad` writes them), else the file name without suffix.
    batch, layer, chunk_cells
        Batch label for every cell (default ``obs["batch"]``, else the dataset name); the
        layer holding counts instead of ``X``; rows read at a time.

    Raises
    ------
    VocabularyMismatchError
        When ``var`` is not the corpus vocabulary (same regions, same order).

    Examples
    --------
    >>> corpus.append_anndata("pbmc.h5ad", dataset="pbmc")  # doctest: +SKIP
    [ShardInfo(name='00000-1a2b3c4d', dataset='pbmc', ...)]
    """
    with _opened(adata) as (a, source):
        return _append(corpus, a, source, dataset, batch, layer, chunk_cells)


def _append(corpus: Corpus, a, source: str, dataset, batch, layer, chunk_cells) -> list[ShardInfo]:
    corpus.vocab.check_same(vocab_from_var(a, source), what=f"{source} (its var)")
    X = _counts_matrix(a, layer, source)
    runs = _dataset_runs(a.obs, dataset, source)
    step = max(int(chunk_cells), 1)

    def chunks(start, stop):
        for i in range(start, stop, step):
            j = min(i + step, stop)
            yield X[i:j], a.obs.iloc[i:j]

    with corpus._transaction() as txn:
        for name, start, stop in runs:
            txn.write_shard(chunks(start, stop), name, batch)
    return corpus.shards[-len(runs):]


def from_anndata(adata, corpus_path, vocab: Vocabulary | None = None, dataset: str | None = None,
                 batch: str | None = None, layer: str | None = None, chunk_cells: int = 4096,
                 overwrite: bool = False) -> Corpus:
    """Create a corpus at ``corpus_path`` from an AnnData or ``.h5ad`` path.

    The corpus is built in a temporary folder and moved into place only when complete.
    ``vocab`` defaults to the regions of ``var``; when given, ``var`` must match it.
    Other parameters are those of :func:`append_anndata`.

    Examples
    --------
    >>> corpus = Corpus.from_anndata("schep.h5ad", "schep_corpus")  # doctest: +SKIP
    """
    with _opened(adata) as (a, source):
        vocab = vocab_from_var(a, source) if vocab is None else vocab
        return Corpus._build(corpus_path, vocab, overwrite,
                             fill=lambda c: _append(c, a, source, dataset, batch, layer, chunk_cells))

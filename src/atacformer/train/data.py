"""Training inputs -> on-disk corpora and the vocabulary they share.

Pretraining always reads an on-disk :class:`~atacformer.corpus.Corpus` (memory-mapped, so a
corpus larger than memory streams). Corpus folders given as inputs are read in place; every
other input (fragments files, ``.h5ad`` or other peak matrices, BED files) is tokenized once
into ``OUT/corpus`` (built aside and renamed into place, so an interrupted build is redone,
never half-used). Several corpora are read as one through :class:`CorpusSet`.

The vocabulary, in order of precedence: ``--universe`` (a BED file), ``--bins`` (fixed
bins of ``--genome``), the vocabulary of the first corpus input, the peaks of the first
``.h5ad`` input (so ``atacformer pretrain --data cells.h5ad`` trains on the file's own
peaks), and otherwise 5 kb bins of ``--genome`` (default hg38).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from atacformer.corpus import Corpus
from atacformer.tokenizers import TokenizedCells
from atacformer.tokenizers._inputs import dataset_name, peak_vocabulary, tokenize_input
from atacformer.vocab import Vocabulary

logger = logging.getLogger(__name__)

INPUTS_RECORD = "training_inputs.json"


class CorpusSet:
    """Several corpora with one vocabulary, read as one sequence of cells.

    Parameters
    ----------
    corpora
        Opened :class:`~atacformer.corpus.Corpus` objects (same regions, same order).

    Examples
    --------
    >>> cs = CorpusSet([Corpus.open("a"), Corpus.open("b")])  # doctest: +SKIP
    >>> X = cs.get_rows([0, len(cs) - 1])  # doctest: +SKIP
    """

    def __init__(self, corpora: list[Corpus]):
        if not corpora:
            raise ValueError("no corpus to train on")
        for c in corpora[1:]:
            corpora[0].vocab.check_same(c.vocab, what=f"corpus {c.path}")
        self.corpora = list(corpora)
        self.offsets = np.cumsum([0] + [len(c) for c in corpora]).astype(np.int64)

    @property
    def vocab(self) -> Vocabulary:
        return self.corpora[0].vocab

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def lengths(self) -> np.ndarray:
        """Tokens per cell (int64), from the shards' row pointers only (no token is read)."""
        parts = [np.zeros(0, dtype=np.int64)]
        for c in self.corpora:
            for s in c.shards:  # the documented layout: shards/NAME/indptr.npy
                ip = np.load(c.path / "shards" / s.name / "indptr.npy", mmap_mode="r")
                parts.append(np.diff(np.asarray(ip, dtype=np.int64)))
        return np.concatenate(parts)

    def get_rows(self, idx) -> sp.csr_matrix:
        """Cells ``idx`` (global indices, any order) as one CSR matrix."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(self.corpora) == 1:
            return self.corpora[0].get_rows(idx)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        pieces, pos = [], []
        for k in np.unique(which):
            sel = np.flatnonzero(which == k)
            pieces.append(self.corpora[k].get_rows(idx[sel] - self.offsets[k]))
            pos.append(sel)
        X = sp.vstack(pieces, format="csr")
        order = np.empty(len(idx), dtype=np.int64)
        order[np.concatenate(pos)] = np.arange(len(idx))
        return X[order]

    def obs_codes(self, key: str) -> tuple[np.ndarray, list[str]] | None:
        """Integer codes of ``obs[key]`` over all cells (-100 where missing) and the class names
        (sorted), or None when no corpus has the column."""
        cols = [c.obs[key] if key in c.obs.columns else pd.Series([None] * len(c), dtype=object)
                for c in self.corpora]
        values = pd.concat([s.astype(object).reset_index(drop=True) for s in cols], ignore_index=True)
        present = values.notna() & (values.astype(str) != "nan")
        if not present.any():
            return None
        names = sorted(values[present].astype(str).unique())
        lookup = {n: i for i, n in enumerate(names)}
        codes = np.full(len(values), -100, dtype=np.int64)
        codes[present.to_numpy()] = [lookup[v] for v in values[present].astype(str)]
        return codes, names


def _kind(path: str) -> str:
    from atacformer.tokenizers import input_kind

    return input_kind(path)


def resolve_vocab(inputs: list[str], bins: int | None = None, universe: str | None = None,
                  genome: str | None = None, cells: list | None = None) -> Vocabulary:
    """The training vocabulary (see the module docstring for the precedence; in-memory
    ``cells`` come after corpus inputs: a TokenizedCells' vocabulary, an AnnData's peaks)."""
    if universe:
        return Vocabulary.from_bed(universe, genome=genome)
    if bins:
        return Vocabulary.from_bins(genome or "hg38", bins)
    kinds = [(p, _kind(p)) for p in inputs]
    for p, k in kinds:
        if k == "corpus":
            return Corpus.open(p).vocab
    for c in cells or []:
        return c.vocab if isinstance(c, TokenizedCells) else peak_vocabulary(c)
    for p, k in kinds:
        if k == "matrix":
            return peak_vocabulary(p)
    logger.warning("no --bins/--universe and no corpus or peak matrix input: using 5000 bp bins of %s",
                   genome or "hg38")
    return Vocabulary.from_bins(genome or "hg38", 5000)


def content_hash(cells) -> str:
    """sha256 of in-memory cells (counts, cell names): what identifies them in a run record."""
    import hashlib

    X = sp.csr_matrix(cells.X)
    names = cells.barcodes if isinstance(cells, TokenizedCells) else cells.obs_names
    h = hashlib.sha256()
    for a in (X.indptr.astype(np.int64), X.indices.astype(np.int64), np.asarray(X.data, np.float64)):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("\n".join(map(str, names)).encode())
    h.update(str(X.shape).encode())
    return h.hexdigest()


def _record(inputs: list, vocab: Vocabulary, genome) -> dict:
    files = []
    for p in inputs:
        if isinstance(p, (str, os.PathLike)):
            st = os.stat(p)
            files.append({"path": os.path.abspath(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        else:
            files.append({"in_memory": type(p).__name__, "sha256": content_hash(p)})
    return {"inputs": files, "region_hash": vocab.region_hash(), "genome": genome}


def build_corpus(inputs: list, vocab: Vocabulary, path, genome: str | None = None) -> Corpus:
    """Tokenize non-corpus ``inputs`` (paths, AnnData or TokenizedCells) into a corpus at
    ``path`` (reused when it was built from the same inputs with the same vocabulary;
    rebuilt otherwise).

    An ``.h5ad`` whose columns already are ``vocab``'s regions is streamed in as it is; any
    other input goes through the tokenizers (``atacformer tokenize``'s code path).
    """
    from atacformer.tokenizers import tokenize_paths

    path = Path(path)
    record = _record(inputs, vocab, genome)
    if (path / "manifest.json").exists() and (path / INPUTS_RECORD).exists():
        if json.loads((path / INPUTS_RECORD).read_text()) == record:
            logger.info("reusing the tokenized corpus %s", path)
            return Corpus.open(path)
        logger.warning("%s was built from other inputs; rebuilding it", path)
    for stale in path.parent.glob(f".{path.name}.build-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.parent / f".{path.name}.build-{uuid.uuid4().hex[:8]}"
    try:
        corpus = Corpus.create(tmp, vocab)
        used: set[str] = set()
        for i, p in enumerate(inputs):
            name = dataset_name(p) if isinstance(p, (str, os.PathLike)) else f"cells{i}"
            while name in used:
                name += "_"
            used.add(name)
            if not isinstance(p, (str, os.PathLike)):
                corpus.append_tokenized(tokenize_input(p, vocab, genome=genome), dataset=name)
            elif str(p).endswith(".h5ad") and peak_vocabulary(p).region_hash() == vocab.region_hash():
                corpus.append_anndata(p, dataset=name)
            else:
                for _, cells in tokenize_paths([p], vocab, genome=genome):
                    corpus.append_tokenized(cells, dataset=name)
            logger.info("tokenized %s into %s", p, path)
        (tmp / INPUTS_RECORD).write_text(json.dumps(record, indent=2))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Corpus.open(path)


def prepare_corpora(inputs: list[str], out, bins=None, universe=None, genome=None,
                    build: bool = True, cells=None, vocab: Vocabulary | None = None) -> CorpusSet:
    """The :class:`CorpusSet` a run trains on: corpus inputs in place plus ``OUT/corpus``
    for the other inputs and the in-memory ``cells`` (AnnData / TokenizedCells, one or a
    list); built when ``build``, other ranks pass False and open it. ``vocab`` (a base
    model's vocabulary) overrides the usual choice."""
    cells = [] if cells is None else (list(cells) if isinstance(cells, (list, tuple)) else [cells])
    if not inputs and not cells:
        raise ValueError("no training data: pass --data INPUT (a corpus folder, fragments file or .h5ad)")
    for p in inputs:
        if not os.path.exists(p):
            raise FileNotFoundError(f"{p}: no such training input")
    vocab = vocab or resolve_vocab(inputs, bins, universe, genome, cells)
    corpora = [Corpus.open(p) for p in inputs if _kind(p) == "corpus"]
    for c in corpora:
        vocab.check_same(c.vocab, what=f"corpus {c.path}")
    others = [p for p in inputs if _kind(p) != "corpus"] + cells
    if others:
        target = Path(out) / "corpus"
        corpora.append(build_corpus(others, vocab, target, genome) if build else Corpus.open(target))
    cs = CorpusSet(corpora)
    if len(cs) == 0:
        raise ValueError("the training data holds no cells")
    logger.info("training corpus: %d cells over %d corpora, %r", len(cs), len(corpora), cs.vocab)
    return cs


def input_obs(inputs: list[str], cells=None) -> list[tuple[str, pd.DataFrame | None]]:
    """``(name, obs)`` of every training input without tokenizing it (None for inputs
    that carry no cell metadata, such as fragments files)."""
    cells = [] if cells is None else (list(cells) if isinstance(cells, (list, tuple)) else [cells])
    out = []
    for p in inputs:
        kind = _kind(p)
        if kind == "corpus":
            out.append((p, Corpus.open(p).obs))
        elif str(p).endswith(".h5ad"):
            import anndata as ad
            import h5py

            with h5py.File(p, "r") as f:
                out.append((p, ad.io.read_elem(f["obs"]) if hasattr(ad, "io") else ad.experimental.read_elem(f["obs"])))
        else:
            out.append((p, None))
    for i, c in enumerate(cells):
        out.append((f"in-memory cells #{i}", getattr(c, "obs", None)))
    return out


def check_label_column(inputs: list[str], cells, key: str) -> None:
    """Raise before anything is written when no input has ``obs[key]``, when it has no
    known value, or a single class."""
    found, values = [], []
    for name, obs in input_obs(inputs, cells):
        if obs is not None and key in obs.columns:
            found.append(name)
            v = obs[key].astype(object)
            values.append(v[v.notna() & (v.astype(str) != "nan")].astype(str))
    if not found:
        cols = sorted({c for _, obs in input_obs(inputs, cells) if obs is not None for c in obs.columns})
        raise KeyError(f"obs[{key!r}] is not in the training data ({', '.join(map(str, inputs)) or 'in memory'}; "
                       f"obs columns: {cols})")
    known = pd.concat(values) if values else pd.Series([], dtype=str)
    if known.empty:
        raise ValueError(f"obs[{key!r}] has no known value in {', '.join(found)} (every value is missing)")
    if known.nunique() < 2:
        raise ValueError(f"obs[{key!r}] has one class only ({known.iloc[0]!r}) in {', '.join(found)}; "
                         "fine-tuning needs at least 2")


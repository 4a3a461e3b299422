"""Any supported input path -> tokenized cells: the one entry point every command shares.

Inputs are recognised by their form: a fragments file (``.tsv(.gz)``), a peak matrix
(``.h5ad``, 10x ``.h5`` or a Matrix Market folder), a BED region set (``.bed``,
``.narrowPeak``... one row per file), or an on-disk corpus folder (``manifest.json``).
Errors are the package's own (:class:`~atacformer.errors.InputFormatError`), so that the
command line and the library report them the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from atacformer.errors import InputFormatError
from atacformer.tokenizers._cells import TokenizedCells
from atacformer.vocab import Vocabulary

logger = logging.getLogger(__name__)

FRAGMENT_SUFFIXES = (".tsv", ".tsv.gz", ".tsv.bgz", ".fragments.gz")
BED_SUFFIXES = (".bed", ".bed.gz", ".narrowpeak", ".narrowpeak.gz", ".broadpeak", ".broadpeak.gz", ".bed.bgz")
MATRIX_SUFFIXES = (".h5ad", ".h5")
KINDS = ("fragments", "matrix", "bed", "corpus")


def input_kind(path, forced: str | None = None) -> str:
    """``"fragments"``, ``"matrix"``, ``"bed"`` or ``"corpus"`` from a path's form.

    Examples
    --------
    >>> input_kind("pbmc.fragments.tsv.gz"), input_kind("peaks.narrowPeak"), input_kind("x.h5ad")
    ('fragments', 'bed', 'matrix')
    """
    if forced:
        if forced not in KINDS:
            raise ValueError(f"input type must be one of {KINDS}, got {forced!r}")
        return forced
    p = Path(path)
    low = p.name.lower()
    if p.is_dir():
        return "corpus" if (p / "manifest.json").exists() else "matrix"
    if low.endswith(MATRIX_SUFFIXES):
        return "matrix"
    if low.endswith(BED_SUFFIXES):
        return "bed"
    if low.endswith(FRAGMENT_SUFFIXES) or "fragments" in low:
        return "fragments"
    raise InputFormatError(path, "cannot tell the type of this input; name it .tsv.gz (fragments), "
                           ".bed/.narrowPeak (region set), .h5ad/.h5/MTX folder (peak matrix), or pass "
                           "--input-type")


def dataset_name(path) -> str:
    """The dataset name of an input: its file name up to the first dot."""
    return Path(path).name.split(".")[0] or "data"


def peak_vocabulary(source) -> Vocabulary:
    """The vocabulary of a peak matrix's own peaks: an AnnData or a path (``.h5ad``, 10x
    ``.h5``, MTX folder). Coordinates come from ``var`` columns (``chrom``/``chr``/
    ``seqnames`` + start + end) or from peak names, as every reader of the package takes them.

    Examples
    --------
    >>> import anndata as ad, pandas as pd
    >>> a = ad.AnnData(np.ones((1, 2), np.int32), var=pd.DataFrame(index=["chr1:0-10", "chr2:5-9"]))
    >>> peak_vocabulary(a).n_regions
    2
    """
    from atacformer.corpus import vocab_from_var

    if hasattr(source, "var"):
        return vocab_from_var(source)
    path = Path(source)
    if path.name.lower().endswith(".h5ad"):
        import anndata as ad

        try:
            a = ad.read_h5ad(path, backed="r")
        except Exception as err:  # anndata / h5py raise many types on a corrupt file
            raise InputFormatError(path, f"cannot read as .h5ad ({type(err).__name__}: {err})") from err
        try:
            return vocab_from_var(a, source=str(path))
        finally:
            a.file.close()
    from atacformer.io.matrix import read_peak_matrix

    p = read_peak_matrix(path).peaks
    return Vocabulary(p["chrom"].astype(str).to_numpy(), p["start"].to_numpy(), p["end"].to_numpy())


def tokenize_paths(inputs, vocab: Vocabulary, *, genome=None, barcodes=None, min_fragments: int = 0,
                   mode: str = "fragment", input_type: str | None = None, **fragments_options):
    """Tokenize each input into ``vocab``; yields ``(dataset_name, TokenizedCells)``.

    ``fragments_options`` (``qc``, ``tss``, ``min_tsse``, ``knee``) go to
    :func:`~atacformer.tokenizers.tokenize_fragments` for fragments inputs.

    Fragments files and peak matrices give one item each; all BED files together give one
    item named ``"bed"`` with one row per file. A corpus cannot be tokenized again.

    Examples
    --------
    >>> for name, cells in tokenize_paths(["a.tsv.gz"], Vocabulary.from_bins("hg38", 5000)):  # doctest: +SKIP
    ...     print(name, cells.summary())
    """
    from atacformer.tokenizers import tokenize_bed, tokenize_fragments, tokenize_peak_matrix

    beds = []
    for path in inputs:
        kind = input_kind(path, input_type)
        if kind == "fragments":
            yield dataset_name(path), tokenize_fragments(path, vocab, genome=genome, barcodes=barcodes,
                                                         min_fragments=min_fragments, mode=mode,
                                                         **fragments_options)
        elif kind == "matrix":
            yield dataset_name(path), tokenize_peak_matrix(path, vocab, genome=genome)
        elif kind == "bed":
            beds.append((Path(path).name, tokenize_bed(path, vocab, genome=genome)))
        else:
            raise InputFormatError(path, "this is a corpus folder: it is tokenized already")
    if beds:  # bulk region sets: one row per file
        rows = np.repeat(np.arange(len(beds)), [len(t) for _, t in beds])
        cols = np.concatenate([t for _, t in beds])
        X = sp.csr_matrix((np.ones(len(cols), np.int32), (rows, cols)), shape=(len(beds), vocab.n_regions))
        yield "bed", TokenizedCells(X=X, barcodes=np.array([n for n, _ in beds], dtype=object), vocab=vocab)


def tokenize_input(source, vocab: Vocabulary, *, genome=None, barcodes=None, min_fragments: int = 0,
                   input_type: str | None = None) -> TokenizedCells:
    """The cells of one input in ``vocab``: a path of any kind (a corpus too), an AnnData,
    or :class:`TokenizedCells`. An ``.h5ad`` or AnnData whose columns already are
    ``vocab``'s regions is taken as it is; anything else goes through the tokenizers.

    Examples
    --------
    >>> cells = tokenize_input("cells.h5ad", model.vocab)  # doctest: +SKIP
    """
    from atacformer.tokenizers import tokenize_peak_matrix

    if isinstance(source, TokenizedCells):
        if source.vocab.region_hash() == vocab.region_hash():
            return source
        source = source.to_anndata()
    if hasattr(source, "var"):  # an AnnData in memory
        if _same_regions(source, vocab):
            return _cells_from_anndata(source, vocab)
        return tokenize_peak_matrix(source, vocab, genome=genome)
    kind = input_kind(source, input_type)
    if kind == "corpus":
        from atacformer.corpus import Corpus

        c = Corpus.open(source)
        vocab.check_same(c.vocab, what=f"corpus {source}")
        X = c.get_rows(range(len(c)))
        return TokenizedCells(X=X, barcodes=c.obs.index.to_numpy(), vocab=vocab, obs=c.obs.copy())
    if kind == "matrix" and str(source).lower().endswith(".h5ad"):
        import anndata as ad

        try:
            a = ad.read_h5ad(source, backed="r")
        except Exception as err:  # anndata / h5py raise many types on a corrupt file
            raise InputFormatError(source, f"cannot read as .h5ad ({type(err).__name__}: {err})") from err
        same = _same_regions(a, vocab)
        a.file.close()
        if same:
            return _cells_from_anndata(ad.read_h5ad(source), vocab)
    [(_, cells)] = list(tokenize_paths([source], vocab, genome=genome, barcodes=barcodes,
                                       min_fragments=min_fragments, input_type=input_type))
    return cells


def _same_regions(adata, vocab: Vocabulary) -> bool:
    if adata.n_vars != vocab.n_regions:
        return False
    try:
        return peak_vocabulary(adata).region_hash() == vocab.region_hash()
    except InputFormatError:
        return False


def _cells_from_anndata(adata, vocab: Vocabulary) -> TokenizedCells:
    X = sp.csr_matrix(adata.X)
    if X.nnz and (X.data < 0).any():
        k = int(np.flatnonzero(X.data < 0)[0])
        row = int(np.searchsorted(X.indptr, k, side="right") - 1)
        raise InputFormatError(None, f"cell {adata.obs_names[row]!r}, region {int(X.indices[k])} has a negative "
                               "count", value=float(X.data[k]))
    return TokenizedCells(X=X, barcodes=adata.obs_names.to_numpy(), vocab=vocab, obs=adata.obs.copy())

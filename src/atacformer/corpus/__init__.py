"""On-disk tokenized corpora, streaming datasets and rank/worker sharding.

A :class:`Corpus` is a folder holding a cells x vocabulary CSR count matrix as
memory-mapped ``.npy`` shards (one per appended dataset), per-cell metadata as parquet and
the :class:`~atacformer.vocab.Vocabulary`. It is appendable dataset by dataset, readable at
any cell without loading the rest, and exchangeable with ``.h5ad``.
:func:`tokenize_to_corpus` fills one from many inputs in parallel (local processes or Dask).
:class:`CorpusDataset` streams it into PyTorch, sharded over distributed ranks and
data-loader workers by :func:`shard_indices`.

Examples
--------
>>> from atacformer.corpus import Corpus, CorpusDataset
>>> corpus = Corpus.from_anndata("schep.h5ad", "schep_corpus")  # doctest: +SKIP
>>> corpus.append_anndata("buenrostro.h5ad")  # doctest: +SKIP
>>> token_ids, counts = corpus[0]  # doctest: +SKIP
"""

from atacformer.corpus._h5ad import (
    append_anndata,
    from_anndata,
    to_anndata,
    vocab_from_var,
    write_h5ad,
)
from atacformer.corpus.corpus import Corpus, ShardInfo
from atacformer.corpus.parallel import TokenizeRun, WorkerLostError, tokenize_to_corpus
from atacformer.corpus.sharding import epoch_order, shard_indices


def __getattr__(name):
    # torch is imported only when the PyTorch dataset is asked for.
    if name == "CorpusDataset":
        from atacformer.corpus.dataset import CorpusDataset

        return CorpusDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Corpus", "CorpusDataset", "ShardInfo", "append_anndata", "epoch_order", "from_anndata",
           "shard_indices", "to_anndata", "tokenize_to_corpus", "TokenizeRun", "vocab_from_var",
           "WorkerLostError", "write_h5ad"]

"""The torch IterableDataset: every cell exactly once across workers and ranks, with its tokens."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader

from atacformer.corpus import Corpus, CorpusDataset


@pytest.fixture
def corpus_and_source(tmp_path, vocab, make_counts):
    parts = [make_counts(n, vocab.n_regions, seed=n) for n in (23, 1, 40)]
    c = Corpus.create(tmp_path / "c", vocab)
    for k, X in enumerate(parts):
        c.append(X, dataset=f"d{k}")
    return c, sp.vstack(parts).tocsr()


def check_items(items, source):
    for item in items:
        row = source[item["index"]]
        assert item["input_ids"].dtype == torch.int64  # the loader's default_convert made tensors
        assert item["input_ids"].tolist() == row.indices.tolist()
        assert item["counts"].tolist() == row.data.tolist()


@pytest.mark.parametrize("shuffle", [False, True])
def test_dataloader_with_two_workers_covers_every_cell_once(corpus_and_source, shuffle):
    c, source = corpus_and_source
    ds = CorpusDataset(c.path, shuffle=shuffle, seed=3, read_cells=5)
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    for epoch in range(2):
        ds.set_epoch(epoch)
        items = list(loader)
        assert sorted(i["index"] for i in items) == list(range(len(c)))
        check_items(items, source)
    assert len(ds) == len(c)


def test_ranks_and_workers_partition_the_corpus(corpus_and_source):
    c, source = corpus_and_source
    seen = []
    for rank in range(3):
        ds = CorpusDataset(c, rank=rank, world_size=3, shuffle=True, seed=1, block_size=4, shuffle_buffer=6)
        items = list(DataLoader(ds, batch_size=None, num_workers=2))
        assert len(items) == len(ds)
        check_items(items, source)
        seen += [i["index"] for i in items]
    assert sorted(seen) == list(range(len(c)))


def test_batched_loading_with_a_collator_and_numpy_items(corpus_and_source):
    c, source = corpus_and_source

    def collate(items):
        return items  # numpy items pass through the worker queue by pickling

    ds = CorpusDataset(c, shuffle=True, seed=2)
    batches = list(DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate))
    items = [i for b in batches for i in b]
    assert sorted(i["index"] for i in items) == list(range(len(c)))
    for item in items:
        assert isinstance(item["input_ids"], np.ndarray) and item["input_ids"].dtype == np.int64
        assert item["input_ids"].tolist() == source[item["index"]].indices.tolist()
    pt = next(iter(CorpusDataset(c, return_tensors="pt")))
    assert isinstance(pt["input_ids"], torch.Tensor) and pt["input_ids"].dtype == torch.int64


def test_drop_last_and_subset(corpus_and_source):
    c, _ = corpus_and_source
    subset = np.arange(0, len(c), 2)  # 32 cells
    counts = [len(list(CorpusDataset(c, rank=r, world_size=3, indices=subset, drop_last=True)))
              for r in range(3)]
    assert counts == [10, 10, 10]
    cells = [i["index"] for i in CorpusDataset(c, indices=subset)]
    assert cells == subset.tolist()


def test_shuffle_buffer_changes_order_not_content(corpus_and_source):
    c, _ = corpus_and_source
    plain = [i["index"] for i in CorpusDataset(c, shuffle=True, block_size=8)]
    buffered = [i["index"] for i in CorpusDataset(c, shuffle=True, block_size=8, shuffle_buffer=16)]
    assert sorted(plain) == sorted(buffered) == list(range(len(c)))
    assert plain != buffered


def test_spawned_workers_reopen_the_corpus_by_path(corpus_and_source):
    # spawn/forkserver pickle the dataset: the corpus must travel as a path, not as its data
    c, source = corpus_and_source
    ds = CorpusDataset(c, read_cells=7)
    loader = DataLoader(ds, batch_size=4, num_workers=1, collate_fn=list, multiprocessing_context="spawn")
    items = [i for b in loader for i in b]
    assert sorted(i["index"] for i in items) == list(range(len(c)))
    for item in items:
        assert item["counts"].tolist() == source[item["index"]].data.tolist()

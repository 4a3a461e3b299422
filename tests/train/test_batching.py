"""Epoch plans and micro-batches: coverage, sharding, bucketing, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from atacformer.models import AtacformerConfig
from atacformer.train.batching import MicroBatches, make_loader, plan_epoch
from atacformer.train.collate import ReplacedTokenBatcher
from atacformer.train.data import CorpusSet
from atacformer.corpus import Corpus


def _cells(plan):
    return np.concatenate([plan.batch(k) for k in range(plan.n_steps)])


@pytest.mark.parametrize("batching", ["bucket", "padded"])
@pytest.mark.parametrize("n,batch", [(1000, 32), (97, 10), (5, 4)])
def test_plan_covers_every_nonempty_cell_once(batching, n, batch):
    rng = np.random.default_rng(n)
    lengths = rng.integers(0, 500, n)
    lengths[::7] = 0  # empty cells are left out
    plan = plan_epoch(lengths, batch, epoch=3, seed=1, batching=batching, bucket_window=4, min_cells=2)
    cells = _cells(plan)
    assert sorted(cells.tolist()) == np.flatnonzero(lengths).tolist()
    sizes = np.diff(plan.bounds)
    assert sizes.min() >= 2
    if batching == "padded" and plan.n_steps > 1:
        assert (sizes[:-1] == batch).all()


def test_plan_depends_on_seed_and_epoch_only():
    lengths = np.random.default_rng(0).integers(1, 300, 500)
    a = plan_epoch(lengths, 16, epoch=2, seed=5)
    b = plan_epoch(lengths.copy(), 16, epoch=2, seed=5)
    c = plan_epoch(lengths, 16, epoch=3, seed=5)
    assert np.array_equal(a.cells, b.cells) and np.array_equal(a.bounds, b.bounds)
    assert not np.array_equal(a.cells, c.cells)


def _padding(plan, lengths, n_parts):
    """Padded fraction computed by brute force: every part padded to its longest cell."""
    real = slots = 0
    for k in range(plan.n_steps):
        for p in range(n_parts):
            part = lengths[plan.part(k, p, n_parts)]
            real += part.sum()
            slots += len(part) * part.max()
    return 1 - real / slots


def test_bucketing_removes_most_padding():
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.lognormal(7, 0.8, 4000).astype(int) + 1, 8192)  # scATAC-like spread
    padded = _padding(plan_epoch(lengths, 64, 0, 0, "padded"), lengths, 2)
    bucket = _padding(plan_epoch(lengths, 64, 0, 0, "bucket", bucket_window=64), lengths, 2)
    assert padded > 0.4
    assert bucket < 0.03


def _toy_dataset(corpus_path, rank, world, accum, start_step=0, epoch=0):
    corpus = CorpusSet([Corpus.open(corpus_path)])
    cfg = AtacformerConfig.for_vocab(corpus.vocab, hidden_size=16, num_layers=1, num_heads=2,
                                     intermediate_size=32, max_length=40)
    batcher = ReplacedTokenBatcher(cfg)
    lengths = batcher.effective_lengths(corpus.lengths())
    plan = plan_epoch(lengths, 8, epoch=epoch, seed=3, min_cells=world * accum)
    return MicroBatches(corpus, plan, batcher, seed=3, rank=rank, world_size=world, grad_accum=accum,
                        start_step=start_step), plan, lengths


@pytest.mark.parametrize("world,accum,workers", [(1, 1, 0), (2, 1, 2), (2, 2, 2), (4, 1, 0)])
def test_ranks_and_workers_partition_the_epoch(toy_corpus, world, accum, workers):
    seen = []
    worker_ids = set()
    for rank in range(world):
        ds, plan, lengths = _toy_dataset(toy_corpus, rank, world, accum)
        for item in make_loader(ds, num_workers=workers):
            meta = item["meta"]
            assert meta["part"] // accum == rank
            seen.append(np.asarray(meta["cells"]))
            worker_ids.add(meta["worker"])
            mask = item["attention_mask"]
            # the padded tensor has exactly the real tokens of the cells it holds
            assert int(mask.sum()) == int(lengths[np.asarray(meta["cells"])].sum())
    cells = np.concatenate(seen)
    assert len(cells) == len(set(cells.tolist()))  # no overlap
    assert sorted(cells.tolist()) == np.flatnonzero(lengths).tolist()  # full coverage
    assert worker_ids == ({-1} if workers == 0 else set(range(workers)))


def test_micro_batch_is_a_function_of_its_position(toy_corpus):
    """The same (epoch, step, part) gives the same tensors with other workers, other rank
    layouts with the same number of parts, and when the loader starts mid-epoch (resume)."""
    ref, _, _ = _toy_dataset(toy_corpus, 0, 1, 2)
    items = {(m["meta"]["step"], m["meta"]["part"]): m for m in make_loader(ref, 0)}
    other, _, _ = _toy_dataset(toy_corpus, 1, 2, 1, start_step=2)
    for m in make_loader(other, num_workers=2):
        r = items[(m["meta"]["step"], m["meta"]["part"])]
        for k in ("input_ids", "attention_mask", "labels"):
            assert (m[k] == r[k]).all()

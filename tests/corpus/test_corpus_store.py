"""Corpus creation, appends, random access and atomicity, checked against the source matrices."""

from __future__ import annotations

import itertools
import json
import pickle

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atacformer.corpus import Corpus
from atacformer.errors import VocabularyMismatchError
from atacformer.vocab import Vocabulary


def assert_csr_equal(a, b):
    a, b = sp.csr_matrix(a), sp.csr_matrix(b)
    assert a.shape == b.shape
    assert (a != b).nnz == 0


def test_round_trip_csr_and_obs(tmp_path, vocab, make_counts, make_obs):
    X, obs = make_counts(40, vocab.n_regions), make_obs(40, "AAC")
    c = Corpus.create(tmp_path / "c", vocab)
    info = c.append(X, obs, dataset="d1", batch="b1")
    assert (info.n_cells, info.n_tokens, info.counts_dtype) == (40, X.nnz, "uint8")

    c = Corpus.open(tmp_path / "c")
    assert len(c) == 40 and c.n_tokens == X.nnz and c.vocab == vocab
    assert_csr_equal(c[0:len(c)], X)
    out = c.obs
    assert list(out.index) == list(obs.index)
    assert list(out["barcode"]) == list(obs.index)
    assert (out["dataset"] == "d1").all() and (out["batch"] == "b1").all()
    assert list(out["cell_type"].astype(str)) == list(obs["cell_type"])
    np.testing.assert_array_equal(out["n_fragments"], obs["n_fragments"])
    np.testing.assert_array_equal(out["tss_score"], obs["tss_score"])


def test_random_access_matches_source(tmp_path, vocab, make_counts, make_obs):
    parts = [make_counts(n, vocab.n_regions, seed=s) for s, n in enumerate((13, 1, 30))]
    c = Corpus.create(tmp_path / "c", vocab)
    for k, X in enumerate(parts):
        c.append(X, make_obs(X.shape[0], f"ds{k}-"), dataset=f"ds{k}")
    full = sp.vstack(parts).tocsr()
    rng = np.random.default_rng(1)
    for i in rng.integers(0, len(c), 25):
        ids, counts = c[int(i)]
        row = full[int(i)]
        np.testing.assert_array_equal(ids, np.sort(row.indices))
        np.testing.assert_array_equal(counts, row.toarray()[0][ids])
        assert ids.dtype == np.int64
    idx = rng.integers(-len(c), len(c), 60)  # any order, repeats and negative indices
    assert_csr_equal(c.get_rows(idx), full[np.where(idx < 0, idx + len(c), idx)])
    assert_csr_equal(c[5:40], full[5:40])
    assert_csr_equal(c[::7], full[::7])
    assert [s.offset for s in c.shards] == [0, 13, 14]
    with pytest.raises(IndexError, match="out of range"):
        c[len(c)]


def test_several_datasets_and_real_data(tmp_path, schep, schep_vocab):
    X = schep.X.tocsr()
    c = Corpus.create(tmp_path / "c", schep_vocab)
    bounds = [0, 150, 151, 600]
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        c.append(X[a:b], schep.obs.iloc[a:b], dataset=f"part{k}")
    assert c.datasets == ["part0", "part1", "part2"]
    assert len(c) == 600 and c.n_tokens == X.nnz
    assert_csr_equal(c[0:600], X)
    rng = np.random.default_rng(0)
    idx = rng.choice(600, 100, replace=False)
    assert_csr_equal(c.get_rows(idx), X[idx])
    assert list(c.obs.index) == list(schep.obs_names)
    assert list(c.obs["cell_type"].astype(str)) == list(schep.obs["cell_type"].astype(str))
    assert list(c.obs["dataset"]) == ["part0"] * 150 + ["part1"] + ["part2"] * 449


def test_chunked_append_equals_one_shot(tmp_path, vocab, make_counts, make_obs, folder_snapshot):
    X, obs = make_counts(57, vocab.n_regions, seed=3), make_obs(57, "c")
    one = Corpus.create(tmp_path / "one", vocab)
    one.append(X, obs, dataset="d")
    many = Corpus.create(tmp_path / "many", vocab)
    cuts = [0, 1, 20, 21, 57]
    many.append_chunks(((X[a:b], obs.iloc[a:b]) for a, b in itertools.pairwise(cuts)), dataset="d")
    a = {k.split("/", 2)[-1]: v for k, v in folder_snapshot(one.path / "shards").items()}
    b = {k.split("/", 2)[-1]: v for k, v in folder_snapshot(many.path / "shards").items()}
    for name in ("indptr.npy", "indices.npy", "counts.npy"):
        assert a[name] == b[name]
    pd.testing.assert_frame_equal(one.obs, many.obs)


def test_counts_dtype_widens_when_a_later_chunk_needs_it(tmp_path, vocab, make_counts):
    small = make_counts(10, vocab.n_regions, seed=1, max_count=1)
    big = make_counts(10, vocab.n_regions, seed=2, max_count=3)
    big.data[0] = 70_000  # needs uint32; an earlier chunk fitted uint8
    c = Corpus.create(tmp_path / "c", vocab)
    info = c.append_chunks([(small, None), (big, None), (small, None)], dataset="d")
    assert info.counts_dtype == "uint32" and info.max_count == 70_000
    assert c.counts_dtype == np.int64
    assert_csr_equal(c[0:30], sp.vstack([small, big, small]))


def test_canonicalises_input(tmp_path, vocab):
    # unsorted ids, a duplicated (cell, token) entry, an explicit zero, float and bool input
    X = sp.csr_matrix((np.array([2.0, 1.0, 0.0, 3.0]), np.array([7, 3, 5, 7]), np.array([0, 4, 4])),
                      shape=(2, vocab.n_regions))
    c = Corpus.create(tmp_path / "c", vocab)
    c.append(X, dataset="f")
    assert X.indices.tolist() == [7, 3, 5, 7] and X.data.tolist() == [2.0, 1.0, 0.0, 3.0]  # input untouched
    ids, counts = c[0]
    assert ids.tolist() == [3, 7] and counts.tolist() == [1, 5]
    assert c[1][0].size == 0
    c.append(np.eye(2, vocab.n_regions, dtype=bool), dataset="b")
    assert c[2][0].tolist() == [0] and c[2][1].tolist() == [1]


def test_interrupted_append_leaves_corpus_unchanged(tmp_path, vocab, make_counts, folder_snapshot):
    c = Corpus.create(tmp_path / "c", vocab)
    c.append(make_counts(5, vocab.n_regions), dataset="kept")
    before = folder_snapshot(c.path)

    def chunks(error):
        yield make_counts(10, vocab.n_regions, seed=1), None
        yield make_counts(10, vocab.n_regions, seed=2), None
        raise error

    for error in (RuntimeError("disk on fire"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            c.append_chunks(chunks(error), dataset="lost")
        assert folder_snapshot(c.path) == before
        assert len(c) == 5 and len(Corpus.open(c.path)) == 5
    assert not list(c.path.glob(".tmp-*"))


def test_leftovers_of_a_killed_append_are_ignored_then_removed(tmp_path, vocab, make_counts):
    c = Corpus.create(tmp_path / "c", vocab)
    c.append(make_counts(5, vocab.n_regions), dataset="kept")
    (c.path / ".tmp-deadbeef").mkdir()
    (c.path / ".tmp-deadbeef" / "indices.npy").write_bytes(b"partial")
    (c.path / "shards" / "00001-cafecafe").mkdir()  # renamed, but the manifest was never replaced
    assert len(Corpus.open(c.path)) == 5
    c.append(make_counts(3, vocab.n_regions), dataset="next")
    assert not (c.path / ".tmp-deadbeef").exists() and not (c.path / "shards" / "00001-cafecafe").exists()
    assert len(Corpus.open(c.path)) == 8


@pytest.mark.parametrize("bad, match", [
    (lambda n: (sp.csr_matrix((3, n - 1)), None), r"has 49 columns but the corpus vocabulary has 50 regions"),
    (lambda n: (sp.csr_matrix(np.array([[0, -2] + [0] * (n - 2)])), None), r"non-negative; cell 0, token 1"),
    (lambda n: (sp.csr_matrix(np.array([[0.5] + [0] * (n - 1)])), None), r"whole numbers; cell 0, token 0"),
    (lambda n: (sp.csr_matrix(np.array([[np.nan] + [0] * (n - 1)])), None), r"whole numbers"),
    (lambda n: (sp.csr_matrix((4, n)), pd.DataFrame(index=list("abc"))), r"obs has 3 rows but the count matrix has 4"),
    (lambda n: (sp.csr_matrix((2, n)), pd.DataFrame(index=["x", "x"])), r"barcode 'x' occurs more than once"),
    (lambda n: (sp.csr_matrix((2, n)), pd.DataFrame({"m": [1, "a"]})), r"obs column 'm' mixes value types"),
    (lambda n: (np.zeros((2, n, 1)), None), r"2-D"),
    (lambda n: (sp.csr_matrix((0, n)), None), r"no cells to append"),
])
def test_bad_input_is_refused_cleanly(tmp_path, vocab, make_counts, folder_snapshot, bad, match):
    c = Corpus.create(tmp_path / "c", vocab)
    c.append(make_counts(4, vocab.n_regions), dataset="ok")
    before = folder_snapshot(c.path)
    X, obs = bad(vocab.n_regions)
    with pytest.raises(ValueError, match=match):
        c.append(X, obs, dataset="bad")
    assert folder_snapshot(c.path) == before


def test_dataset_names_are_unique(tmp_path, vocab, make_counts):
    c = Corpus.create(tmp_path / "c", vocab)
    c.append(make_counts(2, vocab.n_regions), dataset="d")
    with pytest.raises(ValueError, match="'d' is already in corpus"):
        c.append(make_counts(2, vocab.n_regions), dataset="d")
    with pytest.raises(ValueError, match="non-empty string"):
        c.append(make_counts(2, vocab.n_regions), dataset="")


def test_repeated_barcodes_across_datasets_get_dataset_prefix(tmp_path, vocab, make_counts):
    c = Corpus.create(tmp_path / "c", vocab)
    for name in ("a", "b"):
        c.append(make_counts(3, vocab.n_regions), pd.DataFrame(index=["x", "y", "z"]), dataset=name)
    assert list(c.obs.index) == ["a:x", "a:y", "a:z", "b:x", "b:y", "b:z"]
    assert list(c.obs["barcode"]) == ["x", "y", "z"] * 2


def test_create_open_and_overwrite_rules(tmp_path, vocab, make_counts):
    c = Corpus.create(tmp_path / "c", vocab)
    c.append(make_counts(2, vocab.n_regions), dataset="d")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        Corpus.create(tmp_path / "c", vocab)
    assert len(Corpus.create(tmp_path / "c", vocab, overwrite=True)) == 0
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("x")
    with pytest.raises(FileExistsError, match="neither a corpus nor an empty folder"):
        Corpus.create(tmp_path / "precious", vocab, overwrite=True)
    assert (tmp_path / "precious" / "thesis.tex").exists()
    with pytest.raises(FileNotFoundError, match="not an atacformer corpus"):
        Corpus.open(tmp_path / "precious")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "precious"]  # no temporary folders


def test_vocabulary_swapped_on_disk_is_detected(tmp_path, vocab):
    c = Corpus.create(tmp_path / "c", vocab)
    other = Vocabulary(vocab.chroms, vocab.starts + 1, vocab.ends + 1)
    other.save(c.path / "vocab")
    with pytest.raises(VocabularyMismatchError):
        Corpus.open(c.path)


def test_newer_format_is_refused(tmp_path, vocab):
    c = Corpus.create(tmp_path / "c", vocab)
    m = json.loads((c.path / "manifest.json").read_text())
    m["version"] = 99
    (c.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="version 99 is newer"):
        Corpus.open(c.path)


def test_pickles_by_reference_not_by_data(tmp_path, vocab, make_counts):
    X = make_counts(300, vocab.n_regions, density=0.5)
    c = Corpus.create(tmp_path / "c", vocab)
    c.append(X, dataset="d")
    c.get_rows([0, 299])  # maps the shard
    blob = pickle.dumps(c)
    assert len(blob) < X.nnz  # the token arrays are not in the pickle
    assert_csr_equal(pickle.loads(blob)[0:300], X)


def test_iter_chunks_streams_everything(tmp_path, vocab, make_counts):
    parts = [make_counts(n, vocab.n_regions, seed=n) for n in (7, 9)]
    c = Corpus.create(tmp_path / "c", vocab)
    for k, X in enumerate(parts):
        c.append(X, dataset=str(k))
    chunks = list(c.iter_chunks(4))
    assert [a for a, _ in chunks] == [0, 4, 8, 12]
    assert_csr_equal(sp.vstack([X for _, X in chunks]), sp.vstack(parts))


def test_append_tokenized_cells(tmp_path, schep, schep_vocab):
    from atacformer.tokenizers import TokenizedCells

    cells = TokenizedCells(X=schep.X.tocsr(), barcodes=schep.obs_names.to_numpy(), vocab=schep_vocab,
                           obs=schep.obs[["cell_type"]].reset_index(drop=True))
    c = Corpus.create(tmp_path / "c", schep_vocab)
    c.append_tokenized(cells, dataset="schep")
    assert_csr_equal(c[0:len(c)], schep.X)
    assert list(c.obs.index) == list(schep.obs_names)
    assert list(c.obs["cell_type"].astype(str)) == list(schep.obs["cell_type"].astype(str))
    other = TokenizedCells(X=schep.X.tocsr(), barcodes=schep.obs_names.to_numpy(),
                           vocab=Vocabulary(schep_vocab.chroms, schep_vocab.starts + 1, schep_vocab.ends + 1))
    with pytest.raises(VocabularyMismatchError):
        c.append_tokenized(other, dataset="other")

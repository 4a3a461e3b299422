"""A second corpus writer waits for the first one's lock instead of failing, up to a timeout."""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp
from _cases import CASES, hold_writer_lock, run_case, small_corpus

from atacformer.corpus import Corpus
from atacformer.corpus._fs import LOCK_TIMEOUT


def test_append_waits_for_the_other_writer_then_succeeds(tmp_path, caplog):
    path = tmp_path / "corpus"
    small_corpus(path)
    proc, release = hold_writer_lock(path, 1.0)  # another process appends for about 1 s
    try:
        c = Corpus.open(path)
        assert c.lock_timeout == LOCK_TIMEOUT == 600
        t0 = time.monotonic()
        with caplog.at_level(logging.INFO, logger="atacformer"):
            c.append(sp.csr_matrix(np.eye(2, 10, dtype=np.int64) * 2), dataset="second")
        waited = time.monotonic() - t0
    finally:
        release.set()
        proc.join(30)
    assert proc.exitcode == 0
    assert waited >= 0.5, waited  # it did wait for the holder
    assert any(f"waiting for the writer lock on {path}" in r.getMessage() for r in caplog.records)
    again = Corpus.open(path)
    assert again.datasets == ["first", "second"] and len(again) == 5
    assert again.get_rows([3]).toarray()[0, 0] == 2


def test_append_gives_up_after_the_timeout_and_leaves_the_corpus_unchanged(tmp_path):
    t0 = time.monotonic()
    err = run_case(CASES["corpus-writer-lock-timeout"], tmp_path)
    assert time.monotonic() - t0 < 20
    assert "after 0.3 s" in str(err)
    c = Corpus.open(tmp_path / "corpus")
    assert c.datasets == ["first"] and len(c) == 3


def test_lock_timeout_set_on_an_open_corpus(tmp_path):
    c = small_corpus(tmp_path / "corpus")
    c.lock_timeout = 5
    c.append(sp.csr_matrix(np.eye(1, 10, dtype=np.int64)), dataset="x")  # unlocked: no wait
    assert Corpus.open(tmp_path / "corpus").datasets == ["first", "x"]

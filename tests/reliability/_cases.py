"""Bad inputs and damaged files, each built in a temporary folder from the real data: the
call that must fail, the error type it must raise and words its message must hold.

Shared by the per-fix tests and the catalogue (``test_catalogue.py``).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

from atacformer.errors import AtacformerError, InputFormatError
from atacformer.vocab import Vocabulary

DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
MACS3 = DATA / "fragments_macs3_chr22_100cells" / "test.fragments.tsv.gz"  # chr22, no barcode suffix
MACS3_BARCODES = DATA / "fragments_macs3_chr22_100cells" / "barcodes.txt"
SCHEP = DATA / "schep2017_celllines_atacCoGAPS" / "schep2017_celllines_600.h5ad"
NARROWPEAK = DATA / "bulk_peaks_encode_roadmap_hg38" / "test_ataqc_full_chr_ppr.IDR0.05.filt.narrowPeak.gz"


def snapshot(path: Path) -> dict:
    """Every entry under ``path``: relative name -> (mode, sha1 of the content or None)."""
    out = {}
    for p in sorted(Path(path).rglob("*")):
        st = p.lstat()
        digest = hashlib.sha1(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
        out[str(p.relative_to(path))] = (stat.S_IMODE(st.st_mode), digest)
    return out


@dataclass
class Case:
    """``call()`` must raise ``error`` with every one of ``words`` in its message, and leave
    ``watch`` as it was (no output, no temporary file)."""

    call: Callable[[], object]
    error: type
    words: list[str]
    watch: Path
    cleanup: list[Callable[[], None]] = field(default_factory=list)


def chr1_bins() -> Vocabulary:
    return Vocabulary.from_bins("hg38", 5000, chroms=["chr1"])


def chr1_regions() -> Vocabulary:
    return Vocabulary(["chr1", "chr1"], [10_000, 20_000], [10_500, 20_500], genome="hg38")


def _tokenize_to(out: Path, src, vocab, **kw):
    """Tokenize a fragments file and write the cells through the atomic ``.h5ad`` writer."""
    from atacformer.tokenizers import tokenize_fragments

    cells = tokenize_fragments(src, vocab, progress=False, **kw)
    cells.write_h5ad(out)
    return cells


# -- 1. barcode whitelist ------------------------------------------------------------------
def whitelist_no_match(tmp: Path) -> Case:
    wl = tmp / "whitelist.txt"
    bcs = MACS3_BARCODES.read_text().split()
    wl.write_text("".join(f"{b}-1\n" for b in bcs))
    out = tmp / "out"
    out.mkdir()
    return Case(lambda: _tokenize_to(out / "cells.h5ad", MACS3, Vocabulary.from_bins("hg38", 5000), barcodes=wl),
                InputFormatError, [str(MACS3), str(wl), "-1'", "suffix", f"none of the {len(bcs)} barcodes"], out)


# -- 2. vocabulary that nothing overlaps -------------------------------------------------
def fragments_vocab_bins_no_overlap(tmp: Path) -> Case:
    out = tmp / "out"
    out.mkdir()
    return Case(lambda: _tokenize_to(out / "cells.h5ad", MACS3, chr1_bins()), InputFormatError,
                [str(MACS3), "no fragment overlaps any of the", "regions of the vocabulary", "chr22"], out)


def fragments_vocab_regions_no_overlap(tmp: Path) -> Case:
    out = tmp / "out"
    out.mkdir()
    return Case(lambda: _tokenize_to(out / "cells.h5ad", MACS3, chr1_regions()), InputFormatError,
                [str(MACS3), "no fragment overlaps any of the 2 regions of the vocabulary"], out)


def bed_no_overlap(tmp: Path) -> Case:
    from atacformer.tokenizers import tokenize_bed

    out = tmp / "out"
    out.mkdir()
    vocab = Vocabulary(["chrM"], [0], [10], genome="hg38")
    return Case(lambda: tokenize_bed(NARROWPEAK, vocab), InputFormatError,
                [str(NARROWPEAK), "no region overlaps any of the 1 regions of the vocabulary"], out)


def peak_matrix_no_overlap(tmp: Path) -> Case:
    from atacformer.tokenizers import tokenize_peak_matrix

    out = tmp / "out"
    out.mkdir()
    vocab = Vocabulary(["chrM"], [0], [10])

    def call():
        cells = tokenize_peak_matrix(SCHEP, vocab)
        cells.write_h5ad(out / "cells.h5ad")

    return Case(call, InputFormatError, [str(SCHEP), "no peak overlaps any of the 1 regions of the vocabulary"], out)


# -- 3. peak matrix values ---------------------------------------------------------------
def _schep_copy(tmp: Path, edit, name: str) -> Path:
    import anndata as ad

    a = ad.read_h5ad(SCHEP)
    a = edit(a)
    p = tmp / name
    a.write_h5ad(p)
    return p


def _set_entry(value):
    def edit(a):
        X = sp.csr_matrix(a.X).astype(np.float32)
        X.data[7] = value  # an existing entry
        a.X = X
        return a
    return edit


def _entry_position(k: int = 7):
    import anndata as ad

    X = sp.csr_matrix(ad.read_h5ad(SCHEP, backed=None).X)
    i = int(np.searchsorted(X.indptr, k, side="right")) - 1
    return i, int(X.indices[k])


def _peak_matrix_case(tmp: Path, path: Path, words) -> Case:
    from atacformer.tokenizers import tokenize_peak_matrix

    out = tmp / "out"
    out.mkdir()
    vocab = Vocabulary.from_bins("hg19", 5000)

    def call():
        tokenize_peak_matrix(path, vocab).write_h5ad(out / "cells.h5ad")

    return Case(call, InputFormatError, [str(path), *words], out)


def peak_matrix_negative(tmp: Path) -> Case:
    i, j = _entry_position()
    p = _schep_copy(tmp, _set_entry(-3), "negative.h5ad")
    return _peak_matrix_case(tmp, p, ["negative count", f"cell {i} ", f"peak {j} ", "(got -3)"])


def peak_matrix_nan(tmp: Path) -> Case:
    i, j = _entry_position()
    p = _schep_copy(tmp, _set_entry(np.nan), "nan.h5ad")
    return _peak_matrix_case(tmp, p, ["non-finite count", f"cell {i} ", f"peak {j} ", "nan"])


def peak_matrix_inf(tmp: Path) -> Case:
    p = _schep_copy(tmp, _set_entry(np.inf), "inf.h5ad")
    return _peak_matrix_case(tmp, p, ["non-finite count", "inf"])


def peak_matrix_no_cells(tmp: Path) -> Case:
    p = _schep_copy(tmp, lambda a: a[:0].copy(), "nocells.h5ad")
    return _peak_matrix_case(tmp, p, ["0 cells"])


def peak_matrix_no_peaks(tmp: Path) -> Case:
    p = _schep_copy(tmp, lambda a: a[:, :0].copy(), "nopeaks.h5ad")
    return _peak_matrix_case(tmp, p, ["0 peaks"])


# -- 4. checkpoints ----------------------------------------------------------------------
def checkpoints_all_damaged(tmp: Path) -> Case:
    import torch

    from atacformer.train.checkpoint import checkpoint_path, latest_checkpoint

    run = tmp / "run"
    for step in (3, 6):
        p = checkpoint_path(run, step)
        p.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": {"w": torch.zeros(100)}}, p)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    return Case(lambda: latest_checkpoint(run), AtacformerError,
                ["no loadable checkpoint", "step-00000003.pt", "step-00000006.pt", "truncated"], run)


# -- 5. model folders --------------------------------------------------------------------
def tiny_model():
    from atacformer.models import AtacformerConfig, AtacformerModel

    vocab = Vocabulary(["chr1"] * 20, np.arange(20) * 1000, np.arange(20) * 1000 + 500, genome="hg38")
    cfg = AtacformerConfig.for_vocab(vocab, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    return AtacformerModel(cfg, vocab=vocab)


def truncated_safetensors(tmp: Path) -> Case:
    from atacformer.models import load_model

    folder = tmp / "model"
    tiny_model().save_pretrained(folder)
    w = folder / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    return Case(lambda: load_model(folder), AtacformerError,
                [str(w), "is truncated or not a safetensors file", "re-export or re-download it"], folder)


def garbage_safetensors(tmp: Path) -> Case:
    from atacformer.models import load_model

    folder = tmp / "model"
    tiny_model().save_pretrained(folder)
    w = folder / "model.safetensors"
    w.write_bytes(b"<html>not found</html>\n" * 4)
    return Case(lambda: load_model(folder), AtacformerError,
                [str(w), "is truncated or not a safetensors file"], folder)


# -- 6. corpus writer lock ---------------------------------------------------------------
def _hold_lock(lock: str, held, release, seconds: float) -> None:
    import fcntl

    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        held.set()
        release.wait(seconds)
        fcntl.flock(f, fcntl.LOCK_UN)


def hold_writer_lock(corpus_path: Path, seconds: float):
    """Start a process that holds the corpus's writer lock for ``seconds`` (or until
    ``release.set()``); returns ``(process, release)`` once the lock is held."""
    ctx = mp.get_context("fork")
    held, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(corpus_path / ".lock"), held, release, seconds))
    proc.start()
    assert held.wait(30), "the lock holder did not start"
    return proc, release


def small_corpus(path: Path):
    from atacformer.corpus import Corpus

    vocab = Vocabulary(["chr1"] * 10, np.arange(10) * 100, np.arange(10) * 100 + 50)
    c = Corpus.create(path, vocab)
    c.append(sp.csr_matrix(np.eye(3, 10, dtype=np.int64)), dataset="first")
    return c


def corpus_lock_timeout(tmp: Path) -> Case:
    from atacformer.corpus import Corpus

    path = tmp / "corpus"
    small_corpus(path)
    proc, release = hold_writer_lock(path, 60)
    c = Corpus.open(path, lock_timeout=0.3)

    def stop():
        release.set()
        proc.join(30)

    return Case(lambda: c.append(sp.csr_matrix(np.eye(2, 10, dtype=np.int64)), dataset="second"),
                AtacformerError, [str(path), str(path / ".lock"), "writer lock"], path, cleanup=[stop])


CASES = {
    "whitelist-no-barcode-matches": whitelist_no_match,
    "fragments-vs-bins-no-overlap": fragments_vocab_bins_no_overlap,
    "fragments-vs-universe-no-overlap": fragments_vocab_regions_no_overlap,
    "bed-no-overlap": bed_no_overlap,
    "peak-matrix-no-overlap": peak_matrix_no_overlap,
    "peak-matrix-negative-count": peak_matrix_negative,
    "peak-matrix-nan": peak_matrix_nan,
    "peak-matrix-inf": peak_matrix_inf,
    "peak-matrix-no-cells": peak_matrix_no_cells,
    "peak-matrix-no-peaks": peak_matrix_no_peaks,
    "checkpoints-all-damaged": checkpoints_all_damaged,
    "safetensors-truncated": truncated_safetensors,
    "safetensors-garbage": garbage_safetensors,
    "corpus-writer-lock-timeout": corpus_lock_timeout,
}


def run_case(build, tmp: Path):
    """Build the case, check its error and that its watched folder did not change."""
    import pytest

    case = build(tmp)
    before = snapshot(case.watch)
    try:
        with pytest.raises(case.error) as e:
            case.call()
    finally:
        for f in case.cleanup:
            f()
    msg = str(e.value)
    for w in case.words:
        assert w in msg, (w, msg)
    assert "\n" not in msg, msg
    assert snapshot(case.watch) == before
    return e.value


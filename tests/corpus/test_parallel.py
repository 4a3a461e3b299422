"""Many fragments files tokenized into one corpus in parallel (local processes, Dask).

The reference is the serial way the package appends datasets (``tokenize_paths`` then
``Corpus.append`` per input, what ``atacformer tokenize`` did before), on real fragments files
split by barcode so that one barcode is in two files.
"""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atacformer.corpus import Corpus, WorkerLostError, tokenize_to_corpus
from atacformer.errors import AtacformerError
from atacformer.tokenizers import tokenize_fragments, tokenize_paths
from atacformer.vocab import Vocabulary

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MUON = DATA / "muon_pbmc_multiome_fragments_hg38" / "test_rna_atac_fragments.tsv.gz"
MACS3 = DATA / "fragments_macs3_chr22_100cells" / "test.fragments.tsv.gz"
ARCHR = DATA / "archr_pbsmall_fragments_labeled" / "PBSmall.tsv.gz"
SIGNAC = DATA / "signac_pbmc_small" / "fragments.tsv.gz"
BIN = 100_000


def _need(*paths):
    for p in paths:
        if not p.exists():
            pytest.skip(f"real data {p} is absent (see ../shared/data/README.md)")


def _read(path: Path, nrows: int | None = None) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None, comment="#", nrows=nrows,
                       names=["chrom", "start", "end", "barcode", "count"], usecols=range(5))


def _write(df: pd.DataFrame, path: Path) -> Path:
    with gzip.open(path, "wt") as f:
        df.sort_values(["chrom", "start", "end"], kind="stable").to_csv(f, sep="\t", header=False, index=False)
    return path


def _split(df: pd.DataFrame, folder: Path, stem: str, k: int) -> list[Path]:
    """``k`` files of disjoint barcodes, then the first file's first barcode added to the last file."""
    codes = pd.factorize(df["barcode"])[0] % k
    parts = [df[codes == j] for j in range(k)]
    shared = parts[0]["barcode"].iloc[0]
    parts[-1] = pd.concat([parts[-1], parts[0][parts[0]["barcode"] == shared]])
    return [_write(p, folder / f"{stem}{j}.tsv.gz") for j, p in enumerate(parts)]


@pytest.fixture(scope="module")
def hg38_files(tmp_path_factory):
    """Three files of the muon PBMC fragments split by barcode (one barcode in two), and the
    MACS3 chr22 fragments."""
    _need(MUON, MACS3)
    d = tmp_path_factory.mktemp("hg38")
    return _split(_read(MUON, nrows=60_000), d, "pbmc", 3) + [_write(_read(MACS3), d / "macs3.tsv.gz")]


@pytest.fixture(scope="module")
def hg19_files(tmp_path_factory):
    """ArchR's PBSmall split in two by barcode (one barcode in both), and Signac's pbmc_small."""
    _need(ARCHR, SIGNAC)
    d = tmp_path_factory.mktemp("hg19")
    return _split(_read(ARCHR), d, "pbsmall", 2) + [_write(_read(SIGNAC), d / "signac.tsv.gz")]


def _vocab(genome):
    return Vocabulary.from_bins(genome, BIN)


def _serial(files, out, genome) -> Corpus:
    """The serial reference: one input after another through ``Corpus.append``."""
    vocab = _vocab(genome)
    corpus = Corpus.create(out, vocab)
    for name, cells in tokenize_paths(files, vocab, genome=genome):
        corpus.append(cells.X, obs=cells.obs, dataset=name)
    return corpus


def _assert_same_corpus(a: Corpus, b: Corpus):
    assert a.datasets == b.datasets
    assert [s.n_cells for s in a.shards] == [s.n_cells for s in b.shards]
    assert [s.n_tokens for s in a.shards] == [s.n_tokens for s in b.shards]
    assert len(a) == len(b) and a.n_tokens == b.n_tokens
    Xa, Xb = a.get_rows(np.arange(len(a))), b.get_rows(np.arange(len(b)))
    assert (Xa != Xb).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs)


def _assert_files_are_samples(corpus: Corpus, files):
    """Each file's cells equal its own tokenization; a barcode in two files is two cells."""
    vocab = corpus.vocab
    obs = corpus.obs
    for f in files:
        name = f.name.split(".")[0]
        ref = tokenize_fragments(f, vocab, genome=vocab.genome)
        rows = np.flatnonzero(obs["dataset"].to_numpy() == name)
        assert list(obs["barcode"].iloc[rows]) == list(map(str, ref.barcodes))
        assert (corpus.get_rows(rows) != ref.X).nnz == 0
    shared = _read(files[0])["barcode"].iloc[0]
    hits = obs[obs["barcode"] == shared]
    assert sorted(hits["dataset"]) == sorted([files[0].name.split(".")[0], files[-1].name.split(".")[0]])
    assert obs.index.is_unique


def _files_in(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.name != ".lock"}


def test_pool_of_two_equals_serial(hg38_files, tmp_path):
    serial = _serial(hg38_files, tmp_path / "serial", "hg38")
    run = tokenize_to_corpus(hg38_files, tmp_path / "par", _vocab("hg38"), workers=2, genome="hg38", progress=False)
    assert list(run.added) == ["pbmc0", "pbmc1", "pbmc2", "macs3"] and run.skipped == []
    _assert_same_corpus(run.corpus, serial)
    _assert_same_corpus(Corpus.open(tmp_path / "par"), serial)
    _assert_files_are_samples(run.corpus, hg38_files[:3])
    # a rerun skips every finished input and changes nothing
    before = (tmp_path / "par" / "manifest.json").read_bytes()
    rerun = tokenize_to_corpus(hg38_files, tmp_path / "par", _vocab("hg38"), workers=2, genome="hg38", progress=False)
    assert rerun.added == {} and rerun.skipped == ["pbmc0", "pbmc1", "pbmc2", "macs3"]
    assert (tmp_path / "par" / "manifest.json").read_bytes() == before
    # other tokenizer options make other cells: refused, not mixed in
    with pytest.raises(AtacformerError, match="pbmc0.*already in corpus"):
        tokenize_to_corpus(hg38_files, tmp_path / "par", _vocab("hg38"), workers=1, genome="hg38",
                           min_fragments=3, progress=False)


def _dying_tokenizer(paths, vocab, **options):
    """A tokenizer whose worker process dies on the file named ``pbmc2``."""
    if Path(paths[0]).name.startswith("pbmc2"):
        time.sleep(1.0)  # the earlier inputs finish first
        os._exit(3)
    yield from tokenize_paths(paths, vocab, **options)


def test_killed_worker_then_rerun_completes(hg38_files, tmp_path):
    out = tmp_path / "corpus"
    with pytest.raises(WorkerLostError, match="rerun"):
        tokenize_to_corpus(hg38_files, out, _vocab("hg38"), workers=2, genome="hg38", progress=False,
                           tokenizer=_dying_tokenizer)
    names = ["pbmc0", "pbmc1", "pbmc2", "macs3"]
    done = Corpus.open(out).datasets
    assert done == names[:len(done)] and len(done) <= 2  # a prefix, in input order
    run = tokenize_to_corpus(hg38_files, out, _vocab("hg38"), workers=2, genome="hg38", progress=False)
    assert run.skipped == done and list(run.added) == names[len(done):]
    _assert_same_corpus(Corpus.open(out), _serial(hg38_files, tmp_path / "serial", "hg38"))
    registered = {s.name for s in run.corpus.shards}
    assert {p.name for p in (out / "shards").iterdir()} == registered  # no duplicate, no orphan
    assert not list(out.glob(".tmp-*"))


def _bad_copy(good: Path, folder: Path) -> Path:
    lines = gzip.open(good, "rt").read().splitlines()
    lines[4] = "chr1\tnot_a_number\t100\tAAAC-1\t1"
    bad = folder / "broken.tsv.gz"
    with gzip.open(bad, "wt") as f:
        f.write("\n".join(lines) + "\n")
    return bad


def test_bad_file_names_it_and_leaves_corpus_as_it_was(hg38_files, tmp_path, capsys):
    from atacformer.cli import main

    bad = _bad_copy(hg38_files[0], tmp_path)
    new = tmp_path / "new"
    with pytest.raises(AtacformerError, match=r"broken\.tsv\.gz.*line 5"):
        tokenize_to_corpus([hg38_files[0], bad, hg38_files[3]], new, _vocab("hg38"), workers=2,
                           genome="hg38", progress=False)
    assert not new.exists()  # no empty corpus folder
    # an existing corpus: one good input was registered by this run, then removed again
    old = _serial(hg38_files[1:2], tmp_path / "old", "hg38").path
    before = _files_in(old)
    rc = main(["tokenize", str(hg38_files[0]), str(bad), str(hg38_files[3]), "-o", str(old),
               "--bins", str(BIN), "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "broken.tsv.gz" in err and "line 5" in err and "Traceback" not in err
    assert _files_in(old) == before
    assert Corpus.open(old).datasets == ["pbmc1"]


def test_same_file_name_in_two_folders(hg38_files, tmp_path):
    files = []
    for run in ("run1", "run2", "x/run1"):
        (tmp_path / run).mkdir(parents=True)
        files.append(tmp_path / run / "fragments.tsv.gz")
    files[0].write_bytes(hg38_files[0].read_bytes())
    files[1].write_bytes(hg38_files[3].read_bytes())
    files[2].write_bytes(hg38_files[1].read_bytes())
    # two folders of the same name cannot tell them apart: refused before any work
    with pytest.raises(AtacformerError, match="both be dataset 'run1-fragments'"):
        tokenize_to_corpus(files, tmp_path / "c", _vocab("hg38"), workers=2, genome="hg38")
    assert not (tmp_path / "c").exists()
    run = tokenize_to_corpus(files[:2], tmp_path / "c", _vocab("hg38"), workers=1, genome="hg38", progress=False)
    assert run.corpus.datasets == ["run1-fragments", "run2-fragments"]
    assert list(run.corpus.obs["barcode"]) == list(tokenize_fragments(files[0], _vocab("hg38")).barcodes) + \
        list(tokenize_fragments(files[1], _vocab("hg38")).barcodes)


def test_changed_file_is_not_skipped(hg38_files, tmp_path):
    f = tmp_path / "pbmc0.tsv.gz"
    f.write_bytes(hg38_files[0].read_bytes())
    tokenize_to_corpus([f], tmp_path / "c", _vocab("hg38"), workers=1, genome="hg38", progress=False)
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(AtacformerError, match="changed since it was added"):
        tokenize_to_corpus([f], tmp_path / "c", _vocab("hg38"), workers=1, genome="hg38", progress=False)


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed", reason="Dask distributed is not installed "
                                      "(pip install 'atacformer[distributed]')")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


def test_dask_local_cluster_equals_serial(hg19_files, dask_client, tmp_path):
    serial = _serial(hg19_files, tmp_path / "serial", "hg19")
    run = tokenize_to_corpus(hg19_files, tmp_path / "par", _vocab("hg19"), scheduler=dask_client, genome="hg19",
                             progress=False)
    assert list(run.added) == ["pbsmall0", "pbsmall1", "signac"]
    _assert_same_corpus(run.corpus, serial)
    _assert_files_are_samples(run.corpus, hg19_files[:2])
    # the scheduler's address works like the Client
    rerun = tokenize_to_corpus(hg19_files, tmp_path / "par", _vocab("hg19"), scheduler=dask_client.scheduler.address,
                               genome="hg19", progress=False)
    assert rerun.skipped == ["pbsmall0", "pbsmall1", "signac"]


@pytest.mark.slow
def test_dask_worker_killed_then_rerun_completes(hg19_files, tmp_path):
    distributed = pytest.importorskip("distributed", reason="Dask distributed is not installed")
    import dask

    names = ["pbsmall0", "pbsmall1", "signac"]
    victim = hg19_files[1].parent / "pbmc2.tsv.gz"  # the dying tokenizer's file
    victim.write_bytes(hg19_files[2].read_bytes())
    files = hg19_files[:2] + [victim]
    out = tmp_path / "corpus"
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with pytest.raises(WorkerLostError, match="pbmc2"):
            tokenize_to_corpus(files, out, _vocab("hg19"), scheduler=client, genome="hg19", progress=False,
                               tokenizer=_dying_tokenizer)
        done = Corpus.open(out).datasets if out.exists() else []
        assert done == names[:2][:len(done)]
        run = tokenize_to_corpus(files, out, _vocab("hg19"), scheduler=client, genome="hg19", progress=False)
    assert run.skipped == done
    _assert_same_corpus(run.corpus, _serial(files, tmp_path / "serial", "hg19"))
    assert {p.name for p in (out / "shards").iterdir()} == {s.name for s in run.corpus.shards}


@pytest.mark.slow
def test_cli_killed_mid_run_then_rerun_completes(hg38_files, tmp_path):
    """SIGKILL of the whole command (coordinator and workers) while it runs; the rerun finishes."""
    import signal
    import subprocess
    import sys

    files = []
    for i in range(8):  # eight samples: copies of the four files under other names
        f = tmp_path / f"s{i}.tsv.gz"
        f.write_bytes(hg38_files[i % 4].read_bytes())
        files.append(f)
    out = tmp_path / "corpus"
    cmd = [sys.executable, "-m", "atacformer.cli", "tokenize", *map(str, files), "-o", str(out),
           "--bins", str(BIN), "--workers", "2"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(Corpus.open(out).datasets) >= 2:
                break
        except (FileNotFoundError, ValueError, OSError):
            pass
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = Corpus.open(out).datasets
    if len(done) == len(files):
        pytest.skip("the run finished before it could be killed")
    assert done == [f"s{i}" for i in range(len(done))]
    rc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    assert rc.stdout.count("skipped") == len(done)
    _assert_same_corpus(Corpus.open(out), _serial(files, tmp_path / "serial", "hg38"))
    assert {p.name for p in (out / "shards").iterdir()} == {s.name for s in Corpus.open(out).shards}
    assert not list(out.glob(".tmp-*"))

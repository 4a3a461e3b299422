"""Many inputs tokenized into one corpus in parallel: local processes or a Dask cluster.

Each input (a fragments file or a peak matrix; all BED files together) is one task. A worker
tokenizes its input and streams the cells into a temporary shard folder inside the corpus; the
coordinating process registers finished shards in input order, one atomic ``manifest.json``
replace per shard, so the corpus equals the one a serial run builds, cell for cell, whatever
order the workers finish in. Each registered shard records where it came from (absolute path,
size and modification time of its inputs, and the tokenizer options), so a rerun of the same
command skips the inputs already in the corpus.

What a failure leaves:

* an input that cannot be tokenized (a bad line, a missing file, a genome mismatch): the run
  stops with an error naming the input, and everything this run registered is removed again,
  so the corpus is exactly as before (and a corpus this run created is removed);
* an interruption (the coordinating process killed, Ctrl-C, a worker process killed or out of
  memory): the shards registered so far stay, a valid prefix of the inputs; a rerun removes the
  temporary folders left behind and tokenizes only the remaining inputs.

Engines: a local :class:`concurrent.futures.ProcessPoolExecutor` (no extra dependency) by
default, or a Dask distributed cluster when a scheduler is given (``pip install
atacformer[distributed]``). On a cluster, every worker must see the inputs and the corpus
folder at the same paths (a shared file system).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import shutil
import threading
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from atacformer.corpus._fs import write_json, writer_lock
from atacformer.corpus._writer import Transaction, matrix_chunks, temp_shard_folder, write_shard
from atacformer.corpus.corpus import MANIFEST, Corpus
from atacformer.errors import AtacformerError, InputMissingError

__all__ = ["TokenizeRun", "WorkerLostError", "tokenize_to_corpus"]

logger = logging.getLogger(__name__)


class WorkerLostError(AtacformerError):
    """A worker process died (killed, out of memory) before its input was tokenized.

    The inputs registered before it stay in the corpus; rerunning the same command finishes it.
    """


@dataclass(frozen=True)
class _Unit:
    """One task: the inputs of one dataset, and where they come from."""

    dataset: str
    paths: tuple[str, ...]
    source: dict


@dataclass
class TokenizeRun:
    """What :func:`tokenize_to_corpus` did.

    Attributes
    ----------
    corpus
        The corpus, with every shard registered by the run.
    added
        Dataset name -> tokenizer summary (``TokenizedCells.summary()``) of each input this run
        tokenized, in input order.
    skipped
        Dataset names already in the corpus from the same inputs and options.
    """

    corpus: Corpus
    added: dict[str, dict] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def tokenize_to_corpus(paths, out, vocab, *, workers: int | None = None, scheduler=None,
                       progress: bool = True, tokenizer=None, **tokenizer_options) -> TokenizeRun:
    """Tokenize many inputs into the corpus ``out``, one input per worker, in parallel.

    The corpus is created when it does not exist and appended to when it does; inputs already
    in it (same files, unchanged, same options) are skipped. Datasets are named after their
    files (the name up to the first dot; ``folder-name`` when two files share a name, as
    ``run1/fragments.tsv.gz`` and ``run2/fragments.tsv.gz`` do), so the same barcode in two
    files is two cells.

    Parameters
    ----------
    paths
        Input files: fragments ``.tsv(.gz)``, peak matrices (``.h5ad``, 10x ``.h5``, MTX
        folders) or BED files (all BED files together make one dataset, ``"bed"``).
    out
        Corpus folder.
    vocab
        The :class:`~atacformer.vocab.Vocabulary` to tokenize into (an existing corpus must
        have the same regions).
    workers
        Local worker processes (default: one per CPU core, at most one per input; 1 runs in
        this process). Ignored when ``scheduler`` is given.
    scheduler
        A Dask distributed scheduler address (``"tcp://host:8786"``) or a
        ``distributed.Client``: the inputs are tokenized on that cluster's workers.
    progress
        Show a progress bar over the inputs.
    tokenizer
        ``tokenizer(paths, vocab, **tokenizer_options)`` yielding ``(dataset, TokenizedCells)``
        (default :func:`atacformer.tokenizers.tokenize_paths`); it must be picklable.
    **tokenizer_options
        Passed to the tokenizer (``genome``, ``barcodes``, ``min_fragments``, ``mode``,
        ``input_type``...) and recorded with each shard.

    Returns
    -------
    TokenizeRun
        The corpus and what was added or skipped.

    Raises
    ------
    AtacformerError
        An input could not be tokenized (the message names it; the corpus is as before), or a
        dataset name is already in the corpus from other inputs.
    WorkerLostError
        A worker died; the corpus holds the inputs registered before, a rerun finishes it.

    Examples
    --------
    >>> from atacformer.vocab import Vocabulary
    >>> run = tokenize_to_corpus(["a.tsv.gz", "b.tsv.gz"], "corpus", Vocabulary.from_bins("hg38", 5000),
    ...                          workers=2, genome="hg38")  # doctest: +SKIP
    >>> list(run.added), len(run.corpus)  # doctest: +SKIP
    (['a', 'b'], 10342)
    """
    if workers is not None and int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if tokenizer is None:
        from atacformer.tokenizers import tokenize_paths as tokenizer
    out = Path(out)
    units = _units(paths, tokenizer_options)
    if not units:
        raise ValueError("no inputs to tokenize")
    if out.exists() and not (out / MANIFEST).exists():
        raise AtacformerError(f"{out} exists and is not a corpus folder; name a new folder or an existing corpus")
    created = not out.exists()
    # a local pool starts its processes while the corpus is created or opened (seconds each)
    n = min(len(units), workers or _cpu_count())
    pool = _PoolEngine(n, vocab) if scheduler is None and n > 1 else None
    try:
        corpus = Corpus.create(out, vocab) if created else Corpus.open(out)
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    try:
        with writer_lock(corpus.path, timeout=corpus.lock_timeout):
            corpus.reload()
            corpus._remove_stale()  # temporary shards of an interrupted run
            corpus.vocab.check_same(vocab, what=f"tokenizing into corpus {out}: the vocabulary")
            run = TokenizeRun(corpus)
            todo = _pending(units, corpus, run)
            if todo:
                engine = (_DaskEngine(scheduler, vocab) if scheduler is not None else
                          pool if pool is not None and len(todo) > 1 else _LocalEngine(vocab))
                _run_units(todo, corpus, run, engine, progress, tokenizer, tokenizer_options)
    except BaseException as err:
        if created and not (isinstance(err, (WorkerLostError, KeyboardInterrupt)) and len(_read(out))):
            shutil.rmtree(out, ignore_errors=True)  # nothing of a new corpus is kept but resumable work
        raise
    finally:
        if pool is not None:
            pool.close()
    corpus.reload()
    return run


# -- planning -----------------------------------------------------------------------------
def _units(paths, options: dict) -> list[_Unit]:
    """One task per fragments file or matrix, one for all BED files; names checked unique."""
    from atacformer.tokenizers._inputs import dataset_name, input_kind

    opts = {k: _jsonable(v) for k, v in sorted(options.items())}
    singles, beds = [], []
    for p in paths:
        p = os.fspath(p)
        if not os.path.exists(p):
            raise InputMissingError(p, "no such file or folder")
        kind = input_kind(p, options.get("input_type"))
        (beds if kind == "bed" else singles).append(p)  # a corpus is refused by the tokenizer
    names = [dataset_name(p) for p in singles]
    clash = {n for n in names if names.count(n) > 1}
    # run1/fragments.tsv.gz and run2/fragments.tsv.gz (10x's layout): named by their folders
    names = [f"{Path(p).resolve().parent.name}-{n}" if n in clash else n for p, n in zip(singles, names)]
    first: dict[str, str] = {}
    for p, n in zip(singles + beds[:1], names + ["bed"] * bool(beds)):
        if n in first:
            raise AtacformerError(f"{p} and {first[n]} would both be dataset {n!r} (a dataset is named after "
                                  "its file up to the first dot, and its folder when names repeat); rename one")
        first[n] = p
    units = [_Unit(n, (p,), {"inputs": [_stat(p)], "options": opts}) for p, n in zip(singles, names)]
    if beds:
        units.append(_Unit("bed", tuple(beds), {"inputs": [_stat(p) for p in beds], "options": opts}))
    return units


def _stat(path: str) -> dict:
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _jsonable(v):
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, (list, tuple)) and len(v) <= 16:
        return [_jsonable(x) for x in v]
    import hashlib

    return "sha256:" + hashlib.sha256(repr(v).encode()).hexdigest()


def _pending(units: list[_Unit], corpus: Corpus, run: TokenizeRun) -> list[_Unit]:
    """Units not in the corpus yet; a dataset name taken by other inputs is an error."""
    have = {s.dataset: s for s in corpus.shards}
    todo = []
    for u in units:
        s = have.get(u.dataset)
        if s is None:
            todo.append(u)
        elif s.source == u.source:
            logger.info("%s: already in %s as dataset %r, skipped", ", ".join(u.paths), corpus.path, u.dataset)
            run.skipped.append(u.dataset)
        else:
            why = ("was added by another command" if s.source is None else
                   "changed since it was added, or other inputs or tokenizer options made it")
            raise AtacformerError(f"{u.paths[0]}: dataset {u.dataset!r} is already in corpus {corpus.path} and "
                                  f"{why}; rename the input or write another corpus")
    return todo


# -- running ------------------------------------------------------------------------------
def _run_units(todo, corpus, run, engine, progress, tokenizer, options) -> None:
    """Tokenize ``todo`` on ``engine``; register shards in input order as they become ready."""
    from tqdm.auto import tqdm

    logger.info("tokenizing %d inputs into %s with %s", len(todo), corpus.path, engine)
    ready: dict[int, dict] = {}
    registered: list[str] = []
    nxt = 0
    bar = tqdm(total=len(todo), desc="tokenize", unit="file", disable=not progress)
    try:
        for i, res in engine.run(todo, str(corpus.path), tokenizer, options):
            if not res["ok"]:
                logger.info("worker traceback:\n%s", res["traceback"])
                raise AtacformerError(f"{res['error']} (nothing was added to {corpus.path})")
            ready[i] = res
            bar.update(1)
            while nxt in ready:
                r, u = ready.pop(nxt), todo[nxt]
                txn = Transaction(corpus)
                txn.add_written(corpus.path / r["folder"], {**r["entry"], "source": u.source})
                txn.commit()
                registered.append(corpus.shards[-1].name)
                run.added[u.dataset] = r["summary"]
                nxt += 1
    except BaseException as err:
        try:
            engine.close()
        except Exception as e:  # the first error is the one to report
            logger.warning("closing %s failed: %s", engine, e)
        for r in ready.values():
            shutil.rmtree(corpus.path / r["folder"], ignore_errors=True)
        corpus._remove_stale()  # shards of inputs that finished after the error
        if not isinstance(err, (WorkerLostError, KeyboardInterrupt)):
            _unregister(corpus, registered)
        elif registered:
            logger.warning("%s: %d of %d inputs registered before the interruption; rerun to add the rest",
                           corpus.path, len(registered), len(todo))
        raise
    finally:
        bar.close()
    engine.close()


def _unregister(corpus: Corpus, names: list[str]) -> None:
    """Remove this run's shards again: one manifest replace, then their folders."""
    if not names:
        return
    manifest = dict(corpus._manifest)
    manifest["shards"] = [s for s in manifest["shards"] if s["name"] not in set(names)]
    write_json(corpus.path / MANIFEST, manifest)
    corpus._set_manifest(manifest)
    for n in names:
        shutil.rmtree(corpus.path / "shards" / n, ignore_errors=True)
    logger.info("%s: removed the %d datasets this run had added", corpus.path, len(names))


def _read(out: Path) -> list:
    try:
        return Corpus.open(out).datasets
    except Exception:
        return []


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# -- the task a worker runs ---------------------------------------------------------------
_WORKER_VOCAB = None


def _set_worker_vocab(vocab) -> None:
    global _WORKER_VOCAB
    _WORKER_VOCAB = vocab


def _tokenize_unit(unit: _Unit, corpus_path: str, vocab, tokenizer, options: dict) -> dict:
    """Tokenize one unit into a temporary shard folder of the corpus.

    Returns ``{"ok": True, "folder", "entry", "summary"}`` or ``{"ok": False, "error"}``:
    errors travel as text, since not every exception survives pickling back.
    """
    vocab = _WORKER_VOCAB if vocab is None else vocab
    tmp = None
    try:
        items = iter(tokenizer(list(unit.paths), vocab, **options))
        _, cells = next(items)
        tmp = temp_shard_folder(corpus_path)
        entry = write_shard(tmp, matrix_chunks(cells.X, cells.obs, unit.dataset), unit.dataset, None,
                            vocab.n_regions)
        return {"ok": True, "folder": tmp.name, "entry": entry, "summary": cells.summary()}
    except Exception as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        return {"ok": False, "error": _describe(e, unit), "traceback": traceback.format_exc()}


def _describe(e: Exception, unit: _Unit) -> str:
    """One line naming the input (the tokenizer's own message names the file and line)."""
    text = str(e) if isinstance(e, (OSError, ValueError, AtacformerError)) else f"{type(e).__name__}: {e}"
    if not any(p in text or os.path.basename(p) in text for p in unit.paths):
        text = f"{', '.join(unit.paths)}: {text}"
    return text


# -- engines ------------------------------------------------------------------------------
class _LocalEngine:
    """Everything in this process, one input after another."""

    def __init__(self, vocab):
        self.vocab = vocab

    def __repr__(self):
        return "this process"

    def run(self, todo, corpus_path, tokenizer, options):
        for i, u in enumerate(todo):
            yield i, _tokenize_unit(u, corpus_path, self.vocab, tokenizer, options)

    def close(self):
        pass


# imported once by the fork server, so that each worker forks with the tokenizer loaded and warm
_PRELOAD = ["atacformer.corpus.parallel", "atacformer.corpus._pool_warmup"]


class _PoolEngine:
    """A pool of local worker processes (forkserver: workers do not inherit the writer lock)."""

    def __init__(self, n: int, vocab):
        self.n = n
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        self.pool = cf.ProcessPoolExecutor(n, mp_context=ctx, initializer=_set_worker_vocab, initargs=(vocab,))
        # submit() starts the fork server and the workers, and waits for them: in a thread, so
        # that the caller goes on meanwhile
        self._starter = threading.Thread(target=self._start, name="atacformer-pool-start", daemon=True)
        self._starter.start()

    def _start(self):
        with contextlib.suppress(Exception):  # a broken start shows at the first real task
            for _ in range(self.n):
                self.pool.submit(int)

    def __repr__(self):
        return f"{self.n} local worker processes"

    def run(self, todo, corpus_path, tokenizer, options):
        self._starter.join()
        futures = {self.pool.submit(_tokenize_unit, u, corpus_path, None, tokenizer, options): i
                   for i, u in enumerate(todo)}
        for f in cf.as_completed(futures):
            try:
                yield futures[f], f.result()
            except cf.process.BrokenProcessPool:
                # the pool does not say which task its dead process held: name the unfinished ones
                left = [todo[j].paths[0] for g, j in sorted(futures.items(), key=lambda x: x[1])
                        if not g.done() or g.exception() is not None]
                raise WorkerLostError(_lost_message(left, exact=False)) from None

    def close(self):
        self._starter.join()
        self.pool.shutdown(wait=True, cancel_futures=True)


class _DaskEngine:
    """The workers of a Dask distributed cluster (a scheduler address or a ``Client``)."""

    def __init__(self, scheduler, vocab):
        try:
            from distributed import Client
        except ImportError:
            raise AtacformerError("a scheduler needs Dask distributed: pip install 'atacformer[distributed]'") from None
        self.own = not isinstance(scheduler, Client)
        try:
            self.client = Client(scheduler) if self.own else scheduler
        except (OSError, TimeoutError) as e:
            raise AtacformerError(f"cannot reach the Dask scheduler {scheduler!r}: {e}") from None
        self.vocab = self.client.scatter(vocab, broadcast=True)
        self.futures = []

    def __repr__(self):
        return f"Dask cluster {self.client.scheduler.address}"

    def run(self, todo, corpus_path, tokenizer, options):
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        run_id = uuid.uuid4().hex[:8]
        index = {}
        for i, u in enumerate(todo):
            f = self.client.submit(_tokenize_unit, u, corpus_path, self.vocab, tokenizer, options,
                                   key=f"atacformer-tokenize-{run_id}-{i}", pure=False)
            index[f.key] = i
            self.futures.append(f)
        for f in as_completed(self.futures):
            try:
                yield index[f.key], f.result()
            except KilledWorker:
                raise WorkerLostError(_lost_message([todo[index[f.key]].paths[0]])) from None

    def close(self):
        if self.futures:
            self.client.cancel(self.futures)
            self.futures = []
        if self.own:
            self.client.close()
            self.own = False


def _lost_message(paths, exact: bool = True) -> str:
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    what = f"while tokenizing {shown}" if exact else f"before these inputs were done: {shown}"
    return (f"a worker process died (killed, or out of memory) {what}; the inputs registered before stay in "
            "the corpus: rerun the same command to add the rest")

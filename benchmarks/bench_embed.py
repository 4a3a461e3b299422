"""Embedding throughput: ``atacformer`` against geniml's ``encode_tokenized_cells`` on CPU.

One model folder, built by geniml itself with the architecture of the released
``databio/atacformer-base-hg38`` (hidden 192, 6 post-LN layers, 8 heads, feed-forward 768)
over the peaks of the Buenrostro 2018 BM0828 set (533 cells, median ~2,000 tokens a cell),
is embedded by both tools in the same process, on the same cells and the same context:

- geniml: ``AtacformerForReplacedTokenDetection.from_pretrained(folder)`` then
  ``encode_tokenized_cells(token_lists, batch_size)`` (its default 16, and 64);
- atacformer: ``load_model(folder)`` then ``tl.embed(adata, model)`` (what ``atacformer embed``
  runs: the model folder's pooling, here geniml's plain mean).

Each method runs ``--repeat`` times interleaved; the best time of each gives the ratio. The
two embeddings are also compared (cells shorter than the context are embedded exactly alike).

Usage::

    python benchmarks/bench_embed.py [--context 2048] [--repeat 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _geniml_folder(vocab, path: Path, context: int) -> None:
    from geniml.atacformer import AtacformerConfig, AtacformerForReplacedTokenDetection

    n = vocab.n_regions
    cfg = AtacformerConfig(vocab_size=n + 7, pad_token_id=n + 1, cls_token_id=n + 3, eos_token_id=n + 4,
                           bos_token_id=n + 5, sep_token_id=n + 6, hidden_size=192, intermediate_size=768,
                           num_hidden_layers=6, num_attention_heads=8, max_position_embeddings=context,
                           use_pos_embeddings=False)
    torch.manual_seed(0)
    AtacformerForReplacedTokenDetection(cfg).eval().save_pretrained(path)
    with gzip.open(path / "universe.bed.gz", "wt") as f:
        for c, s, e in zip(vocab.chroms, vocab.starts, vocab.ends):
            f.write(f"{c}\t{s}\t{e}\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/out/bench_embed.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import anndata as ad
    from geniml.atacformer import AtacformerForReplacedTokenDetection as GenimlRTD

    from atacformer import tools as tl
    from atacformer.datasets import shared_data_dir
    from atacformer.models import as_token_lists, load_model
    from atacformer.tokenizers import peak_vocabulary, tokenize_peak_matrix

    data_dir = Path(args.data_dir or shared_data_dir() or "")
    h5 = data_dir / "buenrostro2018_BM0828_ra3" / "buenrostro2018_BM0828_533cells.h5ad"
    if not h5.exists():
        print(f"{h5} not found: this benchmark needs ../shared/data", file=sys.stderr)
        return 1
    vocab = peak_vocabulary(h5)
    cells = tokenize_peak_matrix(h5, vocab)
    adata = cells.to_anndata()
    tokens = as_token_lists(cells.X)
    lengths = np.array([len(t) for t in tokens])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        _geniml_folder(vocab, folder, args.context)
        ours = load_model(folder)
        theirs = GenimlRTD.from_pretrained(folder).eval()

        def run_geniml(bs):
            t0 = time.perf_counter()
            emb = theirs.encode_tokenized_cells([t.tolist() for t in tokens], batch_size=bs).numpy()
            return time.perf_counter() - t0, emb

        def run_atacformer():
            a = adata.copy()
            t0 = time.perf_counter()
            tl.embed(a, ours, batch_size=64)
            return time.perf_counter() - t0, a.obsm["X_atacformer"]

        runs = {"atacformer": [], "geniml bs16": [], "geniml bs64": []}
        embs = {}
        for _ in range(args.repeat):
            for name, fn in (("atacformer", run_atacformer), ("geniml bs16", lambda: run_geniml(16)),
                             ("geniml bs64", lambda: run_geniml(64))):
                secs, embs[name] = fn()
                runs[name].append(secs)
                print(f"{name}: {secs:.2f}s", flush=True)
    short = lengths <= args.context
    diff = float(np.abs(embs["atacformer"][short] - embs["geniml bs16"][short]).max())
    best = {k: min(v) for k, v in runs.items()}
    result = {
        "cells": int(len(tokens)), "median_tokens": int(np.median(lengths)), "context": args.context,
        "threads": args.threads, "runs_s": runs, "best_s": best,
        "cells_per_s": {k: len(tokens) / v for k, v in best.items()},
        "speedup_vs_geniml_bs16": best["geniml bs16"] / best["atacformer"],
        "speedup_vs_geniml_bs64": best["geniml bs64"] / best["atacformer"],
        "max_abs_diff_cells_within_context": diff,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("cells_per_s", "speedup_vs_geniml_bs16", "speedup_vs_geniml_bs64",
                                             "max_abs_diff_cells_within_context")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

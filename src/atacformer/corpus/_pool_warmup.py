"""Imported by the fork server of :func:`atacformer.corpus.tokenize_to_corpus`'s local pool.

Tokenizing two fragments once loads the compiled kernels and the decompressor, so every
worker forked afterwards starts ready instead of paying that (seconds) on its first input.
Best effort: any failure here only means a slower first input.
"""

from __future__ import annotations

import gzip
import logging
import os
import tempfile

logger = logging.getLogger(__name__)


def warm() -> None:
    """Tokenize a two-fragment gzip file into 1 Mb bins of hg38."""
    from atacformer.tokenizers import tokenize_paths
    from atacformer.vocab import Vocabulary

    with tempfile.TemporaryDirectory(prefix="atacformer-warm-") as d:
        path = os.path.join(d, "warm.tsv.gz")
        with gzip.open(path, "wt") as f:
            f.write("chr1\t10000\t10100\tAAAC-1\t1\nchr2\t20000\t20300\tAAAG-1\t2\n")
        for _ in tokenize_paths([path], Vocabulary.from_bins("hg38", 1_000_000), genome="hg38"):
            pass


try:
    warm()
except Exception as e:  # pragma: no cover - only speed is at stake
    logger.debug("warm-up of the tokenizer failed: %s", e)

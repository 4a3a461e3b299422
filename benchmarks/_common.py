"""What the benchmark scripts share: the real-data and output folders, ``--threads`` and
``--seed``, and the check that ``../shared/data`` is there.

A script builds its parser with :func:`parser`, adds its own options, then calls
:func:`parse`, which returns the parsed options and the data folder (``None`` after saying
that it is absent, when the script should exit with status 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"


def parser(doc: str, out: str | None = None) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc``, with ``--data-dir`` and, when
    ``out`` is given, ``--out`` (default ``benchmarks/out/<out>``)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(DATA))
    if out is not None:
        p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / out))
    return p


def parse(p: argparse.ArgumentParser, argv=None, threads: int | None = None):
    """Add ``--threads`` (default ``threads``) and ``--seed`` when ``threads`` is given, parse
    ``argv`` and return ``(args, data folder or None)``."""
    if threads is not None:
        p.add_argument("--threads", type=int, default=threads)
        p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    data = Path(args.data_dir)
    if not data.is_dir():
        print(f"real data folder {data} is absent (see ../shared/data/README.md)", file=sys.stderr)
        return args, None
    return args, data

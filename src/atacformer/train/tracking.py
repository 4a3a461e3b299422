"""Metrics of a run: ``metrics.csv`` (one row per logged step), TensorBoard when installed.

Rows are flushed as they are written, so a killed run leaves every row it logged. On
resume from the checkpoint of step ``s``, rows after ``s`` (logged by the killed process
after its last checkpoint, possibly a torn last line) are dropped before logging goes on,
so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

COLUMNS = ("step", "loss", "lr", "tokens_seen", "tokens_per_s", "grad_norm", "padding", "data_wait",
           "epoch", "elapsed_s")
INT_COLUMNS = ("step", "tokens_seen", "epoch")
METRICS_FILE = "metrics.csv"


def read_metrics(path) -> list[dict[str, float]]:
    """The complete rows of a ``metrics.csv`` as dicts of numbers (:data:`INT_COLUMNS` as int)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        for r in reader:
            try:
                row = {k: float(r[k]) for k in COLUMNS}
            except (TypeError, ValueError, KeyError):
                continue  # a torn last line of a killed run
            for k in INT_COLUMNS:
                row[k] = int(row[k])
            rows.append(row)
    return rows


class MetricsLogger:
    """Append rows to ``OUT/metrics.csv`` (and TensorBoard scalars under ``OUT/tensorboard``).

    Parameters
    ----------
    out
        Run folder.
    resume_step
        Rows with ``step > resume_step`` are removed first (None: start a new file).
    tensorboard
        True / False, or None to log there when ``torch.utils.tensorboard`` can be used.
    enabled
        False on ranks other than 0 (nothing is written).
    """

    def __init__(self, out, resume_step: int | None = None, tensorboard: bool | None = None,
                 enabled: bool = True):
        self.enabled = enabled
        self.path = Path(out) / METRICS_FILE
        self._tb = None
        if not enabled:
            return
        if resume_step is None:
            self._rewrite([])
        else:
            self._rewrite([r for r in read_metrics(self.path) if r["step"] <= resume_step])
        self._file = open(self.path, "a", newline="")
        self._writer = csv.writer(self._file)
        if tensorboard is None:
            tensorboard = importlib.util.find_spec("tensorboard") is not None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(out) / "tensorboard"), purge_step=
                                         None if resume_step is None else resume_step + 1)
            except ImportError as e:
                logger.warning("TensorBoard logging is off: %s", e)

    def _rewrite(self, rows) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for r in rows:
                w.writerow([_fmt(r[k]) for k in COLUMNS])
        os.replace(tmp, self.path)

    def log(self, row: dict) -> None:
        """Write one row (keys: :data:`COLUMNS`)."""
        if not self.enabled:
            return
        self._writer.writerow([_fmt(row[k]) for k in COLUMNS])
        self._file.flush()
        if self._tb is not None:
            for k in COLUMNS[1:]:
                self._tb.add_scalar(f"train/{k}", row[k], row["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v)  # shortest text that reads back to the same float
    return str(v)

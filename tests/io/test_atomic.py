"""Atomic output files: a failed write leaves the old file as it was and nothing else."""

import os

import pytest

from atacformer.io._atomic import atomic_path, write_text_atomic


def test_success_replaces_and_failure_keeps_the_old_file(tmp_path):
    out = tmp_path / "report.tsv"
    write_text_atomic(out, "a\n")
    assert out.read_text() == "a\n" and os.listdir(tmp_path) == ["report.tsv"]
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("interrupted")
    assert out.read_text() == "a\n" and os.listdir(tmp_path) == ["report.tsv"]
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "new.h5ad", ".tmp.h5ad") as tmp:
            open(tmp, "w").close()
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == ["report.tsv"]

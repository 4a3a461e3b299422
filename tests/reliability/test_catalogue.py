"""The catalogue of refused inputs and damaged files: each case raises the project's own
error type, with a one-line message naming the file, and leaves its folder as it was."""

from __future__ import annotations

import pytest
from _cases import CASES, DATA, run_case

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} is absent")


@pytest.mark.parametrize("name", list(CASES))
def test_case(tmp_path, name):
    run_case(CASES[name], tmp_path)

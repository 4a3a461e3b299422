"""Shared fixtures: the real data folder (../shared/data) and marker handling."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine (CI's)
    OpenMP's spinning threads make them many times slower: one torch thread for the whole
    test session, restored after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real public datasets; tests that need them skip when the folder is absent."""
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} is absent (see ../shared/data/README.md)")
    return DATA


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
        n_gpu = torch.cuda.device_count()
    except Exception:
        has_cuda, n_gpu = False, 0
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_multi = pytest.mark.skip(reason="needs several CUDA GPUs")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "multigpu" in item.keywords and n_gpu < 2:
            item.add_marker(skip_multi)

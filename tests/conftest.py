import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


def _cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per core, at most 4 (each holds reference-sized models)."""
    return max(1, min(4, _cores()))


# Under pytest-xdist the workers share the cores: each takes its part, or their GEMMs fight.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    torch.set_num_threads(max(1, _cores() // workers))
    # numba (librosa's pYIN) caches what it compiles beside librosa; two workers compiling the
    # same function into an empty cache at once can leave a file that crashes the one loading
    # it. Each worker keeps its own cache (read when numba is imported, after this file).
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(
        tempfile.gettempdir(), f"sharedflow-numba-{os.environ.get('PYTEST_XDIST_WORKER', 'gw')}"
    )


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Built-in data goes to a temporary cache, shared by the whole session."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SHAREDFLOW_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()

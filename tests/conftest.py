import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


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

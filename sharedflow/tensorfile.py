"""Reading ``.pt`` files that should hold only tensors and plain values.

``torch.load`` with ``weights_only=True`` runs no pickled code; a file that needs more (classes,
functions) is refused here with a message that names the file, never with torch's advice to
turn the safety off.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sharedflow.errors import first_line

__all__ = ["TensorFileError", "load_tensors", "refusal_reason"]


class TensorFileError(ValueError):
    """A ``.pt`` file that is unreadable or holds more than tensors and plain values."""


def refusal_reason(error: pickle.UnpicklingError) -> str:
    """What the restricted unpickler refused (e.g. ``Unsupported global: GLOBAL os.system``),
    without torch's advice to load the file unrestricted."""
    lines = [line.strip() for line in str(error).splitlines()]
    refused = [line for line in lines if "nsupported" in line and "weights_only" not in line]
    refused += [
        tail for line in lines if (tail := line.partition("WeightsUnpickler error:")[2].strip())
    ]
    if refused:
        return refused[0].split(". ")[0]
    return "it names classes or functions"


def load_tensors(
    path: str | Path,
    allowed: Sequence[Any] = (),
    what: str = "tensors and plain values",
) -> Any:
    """The contents of ``path``: tensors, numbers, strings and containers of them, plus the
    ``allowed`` classes (torch's ``safe_globals``); ``what`` names what may be read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise TensorFileError(
            f"{path}: refused to unpickle ({refusal_reason(error)}); only {what} are read"
        ) from error
    except Exception as error:  # torch.load raises many types for files it cannot parse
        raise TensorFileError(
            f"{path}: not a readable tensor file ({first_line(error)})"
        ) from error

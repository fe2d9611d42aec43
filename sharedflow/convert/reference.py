"""Reading reference checkpoints without running their code.

NVIDIA's WaveGlow checkpoints pickle whole modules (``glow.WaveGlow``, ``glow.WN``, ...), so a
plain ``torch.load`` would import and run the reference code, and ``weights_only`` loading
refuses them. Here they are read by torch's restricted (``weights_only``) unpickler with inert
stand-ins for exactly the classes such a file names: a stand-in only stores the attributes it is
given, so nothing but tensors and plain values comes out, and any other class is refused. The
module tree is then flattened into a state dict.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor

from sharedflow.tensorfile import TensorFileError, load_tensors

__all__ = ["ConversionError", "read_state_dict"]

# Classes a WaveGlow / WaveFlow / NanoFlow / TarFlow checkpoint may name, besides tensors.
_MODULE_CLASSES = [
    ("glow", "WaveGlow"),
    ("glow", "WN"),
    ("glow", "Invertible1x1Conv"),
    ("glow_old", "WaveGlow"),
    ("glow_old", "WN"),
    ("glow_old", "Invertible1x1Conv"),
    ("torch.nn.modules.container", "ModuleList"),
    ("torch.nn.modules.conv", "Conv1d"),
    ("torch.nn.modules.conv", "ConvTranspose1d"),
    ("torch.nn.utils.weight_norm", "WeightNorm"),
]


class ConversionError(ValueError):
    """A reference checkpoint that cannot be read or does not fit the model kind."""


class _Inert:
    """Receives pickled state and keeps it; runs no code of the class it stands for."""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state


def _stand_in(module: str, name: str) -> type:
    return type(name, (_Inert,), {"__module__": module, "__qualname__": name})


def _flatten(obj: Any, prefix: str = "") -> dict[str, Tensor]:
    """The state dict of a pickled module tree (``_parameters``, ``_buffers``, ``_modules``)."""
    state = obj.__dict__.get("_state", obj.__dict__) if isinstance(obj, _Inert) else {}
    tensors: dict[str, Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for key, value in (state.get(group) or {}).items():
            if isinstance(value, Tensor):
                tensors[prefix + key] = value.detach()
    for key, child in (state.get("_modules") or {}).items():
        if child is not None:
            tensors.update(_flatten(child, f"{prefix}{key}."))
    return tensors


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A reference checkpoint's weights: a safetensors file, a state dict (under ``'model'`` or
    ``'state_dict'`` or bare), or a pickled module tree; DataParallel ``module.`` stripped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.suffix == ".safetensors":
        return load_file(path)
    stand_ins = [_stand_in(m, n) for m, n in _MODULE_CLASSES]
    known = "tensors and the state of known WaveGlow/WaveFlow/TarFlow classes"
    try:
        obj = load_tensors(path, [*stand_ins, OrderedDict, set], what=known)
    except TensorFileError as error:
        raise ConversionError(str(error)) from error
    if isinstance(obj, dict) and ("model" in obj or "state_dict" in obj):
        obj = obj.get("model", obj.get("state_dict"))
    state = _flatten(obj) if isinstance(obj, _Inert) else obj
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConversionError(f"{path}: holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}

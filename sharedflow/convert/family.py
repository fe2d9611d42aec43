"""A family of reference checkpoints: where its settings come from and how its weights map.

A converted model's configuration is assembled from three sources, in this order:

1. what the checkpoint's tensor shapes determine (widths, counts, kernel sizes), and what its
   file name records where the reference writes settings there (ml-tarflow);
2. the reference's own configuration file, when ``--config`` gives it (the JSON the reference
   repositories train from, or Glow-PyTorch's ``hparams.json``);
3. values given on the command line (``height=16``).

A value given by two sources must agree, or the conversion stops naming both. A setting that
changes the model's function but is in no source (WaveFlow's height, say) is never guessed:
the conversion stops, naming each missing value and how to give it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from sharedflow.convert.reference import ConversionError
from sharedflow.convert.rules import Rule

__all__ = ["Family", "count", "given", "read_config_file", "resolve"]

Settings = dict[str, Any]


def count(ref: dict[str, Tensor], pattern: str) -> int:
    """``max + 1`` of the integer that ``pattern``'s group captures over the keys (0: none)."""
    found = {int(m.group(1)) for key in ref if (m := re.match(pattern, key))}
    return max(found) + 1 if found else 0


def given(names: dict[str, Any]) -> Settings:
    """The settings a configuration file gave: its entries that are not ``None``."""
    return {key: value for key, value in names.items() if value is not None}


@dataclass(frozen=True)
class Family:
    """One reference code base's checkpoints.

    Attributes:
        kind: the name ``sharedflow convert`` takes.
        target: our model factory's ``_target_``.
        recipe: the recipe whose data and trainer settings the converted checkpoint carries.
        config_file: what ``--config`` reads, for ``--help`` and the messages.
        infer: settings the state dict's shapes determine (``KeyError``: not this family).
        read_config: our settings from the reference's configuration file (a parsed JSON).
        read_name: our settings from the checkpoint's file name (its stem).
        needs: settings that must be known, given what is known, mapped to how the reference
            names them; a missing one stops the conversion.
        rules: the weight map for the resolved settings.
        prepare: rewrites older layouts of the state dict into the one ``rules`` reads.
        built: regex over our keys that the model builds itself.
        ignored: regex over reference keys that carry nothing to map.
    """

    kind: str
    target: str
    recipe: str
    config_file: str
    infer: Callable[[dict[str, Tensor]], Settings]
    read_config: Callable[[dict[str, Any]], Settings]
    rules: Callable[[Settings], Iterable[Rule]]
    needs: Callable[[Settings], dict[str, str]] = lambda settings: {}
    read_name: Callable[[str], Settings] = lambda stem: {}
    prepare: Callable[[dict[str, Tensor]], dict[str, Tensor]] = lambda ref: ref
    built: str = r"$^"
    ignored: str = r"$^"


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A reference configuration file: a JSON object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConversionError(f"no such configuration file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConversionError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: holds no JSON object")
    return data


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def resolve(
    family: Family,
    ref: dict[str, Tensor],
    file_config: dict[str, Any] | None,
    given: Settings,
    stem: str = "",
) -> Settings:
    """Our model config from the three sources (see the module docstring)."""
    sources = [
        ("the checkpoint's shapes", family.infer(ref)),
        ("the checkpoint's file name", family.read_name(stem)),
        (f"--config ({family.config_file})", family.read_config(file_config or {})),
        ("the command line", given),
    ]
    settings: Settings = {}
    origin: dict[str, str] = {}
    for name, values in sources:
        for key, value in values.items():
            if key in settings and not _same(settings[key], value):
                raise ConversionError(
                    f"{key} is {settings[key]!r} by {origin[key]} but {value!r} by {name}"
                )
            settings.setdefault(key, value)
            origin.setdefault(key, name)
    missing = {k: v for k, v in family.needs(settings).items() if k not in settings}
    if missing:
        listed = "; ".join(f"{key} ({what})" for key, what in missing.items())
        example = " ".join(f"{key}=..." for key in missing)
        raise ConversionError(
            f"the {family.kind} checkpoint does not record {listed}: give --config with "
            f"{family.config_file}, or {example} on the command line"
        )
    return {"_target_": family.target, **settings}

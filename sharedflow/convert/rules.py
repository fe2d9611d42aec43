"""Declarative weight maps: each of our state-dict entries, from which reference tensors.

A family's map is a list of ``Rule``: our key (as ``named_parameters``/``named_buffers`` name
it, so a module shared by several steps has one key, under the first step) on the left, the
reference keys on the right, and how the tensors combine. ``apply_rules`` fills a model from a
reference state dict and stops, naming the keys, unless

- every rule names a key of ours and keys of the reference that exist,
- every value has exactly the shape of the entry it fills (a reshape must be declared),
- every reference tensor is used once (keys the family declares ignorable aside), and
- every entry of ours is filled (entries the family declares built, such as masks, aside).

Renaming a module of ours changes its keys, so the map then fails loudly instead of loading
into the wrong place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sharedflow.convert.reference import ConversionError

__all__ = ["Rule", "apply_rules", "constant", "copy", "plain", "weight_norm"]


@dataclass(frozen=True)
class Rule:
    """``ours <- transform(*[ref[k] for k in theirs])``.

    Attributes:
        ours: our state-dict key.
        theirs: the reference keys read (none for a constant).
        transform: combines the reference tensors; ``None`` takes the one tensor as it is.
        reshape: the value has our entry's elements in another shape (e.g. ``(C, 1, 1)`` for
            ``(1, C, 1, 1)``); declared, so that any other shape difference is an error.
    """

    ours: str
    theirs: tuple[str, ...]
    transform: Callable[..., Tensor] | None = None
    reshape: bool = False


def copy(
    ours: str,
    theirs: str,
    transform: Callable[[Tensor], Tensor] | None = None,
    reshape: bool = False,
) -> Rule:
    """One tensor to one entry."""
    return Rule(ours, (theirs,), transform, reshape)


def constant(ours: str, value: Tensor) -> Rule:
    """An entry the reference does not store but implies (ActNorm's "initialised" flag)."""
    return Rule(ours, (), lambda: value)


def plain(ours: str, theirs: str, names: Iterable[str] = ("weight", "bias")) -> list[Rule]:
    """A module's parameters under the same names on both sides."""
    return [copy(f"{ours}.{name}", f"{theirs}.{name}") for name in names]


def weight_norm(ours: str, theirs: str, reshape: bool = False) -> list[Rule]:
    """A weight-normed conv: torch's parametrisation (``original0`` is g, ``original1`` is v)
    from the reference's ``weight_g``/``weight_v``, and its bias. ``reshape``: the reference's
    conv has other singleton axes (a 1x1 ``Conv2d`` for our ``Conv1d``)."""
    return [
        copy(f"{ours}.parametrizations.weight.original0", f"{theirs}.weight_g", reshape=reshape),
        copy(f"{ours}.parametrizations.weight.original1", f"{theirs}.weight_v", reshape=reshape),
        copy(f"{ours}.bias", f"{theirs}.bias"),
    ]


def apply_rules(
    model: nn.Module,
    ref: dict[str, Tensor],
    rules: Iterable[Rule],
    built: str = r"$^",
    ignored: str = r"$^",
) -> None:
    """Fill ``model`` from ``ref`` by ``rules`` (see the module docstring).

    Args:
        built: a regex over our keys that the model builds itself (masks, the mel filterbank).
        ignored: a regex over reference keys that carry nothing to map (caches, masks).
    """
    ours = dict(model.named_parameters()) | dict(model.named_buffers())
    used: set[str] = set()
    filled: set[str] = set()
    for rule in rules:
        if rule.ours not in ours:
            raise ConversionError(f"the map names {rule.ours}, which the model does not have")
        if rule.ours in filled:
            raise ConversionError(f"the map fills {rule.ours} twice")
        for key in rule.theirs:
            if key not in ref:
                raise ConversionError(f"the reference checkpoint lacks {key}")
            if key in used:
                raise ConversionError(f"the map uses the reference's {key} twice")
        tensors = [ref[key] for key in rule.theirs]
        value = rule.transform(*tensors) if rule.transform is not None else tensors[0]
        target = ours[rule.ours]
        if rule.reshape and value.numel() == target.numel():
            value = value.reshape(target.shape)
        if tuple(value.shape) != tuple(target.shape):
            source = ", ".join(rule.theirs) or "a constant"
            raise ConversionError(
                f"{source}: shape {tuple(value.shape)} does not fit {rule.ours} "
                f"{tuple(target.shape)}"
            )
        with torch.no_grad():
            target.copy_(value)
        used.update(rule.theirs)
        filled.add(rule.ours)
    unused = sorted(k for k in ref if k not in used and not re.search(ignored, k))
    unfilled = [k for k in ours if k not in filled and not re.search(built, k)]
    if unused or unfilled:
        raise ConversionError(
            f"the checkpoint does not match the model: unused {unused[:5]}"
            f"{' ...' if len(unused) > 5 else ''}, unfilled {unfilled[:5]}"
            f"{' ...' if len(unfilled) > 5 else ''}"
        )

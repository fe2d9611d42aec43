"""L0SG/NanoFlow's image models (``image_density_experiments``) into ``glow`` and
``nanoflow_glow``.

The reference keeps one flat list ``flow.layers``: per level ``i``, a squeeze, ``K`` flow
steps (layer ``j = i (K + 2) + 1 + k``), then a ``Split2d`` (layer ``i (K + 2) + K + 1``) except
after the last level, whose prior is ``learn_top_fn`` applied to the zero buffer ``prior_h``.
Every setting is in the shapes: levels (splits), steps, hidden width, estimator depth, image size
and channels (``prior_h``), the sharing mode (which keys exist) and the embedding size.

The estimators map as follows. Glow: per step ``block.0`` (3x3), ``block.2`` (1x1), ``block.4``
(zero 3x3 head). The NanoFlow family keeps its six-layer bodies under ``flow.estimator``: one per
level (naive, decomp, NanoFlow), with the zero 1x1 head inside (naive) or per step as
``conv_proj``, or one per step, keyed by the step's layer index (Glow-large). NanoFlow adds per
step an embedding ``flow.embedding.<j>``, its ``actnorm_embed`` and ``multgate``.

The priors: the reference's ``Split2d`` scores the split-off half ``z_2`` under
``N(mean, exp(logs)^2)`` from a zero conv on the kept half (mean and log-scale interleaved); here
that conv feeds an ``InverseAffine`` coupling that standardises ``z_2`` to ``(z_2 - mean)
exp(-logs)`` before it leaves for the standard normal base, and the top prior likewise (mean and
log-scale as halves). Our latent is therefore the reference's latent, prior-standardised, and the
log-likelihoods agree exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from sharedflow.convert.family import Family, Settings, count, given
from sharedflow.convert.reference import ConversionError
from sharedflow.convert.rules import Rule, constant, copy, plain

__all__ = ["GLOW", "NANOFLOW_GLOW"]

_TRUE = torch.tensor(True)
# model_type in NanoFlow's train.py -> our sharing mode.
_SHARING = {
    "glow_large": "independent",
    "nanoflow_naive": "shared",
    "nanoflow_decomp": "decomposed",
    "nanoflow": "nanoflow",
}


def _indices(ref: dict[str, Tensor], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for key in ref if (m := re.match(pattern, key))})


def _refuse_variants(ref: dict[str, Tensor]) -> None:
    if any(key.startswith("project_ycond") for key in ref):
        raise ConversionError("class-conditional (y_condition) Glow models are not supported")
    if any(key.endswith("invconv.weight") for key in ref):
        raise ConversionError("only the LU-decomposed 1x1 convolution is supported")
    bodies = _indices(ref, r"flow\.estimator\.(\d+)\.")
    body = ref.get(f"flow.estimator.{bodies[0]}.conv2.conv.weight") if bodies else None
    if body is not None and body.shape[-1] == 1:
        raise ConversionError("the nanoflowalt variants (3x3 -> 1x1 estimators) are not supported")


def _infer(ref: dict[str, Tensor], nanoflow: bool) -> Settings:
    _refuse_variants(ref)
    prior = ref["prior_h"]
    steps = _indices(ref, r"flow\.layers\.(\d+)\.actnorm\.bias")
    n_levels = len(_indices(ref, r"flow\.layers\.(\d+)\.conv\.conv\.weight")) + 1
    top_channels = prior.shape[1] // 2
    settings: Settings = {
        "image_size": prior.shape[-1] * 2**n_levels,
        "in_channels": top_channels // 2 ** (n_levels + 1),
        "n_levels": n_levels,
        "n_steps": len(steps) // n_levels,
    }
    if not nanoflow:
        return settings | {"hidden": ref["flow.layers.1.block.0.conv.weight"].shape[0]}
    bodies = _indices(ref, r"flow\.estimator\.(\d+)\.")
    first = f"flow.estimator.{bodies[0]}"
    if "flow.embedding.1" in ref:
        sharing = "nanoflow"
    elif f"{first}.conv_proj.conv.weight" in ref:
        sharing = "shared"
    else:
        sharing = "decomposed" if len(bodies) == n_levels else "independent"
    embedding = ref.get("flow.embedding.1")
    return settings | {
        "hidden": ref[f"{first}.conv1.conv.weight"].shape[0],
        "n_estimator_layers": count(ref, re.escape(first) + r"\.conv(\d+)\.") - 1,
        "sharing": sharing,
        "embedding_dim": embedding.shape[1] if embedding is not None else 0,
    }


def _read_config(hparams: dict[str, Any], nanoflow: bool) -> Settings:
    """Glow-PyTorch's ``hparams.json`` (``train.py``'s arguments)."""
    unsupported = {
        "flow_permutation": "invconv",
        "flow_coupling": "affine",
        "LU_decomposed": True,
        "learn_top": True,
        "y_condition": False,
    }
    for key, value in unsupported.items():
        if key in hparams and hparams[key] != value:
            raise ConversionError(f"{key}={hparams[key]!r} is not supported (only {value!r})")
    names = {
        "hidden": hparams.get("hidden_channels"),
        "n_steps": hparams.get("K"),
        "n_levels": hparams.get("L"),
    }
    model_type = hparams.get("model_type")
    if model_type is not None:
        if nanoflow != (model_type in _SHARING):
            raise ConversionError(
                f"model_type {model_type!r} is not a {'nanoflow-glow' if nanoflow else 'glow'} "
                "model"
            )
        if nanoflow:
            names["sharing"] = _SHARING[model_type]
            if model_type == "nanoflow":
                names["embedding_dim"] = hparams.get("flow_embed_dim")
    return given(names)


def _prepare(ref: dict[str, Tensor]) -> dict[str, Tensor]:
    if ref["prior_h"].any():
        raise ConversionError("prior_h, the top prior's input, should be zeros")
    return ref


def _zero_conv(ours: str, theirs: str) -> list[Rule]:
    return [
        copy(f"{ours}.scale", f"{theirs}.logs", reshape=True),
        *plain(f"{ours}.conv", f"{theirs}.conv"),
    ]


def _conv_actnorm(ours: str, theirs: str) -> list[Rule]:
    return [
        copy(f"{ours}.conv.weight", f"{theirs}.conv.weight"),
        *_actnorm(f"{ours}.norm", f"{theirs}.actnorm"),
    ]


def _actnorm(ours: str, theirs: str) -> list[Rule]:
    return [*plain(ours, theirs, ("bias", "logs")), constant(f"{ours}.initialized", _TRUE)]


def _estimator(
    settings: Settings, est: str, level: int, k: int, j: int, first: int
) -> Iterator[Rule]:
    """Step ``k`` of ``level`` (reference layer ``j``; ``first`` is the level's first step)."""
    sharing = settings.get("sharing")
    if sharing is None:  # Glow
        yield from _conv_actnorm(f"{est}.net.layers.0", f"flow.layers.{j}.block.0")
        yield from _conv_actnorm(f"{est}.net.layers.1", f"flow.layers.{j}.block.2")
        yield from _zero_conv(f"{est}.head", f"flow.layers.{j}.block.4")
        return
    body = f"flow.estimator.{j if sharing == 'independent' else level}"
    if k == 0 or sharing == "independent":
        for layer in range(settings["n_estimator_layers"]):
            yield from _conv_actnorm(f"{est}.net.layers.{layer}", f"{body}.conv{layer + 1}")
    if sharing == "shared":
        if k == 0:
            yield from _zero_conv(f"{est}.head", f"{body}.conv_proj")
        return
    yield from _zero_conv(f"{est}.head", f"flow.layers.{j}.conv_proj")
    if sharing == "nanoflow":
        yield copy(f"{est}.step_params.gate", f"flow.layers.{j}.multgate", reshape=True)
        yield from _actnorm(f"{est}.step_params.norm", f"flow.layers.{j}.actnorm_embed")
        if k == 0:
            tables = tuple(f"flow.embedding.{first + s}" for s in range(settings["n_steps"]))
            yield Rule(f"{est}.table.weight", tables, lambda *rows: torch.cat(rows, 0))


def _rules(settings: Settings) -> Iterator[Rule]:
    """Level ``i`` lives under ``flow.transform`` then ``.layers.<3K + 2>.inner`` per level
    before it; in it, step ``k`` is ActNorm, 1x1 conv and coupling at ``3k + 1 .. 3k + 3``."""
    n_levels, n_steps = settings["n_levels"], settings["n_steps"]
    level = "flow.transform"
    for i in range(n_levels):
        first = i * (n_steps + 2) + 1
        for k in range(n_steps):
            j, ours = first + k, f"{level}.layers"
            yield from _actnorm(f"{ours}.{3 * k + 1}", f"flow.layers.{j}.actnorm")
            yield from plain(
                f"{ours}.{3 * k + 2}",
                f"flow.layers.{j}.invconv",
                ("lower", "upper", "log_s", "p", "sign_s"),
            )
            est = f"{ours}.{3 * k + 3}.conditioner"
            yield from _estimator(settings, est, i, k, j, first)
        prior = f"{level}.layers.{3 * n_steps + 1}"
        if i < n_levels - 1:
            yield from _zero_conv(f"{prior}.conditioner", f"flow.layers.{first + n_steps}.conv")
            level = f"{level}.layers.{3 * n_steps + 2}.inner"
        else:
            yield from _zero_conv(f"{prior}.net", "learn_top_fn")


def _family(kind: str, nanoflow: bool) -> Family:
    return Family(
        kind=kind,
        target="sharedflow.models." + ("nanoflow_glow" if nanoflow else "glow"),
        recipe="image/nanoflow-glow-cifar10" if nanoflow else "image/glow-cifar10",
        config_file="Glow-PyTorch's hparams.json",
        infer=lambda ref: _infer(ref, nanoflow),
        read_config=lambda hparams: _read_config(hparams, nanoflow),
        rules=_rules,
        prepare=_prepare,
        built=r"(lower_mask|eye|_anchor)$",
        ignored=r"^prior_h$",
    )


GLOW = _family("glow", nanoflow=False)
NANOFLOW_GLOW = _family("nanoflow-glow", nanoflow=True)

"""apple/ml-tarflow checkpoints into ``sharedflow.models.tarflow``.

The shapes give the tokens, width, blocks, layers, classes and whether the flow is affine
(``nvp``); the image channels follow from the patch features ``C p^2`` when only one of 1 and 3
fits. The training noise (``uniform``, or ``gaussian`` with its standard deviation) is in no
tensor: it comes from the checkpoint's file name as ``train.py`` writes it
(``{dataset}_model_{p}_{C}_{T}_{K}_{noise}.pth``), from a JSON of ``train.py``'s arguments
(``--config``), or from the command line.

Odd blocks read the tokens reversed and the reference stores their position embedding in its
own order, so it is flipped. The shift-only variant's ``z = x - b`` is our ``z = x + h``, so its
output projection is negated, and its running prior variance ``var (T, D)`` becomes our
``(C, H, W)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from torch import Tensor

from sharedflow.convert.family import Family, Settings, count, given
from sharedflow.convert.rules import Rule, copy, plain

__all__ = ["TARFLOW"]

_NAME = re.compile(r"_model_(\d+)_(\d+)_(\d+)_(\d+)_(uniform|\d+\.\d+)$")


def _infer(ref: dict[str, Tensor]) -> Settings:
    n_tokens, channels = ref["blocks.0.pos_embed"].shape
    n_features = ref["blocks.0.proj_in.weight"].shape[1]
    fits = [
        c
        for c in (1, 3)
        if n_features % c == 0 and math.isqrt(n_features // c) ** 2 * c == n_features
    ]
    settings: Settings = {
        "channels": channels,
        "n_blocks": count(ref, r"blocks\.(\d+)\."),
        "n_layers": count(ref, r"blocks\.0\.attn_blocks\.(\d+)\."),
        "num_classes": ref["blocks.0.class_embed"].shape[0]
        if "blocks.0.class_embed" in ref
        else 0,
        "affine": ref["blocks.0.proj_out.weight"].shape[0] == 2 * n_features,
    }
    if len(fits) == 1:
        patch = math.isqrt(n_features // fits[0])
        settings |= {
            "in_channels": fits[0],
            "patch_size": patch,
            "image_size": patch * math.isqrt(n_tokens),
        }
    return settings


def _noise(value: str) -> Settings:
    return (
        {"noise": "uniform"}
        if value == "uniform"
        else {"noise": "gaussian", "noise_std": float(value)}
    )


def _read_name(stem: str) -> Settings:
    match = _NAME.search(stem)
    if match is None:
        return {}
    patch, channels, blocks, layers, noise = match.groups()
    return {
        "patch_size": int(patch),
        "channels": int(channels),
        "n_blocks": int(blocks),
        "n_layers": int(layers),
        **_noise(noise),
    }


def _read_config(args: dict[str, Any]) -> Settings:
    names = {
        "image_size": args.get("img_size"),
        "in_channels": args.get("channel_size"),
        "patch_size": args.get("patch_size"),
        "channels": args.get("channels"),
        "n_blocks": args.get("blocks"),
        "n_layers": args.get("layers_per_block"),
        "affine": args.get("nvp"),
        "noise": args.get("noise_type"),
        "label_drop": args.get("drop_label"),
    }
    if args.get("noise_type", "gaussian") == "gaussian" and "noise_std" in args:
        names["noise_std"] = args["noise_std"]
    return given(names)


def _needs(settings: Settings) -> dict[str, str]:
    needs = {
        "in_channels": "the image channels, channel_size",
        "noise": "the training noise, noise_type: uniform or gaussian",
    }
    if settings.get("noise") == "gaussian":
        needs["noise_std"] = "the gaussian noise's standard deviation, noise_std"
    return needs


def _unpatchify(settings: Settings) -> Any:
    c, p, size = settings["in_channels"], settings["patch_size"], settings["image_size"]
    n = size // p

    def transform(var: Tensor) -> Tensor:  # (T, D), D ordered (c, ky, kx) -> (C, H, W)
        return var.reshape(n, n, c, p, p).permute(2, 0, 3, 1, 4).reshape(c, size, size)

    return transform


def _rules(settings: Settings) -> Iterator[Rule]:
    """Block ``k``'s network is ``flow.transform.layers.<2k + 1>.conditioner.net.net``."""
    affine = settings["affine"]
    for k in range(settings["n_blocks"]):
        ours, theirs = f"flow.transform.layers.{2 * k + 1}.conditioner.net.net", f"blocks.{k}"
        yield from plain(f"{ours}.proj_in", f"{theirs}.proj_in")
        flip = (lambda t: t.flip(0)) if k % 2 else None
        yield copy(f"{ours}.pos_embed", f"{theirs}.pos_embed", flip)
        if settings["num_classes"]:
            yield copy(f"{ours}.class_embed", f"{theirs}.class_embed")
        for i in range(settings["n_layers"]):
            layer, block = f"{ours}.layers.{i}", f"{theirs}.attn_blocks.{i}"
            yield from plain(f"{layer}.norm1", f"{block}.attention.norm")
            yield from plain(f"{layer}.attn.qkv", f"{block}.attention.qkv")
            yield from plain(f"{layer}.attn.proj", f"{block}.attention.proj")
            yield from plain(f"{layer}.norm2", f"{block}.mlp.norm")
            yield from plain(f"{layer}.mlp.0", f"{block}.mlp.main.0")
            yield from plain(f"{layer}.mlp.2", f"{block}.mlp.main.2")
        sign = None if affine else (lambda t: -t)
        for name in ("weight", "bias"):
            yield copy(f"{ours}.proj_out.{name}", f"{theirs}.proj_out.{name}", sign)
    if not affine:
        yield copy("flow.base.var", "var", _unpatchify(settings))


TARFLOW = Family(
    kind="tarflow",
    target="sharedflow.models.tarflow",
    recipe="image/tarflow-imagenet64",
    config_file="a JSON of ml-tarflow train.py's arguments",
    infer=_infer,
    read_config=_read_config,
    read_name=_read_name,
    rules=_rules,
    needs=_needs,
    built=r"(_anchor$|indices$)",
    ignored=r"(attn_mask|^var)$",
)

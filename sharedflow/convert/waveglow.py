"""NVIDIA/waveglow checkpoints into ``sharedflow.models.waveglow``.

Every setting is in the shapes: flows, group, early outputs, widths, kernel, mels. The mel
upsampler's stride (256) is a constant of NVIDIA's ``glow.py``; ``config.json`` may restate it.
Older checkpoints keep per-layer ``cond_layers`` (merged here), and ``glow_old.py``'s keep
separate ``res_layers``/``skip_layers`` and alternate the coupling halves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from sharedflow.convert.family import Family, Settings, count, given
from sharedflow.convert.rules import Rule, copy, plain, weight_norm
from sharedflow.models.waveglow import flow_widths

__all__ = ["WAVEGLOW"]


def _merge_cond_layers(ref: dict[str, Tensor]) -> dict[str, Tensor]:
    """Pre-2019 layout: per-layer ``cond_layers`` become the fused ``cond_layer``."""
    ref = dict(ref)
    for k in range(count(ref, r"WN\.(\d+)\.cond_layers\.")):
        n = count(ref, rf"WN\.{k}\.cond_layers\.(\d+)\.")
        for name in ("weight_g", "weight_v", "bias"):
            parts = [ref.pop(f"WN.{k}.cond_layers.{i}.{name}") for i in range(n)]
            ref[f"WN.{k}.cond_layer.{name}"] = torch.cat(parts, 0)
    return ref


def _merge_res_skip_layers(ref: dict[str, Tensor]) -> dict[str, Tensor]:
    """``glow_old.py``'s ``res_layers`` and ``skip_layers`` become ``res_skip_layers``.

    Weight norm is per output channel, so the residual rows then the skip rows stack along the
    output axis for ``weight_g``, ``weight_v`` and ``bias`` alike; the last layer is skip only.
    """
    ref = dict(ref)
    for k in range(count(ref, r"WN\.(\d+)\.skip_layers\.")):
        for i in range(count(ref, rf"WN\.{k}\.skip_layers\.(\d+)\.")):
            for name in ("weight_g", "weight_v", "bias"):
                res = ref.pop(f"WN.{k}.res_layers.{i}.{name}", None)
                skip = ref.pop(f"WN.{k}.skip_layers.{i}.{name}")
                ref[f"WN.{k}.res_skip_layers.{i}.{name}"] = (
                    skip if res is None else torch.cat([res, skip], 0)
                )
    return ref


def _prepare(ref: dict[str, Tensor]) -> dict[str, Tensor]:
    return _merge_res_skip_layers(_merge_cond_layers(ref))


def _infer(ref: dict[str, Tensor]) -> Settings:
    n_flows = count(ref, r"convinv\.(\d+)\.")
    if not n_flows:
        raise KeyError("convinv.0.conv.weight")
    widths = [ref[f"convinv.{k}.conv.weight"].shape[0] for k in range(n_flows)]
    changes = [k for k in range(1, n_flows) if widths[k] != widths[k - 1]]
    return {
        "n_flows": n_flows,
        "n_group": widths[0],
        "n_early_every": changes[0] if changes else 0,
        "n_early_size": widths[changes[0] - 1] - widths[changes[0]] if changes else 0,
        "channels": ref["WN.0.start.weight_v"].shape[0],
        "n_layers": count(ref, r"WN\.0\.in_layers\.(\d+)\."),
        "kernel_size": ref["WN.0.in_layers.0.weight_v"].shape[-1],
        "n_mels": ref["upsample.weight"].shape[0],
        "upsample_kernel": ref["upsample.weight"].shape[-1],
        # Separate res/skip layers exist only in glow_old.py, which alternated the halves.
        "alternate_halves": any(".skip_layers." in key for key in ref),
    }


def _read_config(config: dict[str, Any]) -> Settings:
    model = config.get("waveglow_config", {})
    wn = model.get("WN_config", {})
    data = config.get("data_config", {})
    names = {
        "n_flows": model.get("n_flows"),
        "n_group": model.get("n_group"),
        "n_early_every": model.get("n_early_every"),
        "n_early_size": model.get("n_early_size"),
        "n_mels": model.get("n_mel_channels"),
        "channels": wn.get("n_channels"),
        "n_layers": wn.get("n_layers"),
        "kernel_size": wn.get("kernel_size"),
        "sample_rate": data.get("sampling_rate"),
        "hop_length": data.get("hop_length"),
    }
    return given(names)


def _rules(settings: Settings) -> Iterator[Rule]:
    """Flow ``k`` sits inside the early outputs before it: each one nests the rest one level
    deeper (``...layers.<i>.inner``); a ``glow_old`` odd flow has its half swap first."""
    widths = flow_widths(
        settings["n_flows"],
        settings["n_group"],
        settings["n_early_every"],
        settings["n_early_size"],
    )
    yield from plain("flow.context_encoder.upsample", "upsample")
    step = "flow.transform.layers.1"
    for k, width in enumerate(widths):
        swapped = settings.get("alternate_halves", False) and k % 2
        yield copy(f"{step}.layers.0.weight", f"convinv.{k}.conv.weight", lambda w: w[..., 0])
        est, theirs = f"{step}.layers.{2 if swapped else 1}.conditioner", f"WN.{k}"
        yield from weight_norm(f"{est}.stem", f"{theirs}.start")
        yield from plain(f"{est}.head", f"{theirs}.end")
        yield from weight_norm(f"{est}.net.cond_layer", f"{theirs}.cond_layer")
        for i in range(settings["n_layers"]):
            yield from weight_norm(f"{est}.net.in_layers.{i}", f"{theirs}.in_layers.{i}")
            yield from weight_norm(
                f"{est}.net.res_skip_layers.{i}", f"{theirs}.res_skip_layers.{i}"
            )
        if k + 1 < len(widths):
            early = widths[k + 1] != width
            step = f"{step}.layers.{4 if swapped else 2}" + (".inner" if early else "")


WAVEGLOW = Family(
    kind="waveglow",
    target="sharedflow.models.waveglow",
    recipe="audio/waveglow",
    config_file="NVIDIA/waveglow's config.json",
    infer=_infer,
    read_config=_read_config,
    rules=_rules,
    prepare=_prepare,
    built=r"(^mel\.|_anchor$|indices$)",
)

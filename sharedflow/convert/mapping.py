"""Reference checkpoints into sharedflow models: WaveGlow, WaveFlow / NanoFlow, TarFlow.

Each converter reads the configuration off the reference tensors' shapes (what shapes cannot
tell, like WaveFlow's height, comes from overrides), builds our model and fills it module by
module. Every reference tensor must be used and every parameter of ours filled; otherwise the
conversion stops and names the keys.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from sharedflow.convert.reference import ConversionError
from sharedflow.layers import AffineAutoregressive, AffineCoupling, InvertibleConv1x1, Patchify
from sharedflow.recipes import build
from sharedflow.sharing import StepEmbedding, StepEstimator

__all__ = ["KINDS", "convert_state"]

IGNORED = re.compile(r"(^|\.)(attn_mask|var|h_cache)$")


class _Filler:
    """Copies reference tensors into our parameters and remembers which were used."""

    def __init__(self, ref: dict[str, Tensor]) -> None:
        self.ref, self.used, self.filled = ref, set(), set()

    def tensor(self, target: Tensor, key: str, transform: Any = None) -> None:
        if key not in self.ref:
            raise ConversionError(f"the reference checkpoint lacks {key}")
        value = self.ref[key] if transform is None else transform(self.ref[key])
        if value.numel() != target.numel():
            raise ConversionError(
                f"{key}: shape {tuple(value.shape)} does not fit {tuple(target.shape)}"
            )
        with torch.no_grad():
            target.copy_(value.reshape(target.shape))
        self.used.add(key)
        self.filled.add(id(target))

    def conv(self, module: nn.Module, prefix: str) -> None:
        """A conv, weight-normed (``weight_g``/``weight_v``) or plain, and its bias."""
        if parametrize.is_parametrized(module, "weight"):
            original = module.parametrizations.weight
            self.tensor(original.original0, f"{prefix}.weight_g")
            self.tensor(original.original1, f"{prefix}.weight_v")
        else:
            self.tensor(module.weight, f"{prefix}.weight")
        if module.bias is not None:
            self.tensor(module.bias, f"{prefix}.bias")

    def check(self, model: nn.Module) -> None:
        unused = sorted(k for k in self.ref if k not in self.used and not IGNORED.search(k))
        missing = [n for n, p in model.named_parameters() if id(p) not in self.filled]
        if unused or missing:
            raise ConversionError(
                f"the checkpoint does not match the model: unused {unused[:5]}, "
                f"unfilled {missing[:5]}"
            )


def _count(ref: dict[str, Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in ref if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _estimators(model: nn.Module, kind: type) -> list[StepEstimator]:
    layers = [m for m in model.modules() if isinstance(m, kind)]
    return [
        layer.conditioner if kind is AffineCoupling else layer.conditioner.net for layer in layers
    ]


# -- WaveGlow -------------------------------------------------------------------------------------
def _merge_cond_layers(ref: dict[str, Tensor]) -> dict[str, Tensor]:
    """Pre-2019 layout: eight per-layer ``cond_layers`` become the fused ``cond_layer``."""
    ref = dict(ref)
    for k in range(_count(ref, r"WN\.(\d+)\.cond_layers\.")):
        n = _count(ref, rf"WN\.{k}\.cond_layers\.(\d+)\.")
        for name in ("weight_g", "weight_v", "bias"):
            parts = [ref.pop(f"WN.{k}.cond_layers.{i}.{name}") for i in range(n)]
            ref[f"WN.{k}.cond_layer.{name}"] = torch.cat(parts, 0)
    return ref


def _merge_res_skip_layers(ref: dict[str, Tensor]) -> dict[str, Tensor]:
    """``glow_old.py``'s separate ``res_layers`` and ``skip_layers`` become ``res_skip_layers``.

    Weight norm is per output channel, so the residual rows then the skip rows stack along the
    output axis for ``weight_g``, ``weight_v`` and ``bias`` alike; the last layer is skip only.
    """
    ref = dict(ref)
    for k in range(_count(ref, r"WN\.(\d+)\.skip_layers\.")):
        for i in range(_count(ref, rf"WN\.{k}\.skip_layers\.(\d+)\.")):
            for name in ("weight_g", "weight_v", "bias"):
                res = ref.pop(f"WN.{k}.res_layers.{i}.{name}", None)
                skip = ref.pop(f"WN.{k}.skip_layers.{i}.{name}")
                merged = skip if res is None else torch.cat([res, skip], 0)
                ref[f"WN.{k}.res_skip_layers.{i}.{name}"] = merged
    return ref


def _waveglow(ref: dict[str, Tensor], overrides: dict[str, Any]) -> tuple[dict, Any, dict]:
    # The separate res/skip layers exist only in glow_old.py, which alternated the halves.
    legacy = any(".skip_layers." in key for key in ref)
    ref = _merge_res_skip_layers(_merge_cond_layers(ref))
    n_flows = _count(ref, r"convinv\.(\d+)\.")
    if not n_flows:
        raise KeyError("convinv.0.conv.weight")
    widths = [ref[f"convinv.{k}.conv.weight"].shape[0] for k in range(n_flows)]
    changes = [k for k in range(1, n_flows) if widths[k] != widths[k - 1]]
    config = {
        "_target_": "sharedflow.models.waveglow",
        "n_flows": n_flows,
        "n_group": widths[0],
        "n_early_every": changes[0] if changes else 0,
        "n_early_size": widths[changes[0] - 1] - widths[changes[0]] if changes else 0,
        "channels": ref["WN.0.start.weight_v"].shape[0],
        "n_layers": _count(ref, r"WN\.0\.in_layers\.(\d+)\."),
        "kernel_size": ref["WN.0.in_layers.0.weight_v"].shape[-1],
        "n_mels": ref["upsample.weight"].shape[0],
        "upsample_kernel": ref["upsample.weight"].shape[-1],
        "alternate_halves": legacy,
        **overrides,
    }

    def fill(model: nn.Module, f: _Filler) -> None:
        f.conv(model.flow.context_encoder.upsample, "upsample")
        convs = [m for m in model.modules() if isinstance(m, InvertibleConv1x1)]
        for k, (conv, est) in enumerate(
            zip(convs, _estimators(model, AffineCoupling), strict=True)
        ):
            f.tensor(conv.weight, f"convinv.{k}.conv.weight")
            f.conv(est.stem, f"WN.{k}.start")
            f.conv(est.head, f"WN.{k}.end")
            f.conv(est.net.cond_layer, f"WN.{k}.cond_layer")
            for i, layer in enumerate(est.net.in_layers):
                f.conv(layer, f"WN.{k}.in_layers.{i}")
            for i, layer in enumerate(est.net.res_skip_layers):
                f.conv(layer, f"WN.{k}.res_skip_layers.{i}")

    return config, fill, ref


# -- WaveFlow and NanoFlow ------------------------------------------------------------------------
def _wavenet(f: _Filler, net: nn.Module, prefix: str) -> None:
    f.conv(net.front, f"{prefix}.front_conv.0.conv")
    for layer in range(len(net.convs)):
        block = f"{prefix}.res_blocks.{layer}"
        f.conv(net.convs[layer], f"{block}.filter_gate_conv.conv")
        f.conv(net.context_convs[layer], f"{block}.filter_gate_conv_c")
        f.conv(net.res_skip[layer], f"{block}.res_skip_conv")
        if len(net.embedding_convs):
            f.conv(net.embedding_convs[layer], f"{block}.filter_gate_conv_h")


def _waveflow_layout(
    ref: dict[str, Tensor], parakeet: bool, overrides: dict[str, Any]
) -> tuple[dict, Any]:
    if "flow_embedding.weight" in ref:
        sharing, net_prefix = "nanoflow", "estimator.net"
    elif "estimator.net.front_conv.0.conv.weight_v" in ref:
        sharing, net_prefix = "decomposed", "estimator.net"
    elif "flow.coupling.net.front_conv.0.conv.weight_v" in ref:
        sharing, net_prefix = "shared", "flow.coupling.net"
    else:
        sharing, net_prefix = "independent", "flows.0.coupling.net"
    n_flows = _count(ref, r"flows\.(\d+)\.") or overrides.get("n_flows", 8)
    config = {
        "_target_": "sharedflow.models." + ("waveflow_parakeet" if parakeet else "waveflow"),
        "channels": ref[f"{net_prefix}.front_conv.0.conv.weight_v"].shape[0],
        "n_layers": _count(ref, rf"{re.escape(net_prefix)}\.res_blocks\.(\d+)\."),
        "n_flows": n_flows,
        "n_mels": ref[f"{net_prefix}.res_blocks.0.filter_gate_conv_c.weight_v"].shape[1],
        **(
            {}
            if parakeet
            else {
                "sharing": sharing,
                "embedding_dim": (
                    ref["flow_embedding.weight"].shape[1] if sharing == "nanoflow" else 0
                ),
            }
        ),
        **overrides,
    }

    def fill(model: nn.Module, f: _Filler) -> None:
        for i, layer in enumerate(model.flow.context_encoder.layers):
            f.conv(layer, f"upsample_conv.{2 * i}")
        for k, est in enumerate(_estimators(model, AffineAutoregressive)):
            if sharing == "independent":
                net, head = f"flows.{k}.coupling.net", f"flows.{k}.coupling.proj_log_s_t"
            elif sharing == "shared":
                net, head = "flow.coupling.net", "flow.coupling.proj_log_s_t"
            else:
                net, head = "estimator.net", f"flows.{k}.proj_log_s_t"
            _wavenet(f, est.net, net)
            if parakeet:
                f.conv(est.head, f"{head}.conv")
            else:
                f.tensor(est.head.scale, f"{head}.scale")
                f.conv(est.head.conv, f"{head}.conv")
            if sharing == "nanoflow":
                f.tensor(est.step_params.gate, f"flows.{k}.multgate")
        for table in (m for m in model.modules() if isinstance(m, StepEmbedding)):
            f.tensor(table.weight, "flow_embedding.weight")

    return config, fill, ref


# -- TarFlow --------------------------------------------------------------------------------------
def _tarflow(ref: dict[str, Tensor], overrides: dict[str, Any]) -> tuple[dict, Any, dict]:
    n_tokens, channels = ref["blocks.0.pos_embed"].shape
    n_features = ref["blocks.0.proj_in.weight"].shape[1]
    in_channels = overrides.pop("in_channels", 3)
    patch = math.isqrt(n_features // in_channels)
    affine = ref["blocks.0.proj_out.weight"].shape[0] == 2 * n_features
    config = {
        "_target_": "sharedflow.models.tarflow",
        "image_size": patch * math.isqrt(n_tokens),
        "in_channels": in_channels,
        "patch_size": patch,
        "channels": channels,
        "n_blocks": _count(ref, r"blocks\.(\d+)\."),
        "n_layers": _count(ref, r"blocks\.0\.attn_blocks\.(\d+)\."),
        "num_classes": ref["blocks.0.class_embed"].shape[0]
        if "blocks.0.class_embed" in ref
        else 0,
        "affine": affine,
        **overrides,
    }

    def fill(model: nn.Module, f: _Filler) -> None:
        for k, est in enumerate(_estimators(model, AffineAutoregressive)):
            net, p = est.net, f"blocks.{k}"
            f.conv(net.proj_in, f"{p}.proj_in")
            # Odd blocks read the tokens reversed; the reference reverses its pos_embed for them.
            f.tensor(net.pos_embed, f"{p}.pos_embed", (lambda t: t.flip(0)) if k % 2 else None)
            if net.class_embed is not None:
                f.tensor(net.class_embed, f"{p}.class_embed")
            for i, layer in enumerate(net.layers):
                q = f"{p}.attn_blocks.{i}"
                f.conv(layer.norm1, f"{q}.attention.norm")
                f.conv(layer.attn.qkv, f"{q}.attention.qkv")
                f.conv(layer.attn.proj, f"{q}.attention.proj")
                f.conv(layer.norm2, f"{q}.mlp.norm")
                f.conv(layer.mlp[0], f"{q}.mlp.main.0")
                f.conv(layer.mlp[2], f"{q}.mlp.main.2")
            sign = None if affine else (lambda t: -t)  # their z = x - b, ours z = x + h
            f.tensor(net.proj_out.weight, f"{p}.proj_out.weight", sign)
            f.tensor(net.proj_out.bias, f"{p}.proj_out.bias", sign)
        if not affine and "var" in f.ref:  # the shift-only prior's running variance, (T, D)
            patchify = next(m for m in model.modules() if isinstance(m, Patchify))
            f.tensor(model.flow.base.var, "var", lambda t: patchify.inverse(t[None])[0][0])

    return config, fill, ref


KINDS = {
    "waveglow": ("audio/waveglow", _waveglow),
    "waveflow": ("audio/waveflow-h16-r64", lambda r, o: _waveflow_layout(r, False, o)),
    "nanoflow": ("audio/waveflow-h16-r64", lambda r, o: _waveflow_layout(r, False, o)),
    "waveflow-parakeet": (
        "audio/waveflow-parakeet-h16-r64",
        lambda r, o: _waveflow_layout(r, True, o),
    ),
    "tarflow": ("image/tarflow-imagenet64", _tarflow),
}


def convert_state(
    kind: str, ref: dict[str, Tensor], overrides: dict[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Our model filled from a reference state dict, and the model config used."""
    if kind not in KINDS:
        raise ConversionError(f"unknown kind {kind!r}: {', '.join(KINDS)}")
    try:
        config, fill, ref = KINDS[kind][1](ref, dict(overrides or {}))
    except KeyError as error:
        raise ConversionError(f"not a {kind} checkpoint: it lacks {error}") from error
    model = build(config)
    filler = _Filler(ref)
    fill(model, filler)
    filler.check(model)
    return model.eval(), config

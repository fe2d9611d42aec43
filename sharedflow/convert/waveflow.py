"""L0SG/NanoFlow and L0SG/WaveFlow checkpoints into ``waveflow`` and ``waveflow_parakeet``.

The shapes give the widths, layers, mels, the sharing mode (which keys exist) and, except for
NanoFlow-naive, the number of flows. They do not give the height (rows per column), the height
dilation cycle, NanoFlow-naive's number of flows or the Parakeet layout's permutation: those come
from the repository's ``configs/*.json`` (``--config``) or the command line, and a conversion
without them stops.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from torch import Tensor

from sharedflow.convert.family import Family, Settings, count, given
from sharedflow.convert.reference import ConversionError
from sharedflow.convert.rules import Rule, copy, plain, weight_norm

__all__ = ["NANOFLOW", "WAVEFLOW", "WAVEFLOW_PARAKEET"]

# coupling_type in the reference configs -> our sharing mode (NanoFlow layout).
_SHARING = {
    "waveflow": "independent",
    "nanoflow_naive": "shared",
    "nanoflow_decomp": "decomposed",
    "nanoflow": "nanoflow",
}
# coupling_type -> our permutation (Parakeet layout).
_PERMUTATION = {"waveflow": "flip", "waveflow_bipartize": "bipartize"}


def _sharing(ref: dict[str, Tensor]) -> str:
    if "flow_embedding.weight" in ref:
        return "nanoflow"
    if "estimator.net.front_conv.0.conv.weight_v" in ref:
        return "decomposed"
    if "flow.coupling.net.front_conv.0.conv.weight_v" in ref:
        return "shared"
    return "independent"


def _reference_prefixes(sharing: str, k: int) -> tuple[str, str]:
    """The reference's (network, projection) prefixes of flow ``k``."""
    if sharing == "independent":
        return f"flows.{k}.coupling.net", f"flows.{k}.coupling.proj_log_s_t"
    if sharing == "shared":
        return "flow.coupling.net", "flow.coupling.proj_log_s_t"
    return "estimator.net", f"flows.{k}.proj_log_s_t"


def _infer(ref: dict[str, Tensor], parakeet: bool) -> Settings:
    sharing = "independent" if parakeet else _sharing(ref)
    net, _ = _reference_prefixes(sharing, 0)
    settings: Settings = {
        "channels": ref[f"{net}.front_conv.0.conv.weight_v"].shape[0],
        "n_layers": count(ref, re.escape(net) + r"\.res_blocks\.(\d+)\."),
        "n_mels": ref[f"{net}.res_blocks.0.filter_gate_conv_c.weight_v"].shape[1],
    }
    if not parakeet:
        settings["sharing"] = sharing
        embedding = ref.get("flow_embedding.weight")
        settings["embedding_dim"] = embedding.shape[1] if embedding is not None else 0
    if n_flows := count(ref, r"flows\.(\d+)\."):
        settings["n_flows"] = n_flows
    return settings


def _read_config(config: dict[str, Any], parakeet: bool) -> Settings:
    model = config.get("waveflow_config", {})
    data = config.get("data_config", {})
    names = {
        "n_mels": model.get("cin_channels"),
        "channels": model.get("res_channels"),
        "height": model.get("n_height"),
        "n_layers": model.get("n_layer"),
        "n_flows": model.get("n_flow"),
        "dilation_cycle": model.get("n_layer_per_cycle"),
        "sample_rate": data.get("sampling_rate"),
        "hop_length": data.get("hop_length"),
    }
    coupling = model.get("coupling_type")
    if coupling is not None:
        table = _PERMUTATION if parakeet else _SHARING
        if coupling not in table:
            raise ConversionError(
                f"coupling_type {coupling!r} is not one of this layout's: {', '.join(table)}"
            )
        names["permutation" if parakeet else "sharing"] = table[coupling]
    if not parakeet and coupling == "nanoflow":
        names["embedding_dim"] = model.get("size_flow_embed")
    return given(names)


def _needs(settings: Settings, parakeet: bool) -> dict[str, str]:
    needs = {
        "height": "the rows each column folds, n_height",
        "dilation_cycle": "the height dilation cycle, n_layer_per_cycle",
    }
    if "n_flows" not in settings:  # NanoFlow-naive's flows share every key
        needs["n_flows"] = "the number of flows, n_flow"
    if parakeet:
        needs["permutation"] = "flip or bipartize, from coupling_type"
    return needs


def _wavenet(ours: str, theirs: str, n_layers: int, embedding: bool) -> Iterator[Rule]:
    yield from weight_norm(f"{ours}.front", f"{theirs}.front_conv.0.conv")
    for i in range(n_layers):
        block = f"{theirs}.res_blocks.{i}"
        yield from weight_norm(f"{ours}.convs.{i}", f"{block}.filter_gate_conv.conv")
        yield from weight_norm(f"{ours}.context_convs.{i}", f"{block}.filter_gate_conv_c")
        yield from weight_norm(f"{ours}.res_skip.{i}", f"{block}.res_skip_conv")
        if embedding:
            yield from weight_norm(
                f"{ours}.embedding_convs.{i}", f"{block}.filter_gate_conv_h", reshape=True
            )


def _rules(settings: Settings, parakeet: bool) -> Iterator[Rule]:
    """Flow ``k``'s estimator is ``flow.transform.layers.<i>.conditioner.net`` with ``i = 2k + 2``
    (permutation first, NanoFlow layout) or ``2k + 1`` (Parakeet layout). A shared body (and
    NanoFlow-naive's shared projection) is filled once, under flow 0."""
    sharing = settings.get("sharing", "independent")
    for i in range(2):
        yield from weight_norm(f"flow.context_encoder.layers.{i}", f"upsample_conv.{2 * i}")
    for k in range(settings["n_flows"]):
        ours = f"flow.transform.layers.{2 * k + (1 if parakeet else 2)}.conditioner.net"
        net, head = _reference_prefixes(sharing, k)
        if k == 0 or sharing == "independent":
            yield from _wavenet(f"{ours}.net", net, settings["n_layers"], sharing == "nanoflow")
        if k == 0 or sharing != "shared":
            if parakeet:
                yield from plain(f"{ours}.head", f"{head}.conv")
            else:
                yield copy(f"{ours}.head.scale", f"{head}.scale", reshape=True)
                yield from plain(f"{ours}.head.conv", f"{head}.conv")
        if sharing == "nanoflow":
            yield copy(f"{ours}.step_params.gate", f"flows.{k}.multgate", reshape=True)
    if sharing == "nanoflow":
        yield copy("flow.transform.layers.2.conditioner.net.table.weight", "flow_embedding.weight")


def _family(kind: str, parakeet: bool) -> Family:
    return Family(
        kind=kind,
        target="sharedflow.models." + ("waveflow_parakeet" if parakeet else "waveflow"),
        recipe="audio/waveflow-parakeet-h16-r64" if parakeet else "audio/waveflow-h16-r64",
        config_file=(
            "L0SG/WaveFlow's configs/*.json" if parakeet else "L0SG/NanoFlow's configs/*.json"
        ),
        infer=lambda ref: _infer(ref, parakeet),
        read_config=lambda config: _read_config(config, parakeet),
        rules=lambda settings: _rules(settings, parakeet),
        needs=lambda settings: _needs(settings, parakeet),
        built=r"(^mel\.|_anchor$|indices$)",
    )


WAVEFLOW = _family("waveflow", parakeet=False)
NANOFLOW = _family("nanoflow", parakeet=False)
WAVEFLOW_PARAKEET = _family("waveflow-parakeet", parakeet=True)

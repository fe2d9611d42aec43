"""NanoFlow (Lee et al., NeurIPS 2020): how the K density estimators of K flow steps are built.

Four modes, each a ``Sharing`` object whose ``build`` makes the estimators, for any model:

- ``Independent()``: K separate networks (WaveGlow, WaveFlow, TarFlow, Glow as published);
- ``Shared()``: one network, head included, reused by every step (NanoFlow-naive);
- ``Decomposed()``: one shared body with a separate head (output projection) per step;
- ``NanoFlow(embedding_dim)``: decomposed, plus a learned flow-indication embedding ``e_k`` per
  step that the shared body reads through ``step_bias(e_k)`` (WaveFlow: a per-layer 1x1 conv
  added to each gate pre-activation; Glow: concatenated to the input), and per-step parameters
  such as gates.

Models ask a mode what they need to know (``shared_body``, ``own_heads``) instead of testing its
name; a fifth mode is one more subclass (and, for recipes, one YAML in ``recipes/sharing/`` and
a ``BUILDERS.register``). The names (``"nanoflow"``, ...) remain accepted wherever a mode is,
for the configs of older checkpoints and conversions.

Sharing is object sharing: the steps hold the same module, so its gradients accumulate and its
parameters are counted once. A body that supports the ``nanoflow`` mode implements
``StepConditioned``. In the deploy form each step's ``step_bias(e_k)`` is computed once and
stored, and the embedding table and the body's embedding path are dropped.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from sharedflow.core.bijection import Context

__all__ = [
    "Decomposed",
    "HasDeployForm",
    "Independent",
    "NanoFlow",
    "ParameterCount",
    "Shared",
    "Sharing",
    "SharingMode",
    "StepConditioned",
    "StepEmbedding",
    "StepEstimator",
    "StepInput",
    "as_sharing",
    "build_estimators",
    "count_parameters",
    "deploy",
]

SharingMode = Literal["independent", "shared", "decomposed", "nanoflow"]
SHARING_MODES: tuple[str, ...] = ("independent", "shared", "decomposed", "nanoflow")


@dataclass
class StepInput:
    """What a shared body reads about the step it serves.

    Attributes:
        bias: the body's view of the step embedding, ``step_bias(e_k)`` (shape chosen by the body).
        params: the step's own parameters (gates), a module made by ``make_step_params``.
    """

    bias: Tensor
    params: nn.Module


@runtime_checkable
class StepConditioned(Protocol):
    """A body that can serve several steps, told apart by a step embedding."""

    embedding_shape: tuple[int, ...]

    def init_embedding(self, weight: Tensor) -> None:
        """Initialise the ``(K, *embedding_shape)`` table in place."""

    def make_step_params(self) -> nn.Module:
        """The parameters each step owns (e.g. per-layer gates)."""

    def step_bias(self, embedding: Tensor, params: nn.Module) -> Tensor:
        """The foldable part: a function of the step's embedding and own parameters only."""

    def drop_embedding_path(self) -> None:
        """Delete the modules only ``step_bias`` uses (deploy form)."""


class StepEmbedding(nn.Module):
    """The flow-indication embedding table ``(K, *shape)``, one row per step."""

    def __init__(self, n_steps: int, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_steps, *shape))


class StepEstimator(nn.Module):
    """The estimator of one step: ``head(net(stem(x), context, step))``, parts possibly shared.

    Callable like any conditioner, ``(x, context) -> h``. When the net is a causal net it also
    offers ``init_cache`` and ``step`` for sequential inverses.
    """

    def __init__(
        self,
        net: nn.Module,
        head: nn.Module | None = None,
        table: StepEmbedding | None = None,
        index: int = 0,
        step_params: nn.Module | None = None,
        stem: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.net = net
        self.head = head
        self.table = table
        self.index = index
        self.step_params = step_params
        self.register_parameter("folded_bias", None)

    @property
    def dim(self) -> int:
        return self.net.dim

    @property
    def position_tensor(self) -> bool:
        return getattr(self.net, "position_tensor", False)

    def step_input(self) -> StepInput | None:
        if self.step_params is None:
            return None
        if self.folded_bias is not None:
            return StepInput(self.folded_bias, self.step_params)
        embedding = self.table.weight[self.index]
        return StepInput(self.net.step_bias(embedding, self.step_params), self.step_params)

    def _stem(self, x: Tensor) -> Tensor:
        return x if self.stem is None else self.stem(x)

    def _head(self, h: Tensor) -> Tensor:
        return h if self.head is None else self.head(h)

    def forward(self, x: Tensor, context: Context = None) -> Tensor:
        return self._head(self.net(self._stem(x), context, self.step_input()))

    def init_cache(self, x: Tensor, context: Context) -> Any:
        return self.net.init_cache(self._stem(x), context, self.step_input())

    def step(self, cache: Any, x_i: Tensor, i: int | Tensor) -> Tensor:
        return self._head(self.net.step(cache, self._stem(x_i), i))

    def scan_init(self, cache: Any) -> tuple[list[Tensor], list[Tensor]] | None:
        return self.net.scan_init(cache)

    def scan_step(
        self, cache: Any, state: list[Tensor], inputs: list[Tensor], x_i: Tensor
    ) -> tuple[Tensor, list[Tensor]]:
        h, state = self.net.scan_step(cache, state, inputs, self._stem(x_i))
        return self._head(h), state

    @torch.no_grad()
    def to_deploy_form(self) -> None:
        """Store ``step_bias(e_k)`` and forget the embedding table (deploy form)."""
        if self.table is None:
            return
        bias = self.net.step_bias(self.table.weight[self.index], self.step_params)
        self.folded_bias = nn.Parameter(bias.detach().clone())
        self.table = None


MakeNet = Callable[[int], nn.Module]
MakePart = Callable[[int], nn.Module] | None


@dataclass(frozen=True)
class Sharing:
    """How the density estimators of K flow steps are built; the modes are its subclasses.

    ``build(n_steps, make_net, make_head, make_stem)``:

    - ``make_net``: ``embedding_dim -> body``, called once per body;
    - ``make_head``: ``k -> head`` mapping the body's features to step ``k``'s parameters, or
      ``None`` when the body produces them itself;
    - ``make_stem``: ``k -> stem``, an input projection for step ``k``, for models whose steps
      see different widths (WaveGlow after its early outputs).

    Capabilities that models read: ``shared_body`` (one body serves every step) and
    ``own_heads`` (each step has a head, and stem, of its own).
    """

    name: ClassVar[str] = "independent"
    shared_body: ClassVar[bool] = False
    own_heads: ClassVar[bool] = True
    embedding_dim: ClassVar[int] = 0  # the flow-indication embedding's size (0: none)

    def build(
        self,
        n_steps: int,
        make_net: MakeNet,
        make_head: MakePart = None,
        make_stem: MakePart = None,
    ) -> list[StepEstimator]:
        """Independent: ``K (body + head)`` parameters."""
        return [
            StepEstimator(make_net(0), _part(make_head, k), stem=_part(make_stem, k))
            for k in range(n_steps)
        ]

    def __str__(self) -> str:
        return self.name


def _part(make: MakePart, k: int) -> nn.Module | None:
    return None if make is None else make(k)


class Independent(Sharing):
    """K separate networks, as every published model but NanoFlow's is built."""


@dataclass(frozen=True)
class Shared(Sharing):
    """One network, head and stem included, for every step (NanoFlow-naive): ``body + head``."""

    name: ClassVar[str] = "shared"
    shared_body: ClassVar[bool] = True
    own_heads: ClassVar[bool] = False

    def build(
        self,
        n_steps: int,
        make_net: MakeNet,
        make_head: MakePart = None,
        make_stem: MakePart = None,
    ) -> list[StepEstimator]:
        net, head, stem = make_net(0), _part(make_head, 0), _part(make_stem, 0)
        return [StepEstimator(net, head, stem=stem) for _ in range(n_steps)]


@dataclass(frozen=True)
class Decomposed(Sharing):
    """One shared body, a head and stem per step: ``body + K head``."""

    name: ClassVar[str] = "decomposed"
    shared_body: ClassVar[bool] = True

    def build(
        self,
        n_steps: int,
        make_net: MakeNet,
        make_head: MakePart = None,
        make_stem: MakePart = None,
    ) -> list[StepEstimator]:
        net = make_net(0)
        return [
            StepEstimator(net, _part(make_head, k), stem=_part(make_stem, k))
            for k in range(n_steps)
        ]


@dataclass(frozen=True)
class NanoFlow(Decomposed):
    """Decomposed, with a flow-indication embedding of ``embedding_dim`` per step that the body
    reads (it must be ``StepConditioned``): ``body(emb) + K (head + step_params) + table``."""

    name: ClassVar[str] = "nanoflow"
    embedding_dim: int  # type: ignore[misc]

    def __post_init__(self) -> None:
        if self.embedding_dim <= 0:
            raise ValueError("the nanoflow mode needs embedding_dim > 0")

    def build(
        self,
        n_steps: int,
        make_net: MakeNet,
        make_head: MakePart = None,
        make_stem: MakePart = None,
    ) -> list[StepEstimator]:
        net = make_net(self.embedding_dim)
        if not isinstance(net, StepConditioned):
            raise TypeError(f"{type(net).__name__} cannot read a step embedding")
        table = StepEmbedding(n_steps, net.embedding_shape)
        net.init_embedding(table.weight.data)
        return [
            StepEstimator(
                net, _part(make_head, k), table, k, net.make_step_params(), _part(make_stem, k)
            )
            for k in range(n_steps)
        ]


MODES: dict[str, type[Sharing]] = {
    mode.name: mode for mode in (Independent, Shared, Decomposed, NanoFlow)
}


def as_sharing(mode: Sharing | str | Mapping[str, Any], embedding_dim: int = 0) -> Sharing:
    """A ``Sharing`` from a mode, its name (with ``embedding_dim`` for ``nanoflow``), or a
    recipe's node (``{"_target_": "sharedflow.sharing.NanoFlow", "embedding_dim": 16}``)."""
    if isinstance(mode, Sharing):
        if embedding_dim and embedding_dim != mode.embedding_dim:
            raise ValueError(
                f"embedding_dim={embedding_dim} given beside the mode {mode!r}; set it on the mode"
            )
        return mode
    if isinstance(mode, Mapping):
        target = str(mode.get("_target_", "")).rsplit(".", 1)[-1]
        by_class = {cls.__name__: name for name, cls in MODES.items()}
        if target not in by_class:
            raise ValueError(f"unknown sharing mode {mode.get('_target_')!r}")
        return as_sharing(by_class[target], int(mode.get("embedding_dim", 0)))
    if mode not in MODES:
        raise ValueError(f"unknown sharing mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "nanoflow":
        return NanoFlow(embedding_dim)
    return MODES[mode]()


def build_estimators(
    n_steps: int,
    make_net: MakeNet,
    make_head: MakePart = None,
    mode: Sharing | SharingMode = "independent",
    embedding_dim: int = 0,
    make_stem: MakePart = None,
) -> list[StepEstimator]:
    """The estimators of ``n_steps`` steps, built by the sharing ``mode`` (see ``Sharing``;
    a name takes ``embedding_dim`` for ``nanoflow``)."""
    return as_sharing(mode, embedding_dim).build(n_steps, make_net, make_head, make_stem)


@dataclass(frozen=True)
class ParameterCount:
    """Where a model's parameters are; ``total = shared + sum(per_step) + embedding + other``.

    Attributes:
        total: unique parameters.
        shared: in estimator parts that more than one step uses.
        per_step: per step, in estimator parts that step alone uses (heads, gates).
        embedding: flow-indication embedding tables.
        other: everything outside the estimators (1x1 convs, ActNorm, context encoders, priors).
    """

    total: int
    shared: int
    per_step: tuple[int, ...] = field(default=())
    embedding: int = 0
    other: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "shared": self.shared,
            "per_step": list(self.per_step),
            "embedding": self.embedding,
            "other": self.other,
        }


def count_parameters(model: nn.Module) -> ParameterCount:
    """Count the unique parameters of ``model`` by where they sit (see ``ParameterCount``)."""
    estimators = [m for m in model.modules() if isinstance(m, StepEstimator)]
    users: dict[int, set[int]] = {}
    for k, est in enumerate(estimators):
        for p in est.parameters():
            users.setdefault(id(p), set()).add(k)
    tables = {
        id(p) for m in model.modules() if isinstance(m, StepEmbedding) for p in m.parameters()
    }
    per_step = [0] * len(estimators)
    shared = embedding = other = total = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        steps = users.get(id(p), set())
        if id(p) in tables:
            embedding += n
        elif len(steps) > 1:
            shared += n
        elif len(steps) == 1:
            per_step[next(iter(steps))] += n
        else:
            other += n
    return ParameterCount(total, shared, tuple(per_step), embedding, other)


def remove_weight_norm(model: nn.Module) -> nn.Module:
    """Replace every weight-norm parametrisation by its plain weight, in place.

    Runs with autograd on: under ``no_grad`` torch would keep the weight as a buffer.
    """
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            # A deep copy shares torch's generated Parametrized* class with its original, and
            # removal deletes the property from that class: give this module a class of its own.
            cls = type(module)
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model


@runtime_checkable
class HasDeployForm(Protocol):
    """A layer with a synthesis form that ``deploy`` switches it to: a step estimator's folded
    embedding, a 1x1 convolution's stored inverse."""

    def to_deploy_form(self) -> None:
        """Switch to the deploy form, in place."""


def deploy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in synthesis form: weight norm removed, step embeddings folded, and
    every ``HasDeployForm`` layer in its deploy form."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, HasDeployForm):  # step estimators fold their embeddings
            module.to_deploy_form()
    for module in model.modules():
        if isinstance(module, StepConditioned) and not isinstance(module, StepEstimator):
            module.drop_embedding_path()
    remove_weight_norm(model)
    return model

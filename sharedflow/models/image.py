"""``ImageFlow``: a flow over images, with dequantisation, bits per dim and sampling.

Images arrive as uint8 ``(B, C, H, W)``. Training dequantises them to a continuous range of
width ``R`` (TarFlow: ``[-1, 1]``, ``R = 2``; Glow: ``[-0.5, 0.5)``, ``R = 1``), with uniform
noise ``(u + U[0, 1)) / 256`` or TarFlow's Gaussian noise augmentation ``u / 255 + N(0, s^2)``.
Evaluation always uses uniform dequantisation in float32, the reference protocol, and reports
``bpd = -(log p(x) + D log(R / 256)) / (D ln 2)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from sharedflow.core.flow import NormalizingFlow
from sharedflow.core.metrics import METRICS, Metric, bits_per_dim
from sharedflow.core.task import median_seconds
from sharedflow.layers.solve import jacobi_inverse

__all__ = ["ImageFlow", "Jacobi", "Samples", "Sampling"]


@dataclass(frozen=True)
class Sampling:
    """How a model draws samples unless told otherwise (the recipe's ``model.sampling``).

    - ``temperature``: ``T`` of the base, ``z ~ N(0, T^2 I)``;
    - ``denoise``: one score step after sampling (for models trained with Gaussian noise);
    - ``guidance``: classifier-free guidance weight ``w`` (TarFlow only).
    """

    temperature: float = 1.0
    denoise: bool = False
    guidance: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"sampling temperature must be finite and >= 0: {self.temperature}")

    def describe(self) -> str:
        """E.g. ``T 0.7, guidance 2, denoised``."""
        parts = [f"T {self.temperature:g}"]
        if self.guidance:
            parts.append(f"guidance {self.guidance:g}")
        if self.denoise:
            parts.append("denoised")
        return ", ".join(parts)


@dataclass
class Jacobi:
    """Parallel inverse settings: stop below ``tol``; ``chunk`` tokens per Gauss-Seidel block."""

    tol: float = 1e-4
    max_iters: int | None = None
    chunk: int | None = None


@dataclass
class Samples:
    """uint8 images ``(n, C, H, W)`` and, for the Jacobi solver, iterations per layer and chunk."""

    images: Tensor
    iterations: list[list[int]] | None = None


class ImageFlow(nn.Module):
    """An image flow (see the module docstring); a ``core.task.Task``.

    Args:
        flow: a ``NormalizingFlow`` over ``(B, C, H, W)`` whose context is the labels.
        image_shape: ``(C, H, W)``.
        num_classes: 0 for an unconditional model.
        data_range: ``R``, the width of the continuous range (centred on 0).
        noise: ``uniform`` dequantisation or ``gaussian`` noise augmentation for training.
        noise_std: ``s`` of the Gaussian noise, in units of the range ``[-1, 1]``.
        label_drop: probability of replacing a training label by -1 (the null class, for
            classifier-free guidance).
        sampling: how ``generate`` draws by default (a ``Sampling`` or its fields).
    """

    modality = "image"
    metric = METRICS["bpd"]
    quality_metrics: tuple[Metric, ...] = (METRICS["shape_acc"],)
    eval_batch_size = 64

    def __init__(
        self,
        flow: NormalizingFlow,
        image_shape: tuple[int, int, int],
        num_classes: int = 0,
        data_range: float = 2.0,
        noise: Literal["uniform", "gaussian"] = "uniform",
        noise_std: float = 0.05,
        label_drop: float = 0.0,
        sampling: Sampling | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.flow = flow
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.data_range = data_range
        self.noise = noise
        self.noise_std = noise_std
        self.label_drop = label_drop
        if not isinstance(sampling, Sampling):
            sampling = Sampling(**dict(sampling or {}))
        self.sampling = sampling
        if sampling.guidance:
            self.sampling_context(None, guidance=sampling.guidance)  # refused without guidance

    @property
    def n_dims(self) -> int:
        return math.prod(self.image_shape)

    def check_images(self, images: Tensor) -> None:
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"expected images of shape {self.image_shape}, got {tuple(images.shape[1:])}"
            )

    def check_labels(self, labels: Tensor | None) -> None:
        if labels is None:
            return
        if self.num_classes == 0:
            raise ValueError("this model is unconditional: it takes no labels")
        if labels.numel() and (labels.max() >= self.num_classes or labels.min() < -1):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1} (or -1 for none)")

    def dequantise(self, images: Tensor, noise: str) -> Tensor:
        """uint8 ``(B, C, H, W)`` to floats in ``[-R/2, R/2)`` (plus Gaussian noise)."""
        r = self.data_range
        u = images.to(next(self.parameters()).dtype)
        if noise == "uniform":
            return (u + torch.rand_like(u)) / 256 * r - r / 2
        return u / 255 * r - r / 2 + self.noise_std * r / 2 * torch.randn_like(u)

    def _labels(self, labels: Tensor | None) -> Tensor | None:
        return labels if self.num_classes else None

    def log_prob(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        labels = self._labels(labels)
        if not torch.compiler.is_exporting():  # data-dependent: exported graphs' gather checks
            self.check_labels(labels)
        return self.flow.log_prob(x, labels)

    def forward(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Training loss: mean NLL in nats per dimension of the dequantised batch."""
        images, labels = batch
        self.check_images(images)
        labels = self._labels(labels)
        self.check_labels(labels)
        if labels is not None and self.label_drop > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.label_drop
            labels = torch.where(drop, torch.full_like(labels, -1), labels)
        x = self.dequantise(images, self.noise)
        return -self.flow.log_prob(x, labels).mean() / self.n_dims

    def evaluate_batch(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        """Bits per dim with uniform dequantisation, unconditional (TarFlow's evaluate_bpd)."""
        images, _ = batch
        self.check_images(images)
        x = self.dequantise(images, "uniform")
        log_prob = self.flow.log_prob(x, None)
        return {"bpd": bits_per_dim(log_prob, self.n_dims, 8, self.data_range)}

    def to_uint8(self, x: Tensor) -> Tensor:
        r = self.data_range
        return ((x + r / 2) / r * 256).floor().clamp(0, 255).to(torch.uint8)

    def denoise(
        self, x: Tensor, labels: Tensor | None = None, sigma: float | None = None
    ) -> Tensor:
        """One score step ``x + sigma^2 grad_x log p(x)`` (Tweedie), for noise-trained models."""
        sigma = self.noise_std * self.data_range / 2 if sigma is None else sigma
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_prob(x, labels).sum(), x)
        return (x + sigma**2 * grad).detach()

    def sampling_context(self, labels: Tensor | None, **options: Any) -> Any:
        """The context sampling passes to the flow: the labels. A model with sampling options
        of its own (TarFlow's guidance) overrides this; here every option is refused."""
        if options:
            raise ValueError(
                f"{', '.join(f'{k}={v}' for k, v in options.items())}: this model has no "
                "Transformer estimator to guide (guidance is for TarFlow)"
            )
        return labels

    @torch.no_grad()
    def generate(
        self,
        n: int,
        labels: Tensor | None = None,
        temperature: float | None = None,
        denoise: bool | None = None,
        jacobi: Jacobi | None = None,
        max_tries: int = 5,
        **options: Any,
    ) -> Samples:
        """Draw ``n`` images; rows that come out non-finite are drawn again.

        ``temperature``, ``denoise`` and the guidance weight default to ``self.sampling``.

        Args:
            labels: ``(n,)`` classes of a conditional model (None: the unconditional branch).
            denoise: one score step ``x + sigma^2 grad log p(x)`` (noise-trained models).
            jacobi: invert the autoregressive layers by parallel iteration instead of the
                sequential KV-cached inverse.
            options: the model's own sampling options (``sampling_context``; TarFlow's
                guidance).
        """
        from sharedflow.layers.autoregressive import AffineAutoregressive

        self.check_labels(labels)
        temperature = self.sampling.temperature if temperature is None else temperature
        denoise = self.sampling.denoise if denoise is None else denoise
        if self.sampling.guidance and "guidance" not in options:
            options["guidance"] = self.sampling.guidance
        if jacobi is not None and not any(
            isinstance(m, AffineAutoregressive) for m in self.modules()
        ):
            raise ValueError(
                "jacobi: this model has no autoregressive layer to invert in parallel"
            )
        self.sampling_context(labels, **options)  # a refused option costs no sampling
        device = next(self.parameters()).device
        labels = None if labels is None else labels.to(device)

        def draw(rows: Tensor | None) -> tuple[Tensor, list[list[int]] | None]:
            sub = labels if rows is None or labels is None else labels[rows]
            count = n if rows is None else int(rows.sum())
            context = self.sampling_context(sub, **options)
            if jacobi is None:
                return self.flow.sample((count, *self.image_shape), context, temperature), None
            z = self.flow.base.sample((count, *self.image_shape), temperature)
            return jacobi_inverse(
                self.flow.transform, z, context, jacobi.tol, jacobi.max_iters, jacobi.chunk
            )

        x, iterations = draw(None)
        for _ in range(max_tries):
            bad = ~torch.isfinite(x.flatten(1)).all(1)
            if not bad.any():
                break
            x[bad] = draw(bad)[0]
        if denoise:
            x = self.denoise(x, labels)
        return Samples(self.to_uint8(torch.nan_to_num(x)), iterations)

    def sample(self, n: int, labels: Tensor | None = None, **options: object) -> Tensor:
        """``n`` uint8 images ``(n, C, H, W)``; options as ``generate``."""
        return self.generate(n, labels, **options).images

    def quality(
        self, items: Any, temperature: float | None = None, max_items: int | None = None
    ) -> dict[str, float]:
        """``shape_acc`` for a class-conditional model of the built-in shapes: the fraction of
        its samples that a shape classifier puts in the class asked for
        (``data.shape_classifier``). Other models have no figure here; FID needs an Inception
        network (``evaluate --fid``)."""
        from sharedflow.data.shape_classifier import judges, shape_accuracy

        if not self.num_classes or not judges(items):
            return {}
        return {"shape_acc": shape_accuracy(self, temperature=temperature)}

    def quality_floor(self, items: Any, max_items: int | None = None) -> dict[str, float]:
        return {}

    def generation_gemm(self, size: int) -> tuple[int, int, int] | None:
        """None: sampling's precision is probed on ``sharedflow.precision.ROW_GEMM``."""
        return None

    def showcase(self, items: Any, n: int = 16) -> tuple[Tensor, Tensor | None]:
        """Held-out images to show beside samples, and the labels to sample with.

        Unconditional: the first ``n`` images, no labels. Conditional: up to ``ceil(sqrt(n))``
        rows of up to ``ceil(sqrt(n))`` images of one class each, for the first classes met
        in the first ``64 n`` items, and the labels that ask for each cell's class."""
        cols = math.ceil(math.sqrt(n))
        if not self.num_classes:
            return torch.stack([items[i][0] for i in range(min(n, len(items)))]), None
        rows: dict[int, list[Tensor]] = {}
        for i in range(min(len(items), 64 * n)):
            image, label = items[i]
            if int(label) in rows or len(rows) < math.ceil(n / cols):
                row = rows.setdefault(int(label), [])
                if len(row) < cols:
                    row.append(image)
            if len(rows) * cols >= n and all(len(row) == cols for row in rows.values()):
                break
        real = torch.stack([x for row in rows.values() for x in row])
        return real, torch.tensor([c for c, row in rows.items() for _ in row])

    def write_samples(
        self, out_dir: Path, stem: str, items: Any, temperature: float | None = None
    ) -> list[Path]:
        """``<stem>.png``: 16 held-out images beside 16 samples (``showcase``), drawn with seed
        0 as the model's ``sampling`` says; ``temperature`` overrides its temperature."""
        from sharedflow.data.images import save_panels

        real, labels = self.showcase(items)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            samples = self.sample(len(real), labels, temperature=temperature)
        t = self.sampling.temperature if temperature is None else temperature
        how = Sampling(t, self.sampling.denoise, self.sampling.guidance).describe()
        panels = [("held out", real), (f"{stem}\n{how}", samples)]
        return [save_panels(panels, out_dir / f"{stem}.png", math.ceil(math.sqrt(len(real))))]

    @torch.no_grad()
    def speed(self, items: Any) -> tuple[float, str]:
        """Sampling speed in images per second for a batch of 8; the median of three timed
        runs after a warm-up."""
        labels = torch.arange(8) % self.num_classes if self.num_classes else None
        return 8 / median_seconds(lambda: self.sample(8, labels)), "images/s"

"""A judge of the built-in shapes: does a sample drawn for a class show that class's shape?

``shape_accuracy(model)``: of the samples a class-conditional model draws for each
class, the fraction that ``ShapeClassifier`` puts in that class. Real shapes score 1.0, shapes
of random classes 0.25, and backgrounds with no shape 0: besides the four shapes the
classifier has a fifth answer, no shape, so that an empty sample is not read as some class.
It is a three-layer CNN trained once per image size and channel count on built-in shapes and
bare backgrounds drawn with a seed of their own (never a run's training or held-out data),
half of them blurred and all with some Gaussian noise, so that the soft edges and grain of
samples do not decide its answer. It is cached under ``cache_dir()`` as safetensors.

It applies to held-out items whose class names are the built-in shapes' (``judges``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import Subset

from sharedflow.data.builtin import SHAPES, cache_dir, draw_shape, shapes_dataset
from sharedflow.data.images import ImageFolder
from sharedflow.threads import intra_op_threads

__all__ = [
    "CLASSES",
    "NO_SHAPE",
    "ShapeClassifier",
    "judges",
    "shape_accuracy",
    "shape_classifier",
]

CLASSES = sorted(SHAPES)  # the class indices of a class-per-folder tree of the shapes
NO_SHAPE = len(CLASSES)  # the classifier's fifth answer: a background with no shape
SEED = 1234  # the classifier's own shapes
VERSION = 3  # 3: trained with one thread, so that every machine trains the same judge


class ShapeClassifier(nn.Module):
    """uint8 images ``(B, C, H, W)`` to logits ``(B, 5)``: ``CLASSES``, then ``NO_SHAPE``."""

    def __init__(self, channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, len(CLASSES) + 1),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images.float() / 127.5 - 1)


def _augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """A random mix of each image ``(B, C, H, W)`` in [-1, 1] with its 3x3 binomial blur, plus
    Gaussian noise of a random standard deviation up to 0.15."""
    b, c = x.shape[:2]
    k = torch.tensor([1.0, 2.0, 1.0])
    kernel = (k[:, None] * k[None] / 16).expand(c, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
    mix = torch.rand(b, 1, 1, 1, generator=generator)
    noise = 0.15 * torch.rand(b, 1, 1, 1, generator=generator)
    return mix * blurred + (1 - mix) * x + noise * torch.randn(x.shape, generator=generator)


def shape_classifier(size: int, channels: int = 3, steps: int = 1500) -> ShapeClassifier:
    """The classifier for ``size x size`` shapes, trained on first use (with one thread, the
    same on every machine with the same kernels) and cached."""
    path = cache_dir() / f"shape-classifier-v{VERSION}-{size}-{channels}-{steps}.safetensors"
    model = ShapeClassifier(channels)
    if path.is_file():
        model.load_state_dict(load_file(path))
        return model.eval()
    folder = ImageFolder(shapes_dataset(cache_dir() / f"shapes-judge-{size}", 512, size, SEED),
                         size, channels)  # fmt: skip
    pairs = [folder[i] for i in range(len(folder))]  # each image read once
    pairs += [(x, NO_SHAPE) for x in _backgrounds(512, size, channels)]
    images = torch.stack([x for x, _ in pairs]).float() / 127.5 - 1
    labels = torch.tensor([y for _, y in pairs])
    generator = torch.Generator().manual_seed(SEED)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = ShapeClassifier(channels)
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    # One thread: the rounding of a product depends on the thread count, and 1500 steps of
    # training amplify it into another judge (up to 0.4 apart in a weight with 1 and 2 threads).
    with intra_op_threads(1), torch.enable_grad():
        for _ in range(steps):
            batch = torch.randint(0, len(images), (64,), generator=generator)
            logits = model.net(_augment(images[batch], generator))
            loss = F.cross_entropy(logits, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # processes training it at once
    save_file(model.state_dict(), str(tmp))
    tmp.replace(path)
    return model.eval()


def _backgrounds(n: int, size: int, channels: int) -> Tensor:
    """``n`` uint8 backgrounds with no shape, ``(n, C, size, size)``, from a seed of their own."""
    from PIL import Image

    rng = np.random.default_rng(SEED + 1)
    mode = "RGB" if channels == 3 else "L"
    images = [Image.fromarray(draw_shape(rng, None, size)).convert(mode) for _ in range(n)]
    return torch.from_numpy(np.stack(images)).reshape(n, size, size, channels).permute(0, 3, 1, 2)


def judges(items: Any) -> bool:
    """Whether ``items`` (a class-per-folder tree, or a ``Subset`` of one) are labelled by the
    built-in shapes' class names."""
    while isinstance(items, Subset):
        items = items.dataset
    return list(getattr(items, "classes", ())) == CLASSES


@torch.no_grad()
def shape_accuracy(
    model: Any,
    per_class: int = 32,
    temperature: float | None = None,
    judge: ShapeClassifier | None = None,
) -> float:
    """The fraction of ``per_class`` samples per class (``model.sample``, with seed 0, as the
    model's ``sampling`` says) that ``judge`` (default: ``shape_classifier``) puts in the class
    they were drawn for; a sample judged to hold no shape counts as wrong."""
    channels, size, _ = model.image_shape
    judge = judge or shape_classifier(size, channels)
    labels = torch.arange(len(CLASSES)).repeat_interleave(per_class)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        samples = model.sample(len(labels), labels, temperature=temperature)
    return (judge(samples).argmax(1) == labels).float().mean().item()

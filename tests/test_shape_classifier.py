"""The built-in shapes' judge: real shapes score 1, random classes 0.25, the wrong class and
images with no shape 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from sharedflow.data.builtin import cache_dir, draw_shape, shapes_dataset
from sharedflow.data.images import ImageFolder
from sharedflow.data.shape_classifier import (
    CLASSES,
    NO_SHAPE,
    ShapeClassifier,
    judges,
    shape_accuracy,
    shape_classifier,
)
from sharedflow.models import glow, tarflow
from sharedflow.threads import intra_op_threads


@pytest.fixture(scope="module")
def judge() -> ShapeClassifier:
    return shape_classifier(16, steps=300)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> ImageFolder:
    """Shapes the classifier never saw (a seed of their own)."""
    return ImageFolder(shapes_dataset(tmp_path_factory.mktemp("shapes"), 16, 16, seed=5), 16)


class Drawer:
    """A stand-in for a class-conditional model: it "samples" real images of class ``c + r``
    (``relabel`` r; ``cycle``: r is the sample's index), or (``empty``) bare backgrounds."""

    def __init__(
        self, real: ImageFolder, relabel: int = 0, cycle: bool = False, empty: bool = False
    ) -> None:
        self.image_shape = (3, 16, 16)
        self.by_class = {c: [x for x, y in real if y == c] for c in range(len(CLASSES))}
        self.relabel, self.cycle, self.empty = relabel, cycle, empty

    def sample(self, n: int, labels: Tensor, temperature: float | None = None) -> Tensor:
        if self.empty:
            rng = np.random.default_rng(7)
            images = [torch.from_numpy(draw_shape(rng, None, 16)) for _ in range(n)]
            return torch.stack(images).permute(0, 3, 1, 2)
        shifts = range(n) if self.cycle else [self.relabel] * n
        shifted = [(int(c) + r) % len(CLASSES) for c, r in zip(labels, shifts, strict=True)]
        count = {c: 0 for c in self.by_class}
        images = []
        for c in shifted:
            images.append(self.by_class[c][count[c] % len(self.by_class[c])])
            count[c] += 1
        return torch.stack(images)


def test_real_shapes_score_one_and_the_wrong_class_zero(
    judge: ShapeClassifier, real: ImageFolder
) -> None:
    assert shape_accuracy(Drawer(real), 16, judge=judge) >= 0.95
    assert shape_accuracy(Drawer(real, relabel=1), 16, judge=judge) <= 0.05


def test_random_classes_score_a_quarter(judge: ShapeClassifier, real: ImageFolder) -> None:
    assert abs(shape_accuracy(Drawer(real, cycle=True), 16, judge=judge) - 0.25) <= 0.05


def test_images_with_no_shape_score_zero(judge: ShapeClassifier, real: ImageFolder) -> None:
    empty = Drawer(real, empty=True)
    assert shape_accuracy(empty, 16, judge=judge) <= 0.05
    answers = judge(empty.sample(64, torch.zeros(64))).argmax(1)
    assert (answers == NO_SHAPE).float().mean() >= 0.9


def test_it_judges_the_built_in_shapes_only(real: ImageFolder) -> None:
    assert judges(real) and judges(torch.utils.data.Subset(real, [0, 1]))
    other = real.__class__.__new__(real.__class__)
    other.classes = ["cat", "dog"]
    assert not judges(other) and not judges([])


def test_the_classifier_is_trained_once_and_cached(judge: ShapeClassifier) -> None:
    assert len(list(cache_dir().glob("shape-classifier-*-16-3-300.safetensors"))) == 1
    again = shape_classifier(16, steps=300)
    for a, b in zip(judge.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_classifier_does_not_depend_on_the_thread_count(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    trained = []
    for n in (1, 2):
        monkeypatch.setenv("SHAREDFLOW_CACHE", str(tmp_path / str(n)))
        with intra_op_threads(n):
            trained.append(shape_classifier(16, steps=40))
    for a, b in zip(*(judge.parameters() for judge in trained), strict=True):
        assert torch.equal(a, b)


def test_a_conditional_image_flow_of_the_shapes_reports_its_accuracy(
    judge: ShapeClassifier, real: ImageFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sharedflow.data.shape_classifier as module

    monkeypatch.setattr(module, "shape_classifier", lambda size, channels: judge)
    conditional = tarflow(16, 3, 4, 64, 2, 1, len(CLASSES)).eval()
    (accuracy,) = conditional.quality(real).values()
    assert 0 <= accuracy <= 1
    (accuracy,) = glow(16, 3, 2, 2, 16, num_classes=len(CLASSES)).eval().quality(real).values()
    assert 0 <= accuracy <= 1
    assert tarflow(16, 3, 4, 64, 2, 1).quality(real) == {}  # unconditional: no class to ask for
    assert glow(16, 3, 2, 2, 16).quality(real) == {}
    assert conditional.quality([(torch.zeros(3, 16, 16, dtype=torch.uint8), 0)]) == {}

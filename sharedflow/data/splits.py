"""What a recipe's ``data`` node builds: a training set and a held-out set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Subset

from sharedflow.data.audio import AudioClips, AudioSegments
from sharedflow.data.builtin import PULSES, Voice, shapes_dataset, speech_corpus
from sharedflow.data.images import (
    ImageArrays,
    ImageFolder,
    ImageItems,
    load_cifar10,
    load_imagenet64,
    load_npy,
)

__all__ = ["DataSplits", "images", "speech"]


@dataclass
class DataSplits:
    """``train`` items are addressed by ``(index, seed)``; ``val`` items are whole examples."""

    train: Dataset
    val: Dataset
    modality: str


def speech(
    source: str | None = None,
    sample_rate: int = 22050,
    segment_length: int = 16000,
    n_test: int = 1310,
    resample: bool = False,
    skip_bad: bool = False,
    builtin_clips: int = 48,
    length_multiple: int = 256,
    builtin_voice: Voice = PULSES,
) -> DataSplits:
    """Speech for vocoders: random training segments; whole held-out clips for the test LL.

    Args:
        source: LJSpeech directory, folder or file list; ``None`` writes and uses the built-in
            speech-like corpus of ``builtin_clips`` clips.
        n_test: the first ``n_test`` clips by name are held out (LJSpeech: 1310).
        length_multiple: held-out clips are cut to a multiple of it (the hop, 256).
        builtin_voice: the built-in corpus's voice (``GlottalPulses()``, ``Harmonics()``).
    """
    root = (
        Path(source).expanduser()
        if source
        else speech_corpus(n_clips=builtin_clips, sample_rate=sample_rate, voice=builtin_voice)
    )
    common = {"sample_rate": sample_rate, "resample": resample, "skip_bad": skip_bad}
    train = AudioClips(root, split="train", n_test=n_test, **common)
    val = AudioClips(root, split="test", n_test=n_test, length_multiple=length_multiple, **common)
    return DataSplits(AudioSegments(train, segment_length), val, "audio")


def images(
    format: str = "builtin",
    source: str | None = None,
    val_source: str | None = None,
    image_size: int = 16,
    channels: int = 3,
    hflip: bool = False,
    n_val: int = 32,
    builtin_per_class: int = 64,
    labels: str | None = None,
) -> DataSplits:
    """Images for image flows: ``(uint8 (C, H, W), label)`` items.

    Args:
        format: ``builtin`` (labelled shapes, written on first use; takes no ``source``),
            ``folder`` (``root/<class>/<image>``), ``cifar10`` (binary batches), ``imagenet64``
            (npz batches; ``source`` a comma-separated list), or ``npy`` (``source`` the
            images, ``labels`` an optional ``.npy`` of their integer classes).
        val_source: a separate held-out source of the same format; otherwise the last
            ``n_val`` items of ``source`` are held out (CIFAR-10 always uses its test batch).
        hflip: random horizontal flips in training.
    """
    if format == "builtin" and source is not None:
        raise ValueError(
            f"data.source={source!r} with data.format=builtin: set data.format to folder, npy, "
            "cifar10 or imagenet64 to train on it (or drop data.source for the built-in shapes)"
        )
    if labels is not None and format != "npy":
        raise ValueError(f"data.labels is for data.format=npy, not {format!r}")
    if format in ("builtin", "folder"):
        root = (
            shapes_dataset(n_per_class=builtin_per_class, size=image_size)
            if format == "builtin"
            else source
        )
        dataset = ImageFolder(root, image_size, channels)
        val = ImageFolder(val_source, image_size, channels) if val_source else None
    elif format == "cifar10":
        dataset = ImageArrays(*load_cifar10(source, True), image_size, channels, source)
        val = ImageArrays(*load_cifar10(source, False), image_size, channels, source)
    elif format == "imagenet64":
        dataset = ImageArrays(*load_imagenet64(source.split(",")), image_size, channels, source)
        val = (
            ImageArrays(*load_imagenet64(val_source.split(",")), image_size, channels, val_source)
            if val_source
            else None
        )
    elif format == "npy":
        dataset = ImageArrays(*load_npy(source, labels), image_size, channels, source)
        val = (
            ImageArrays(*load_npy(val_source), image_size, channels, val_source)
            if val_source
            else None
        )
    else:
        raise ValueError(
            f"unknown image format {format!r}: builtin, folder, cifar10, imagenet64 or npy"
        )
    if val is None:
        order = np.random.default_rng(0).permutation(len(dataset))
        if len(dataset) <= n_val:
            raise ValueError(
                f"{source or 'builtin'}: {len(dataset)} images leave none to "
                f"train on after holding out {n_val}"
            )
        val = Subset(dataset, order[:n_val].tolist())
        dataset = Subset(dataset, order[n_val:].tolist())
    if len(val) == 0:
        raise ValueError("the held-out image set is empty")
    return DataSplits(ImageItems(dataset, hflip), val, "image")

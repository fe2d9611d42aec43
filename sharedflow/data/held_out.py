"""What ``evaluate`` and ``compare`` score: any data a user points at, never a training split.

Audio: an LJSpeech tree is scored on its reference test split (the first 1310 clips by name,
as WaveFlow and NanoFlow report), any other folder or file list on every clip in it. Images: a
class-per-folder tree or a ``.npy`` array (every image), CIFAR-10 (its test batch) or
ImageNet 64x64 npz batches (every image). The description says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from sharedflow.data.audio import AudioClips
from sharedflow.data.images import (
    ImageArrays,
    ImageFolder,
    load_cifar10,
    load_imagenet64,
    load_npy,
)

__all__ = ["LJSPEECH_TEST_CLIPS", "HeldOut", "held_out", "held_out_path"]

LJSPEECH_TEST_CLIPS = 1310


@dataclass
class HeldOut:
    """A held-out set, a one-line description of what it holds, and the kind of model it is
    for (a task's ``modality``; empty until a comparison pairs it with one)."""

    items: Dataset
    description: str
    kind: str = ""


def _is_ljspeech(root: Path) -> bool:
    return (root / "metadata.csv").is_file() and (root / "wavs").is_dir()


def held_out_path(source: str) -> Path:
    """``source`` as a path; one that does not exist is an error naming it."""
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such held-out data: {path}")
    return path


def held_out(data: dict[str, Any], source: str) -> HeldOut:
    """The items of ``source`` to score, read with the settings of a run's ``data`` node
    (sample rate, image size, format); ``data.format`` may be overridden for images."""
    path = held_out_path(source)
    if "sample_rate" in data:
        common = {
            "sample_rate": data["sample_rate"],
            "resample": data.get("resample", False),
            "skip_bad": data.get("skip_bad", False),
            "length_multiple": data.get("length_multiple", 1),
        }
        if _is_ljspeech(path):
            clips = AudioClips(path, split="test", n_test=LJSPEECH_TEST_CLIPS, **common)
            what = f"the LJSpeech reference test split (first {LJSPEECH_TEST_CLIPS} clips)"
        else:
            clips = AudioClips(path, split="all", **common)
            what = "every clip"
        return HeldOut(clips, f"{len(clips)} clips of {path}: {what}")
    size, channels = data["image_size"], data.get("channels", 3)
    image_format = data.get("format", "folder")
    if image_format in ("folder", "builtin"):
        if path.suffix == ".npy":
            raise ValueError(f"{path}: a .npy array, but data.format is {image_format!r}")
        images = ImageFolder(path, size, channels)
        image_format = "folder"  # a built-in recipe's held-out path is read as a folder
    elif image_format == "npy":
        images = ImageArrays(*load_npy(path), size, channels, str(path))
    elif image_format == "cifar10":
        images = ImageArrays(*load_cifar10(path, False), size, channels, str(path))
    elif image_format == "imagenet64":
        images = ImageArrays(*load_imagenet64(source.split(",")), size, channels, source)
    else:
        raise ValueError(
            f"data.format={image_format!r}: expected folder, npy, cifar10 or imagenet64"
        )
    return HeldOut(images, f"{len(images)} images of {path} ({image_format})")

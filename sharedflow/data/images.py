"""Image datasets: class-per-folder trees, CIFAR-10 binary batches, ImageNet-64 npz batches and
uint8 ``.npy`` arrays, plus PNG grids. Items are ``(uint8 (C, H, W), label)``.

Images are centre-cropped to a square and resized to the model's size (Pillow, bicubic); an
unreadable file, a wrong channel count or an image that cannot be fitted is an error naming it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "ImageArrays",
    "ImageError",
    "ImageFolder",
    "ImageItems",
    "load_cifar10",
    "load_imagenet64",
    "load_npy",
    "save_grid",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ImageError(ValueError):
    """A problem with an image file or dataset; the message names it."""


def _fit(image: Image.Image, size: int, path: Path | str, min_size: int) -> Image.Image:
    """Centre-crop to a square and resize to ``size``; refuse images below ``min_size``."""
    w, h = image.size
    side = min(w, h)
    if side < min_size:
        raise ImageError(
            f"{path}: {w}x{h} is too small to fit {size}x{size} "
            f"(smallest side must be at least {min_size})"
        )
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image if side == size else image.resize((size, size), Image.BICUBIC)


class ImageFolder(Dataset):
    """``root/<class>/<image>``; labels index the sorted class folders.

    Args:
        size: the model's image size; images are centre-cropped and resized to it.
        channels: 3 (RGB) or 1 (grayscale); an image of another mode is an error unless
            ``convert`` is set.
        min_size: smallest acceptable side before resizing (default: any).
    """

    def __init__(
        self,
        root: str | Path,
        size: int,
        channels: int = 3,
        convert: bool = False,
        min_size: int = 1,
    ) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"no such image folder: {root}")
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.items = [
            (p, label)
            for label, name in enumerate(self.classes)
            for p in sorted((root / name).rglob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not self.items:
            raise ImageError(f"{root}: no images found (expected root/<class>/<image>)")
        self.size, self.channels, self.convert, self.min_size = size, channels, convert, min_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.items[index]
        try:
            image = Image.open(path)
            image.load()
        except (OSError, UnidentifiedImageError) as error:
            raise ImageError(f"{path}: cannot read image ({error})") from error
        mode = "RGB" if self.channels == 3 else "L"
        if image.mode != mode:
            n_bands = len(image.getbands())
            if not self.convert and not (image.mode in ("P", "RGBA") and mode == "RGB"):
                raise ImageError(
                    f"{path}: {n_bands} channels ({image.mode}), the model expects {self.channels}"
                )
            image = image.convert(mode)
        image = _fit(image, self.size, path, self.min_size)
        array = np.asarray(image, dtype=np.uint8).reshape(self.size, self.size, self.channels)
        return torch.from_numpy(array.copy()).permute(2, 0, 1), label


class ImageArrays(Dataset):
    """In-memory uint8 images ``(N, C, H, W)`` with labels ``(N,)``."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        size: int,
        channels: int = 3,
        source: str = "array",
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ImageError(
                f"{source}: expected uint8 images (N, H, W, C) or (N, C, H, W), "
                f"got {images.dtype} {images.shape}"
            )
        if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = images.transpose(0, 3, 1, 2)
        if images.shape[1] != channels:
            raise ImageError(f"{source}: {images.shape[1]} channels, the model expects {channels}")
        if images.shape[2:] != (size, size):
            if min(images.shape[2:]) < size:
                raise ImageError(
                    f"{source}: images are {images.shape[2]}x{images.shape[3]}, "
                    f"smaller than the model's {size}x{size}"
                )
            images = np.stack(
                [
                    np.asarray(
                        _fit(Image.fromarray(im.transpose(1, 2, 0).squeeze()), size, source, 1)
                    )
                    .reshape(size, size, channels)
                    .transpose(2, 0, 1)
                    for im in images
                ]
            )
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = (
            torch.zeros(len(images), dtype=torch.long)
            if labels is None
            else torch.as_tensor(labels, dtype=torch.long)
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])


def load_cifar10(root: str | Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 binary batches (``data_batch_1..5.bin`` / ``test_batch.bin``)."""
    root = Path(root).expanduser()
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
    images, labels = [], []
    for name in names:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"no such CIFAR-10 batch: {path}")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size % 3073:
            raise ImageError(f"{path}: not a CIFAR-10 binary batch (size {raw.size})")
        records = raw.reshape(-1, 3073)
        labels.append(records[:, 0].astype(np.int64))
        images.append(records[:, 1:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


def load_imagenet64(paths: Sequence[str | Path]) -> tuple[np.ndarray, np.ndarray]:
    """Downsampled ImageNet 64x64 npz batches (``data`` (N, 12288), ``labels`` from 1)."""
    images, labels = [], []
    for path in paths:
        with np.load(Path(path).expanduser(), allow_pickle=False) as batch:
            images.append(batch["data"].reshape(-1, 3, 64, 64))
            labels.append(batch["labels"].astype(np.int64) - 1)
    return np.concatenate(images), np.concatenate(labels)


def load_npy(path: str | Path, labels: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 array ``(N, H, W, C)`` or ``(N, C, H, W)`` and optional int labels ``(N,)``."""
    images = np.load(Path(path).expanduser(), allow_pickle=False)
    if labels is None:
        return images, np.zeros(len(images), np.int64)
    y = np.load(Path(labels).expanduser(), allow_pickle=False)
    if y.shape != (len(images),) or y.dtype.kind not in "iu" or (len(y) and y.min() < 0):
        raise ImageError(
            f"{labels}: expected {len(images)} non-negative integer labels, got {y.dtype} "
            f"{y.shape}"
        )
    return images, y.astype(np.int64)


class ImageItems(Dataset):
    """Training items addressed by ``(index, seed)``: the seed decides a horizontal flip."""

    def __init__(self, images: Dataset, hflip: bool = False) -> None:
        self.images = images
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int] | int) -> tuple[Tensor, int]:
        index, seed = item if isinstance(item, Sequence) else (item, 0)
        image, label = self.images[index]
        if self.hflip and seed % 2:
            image = image.flip(-1)
        return image, label


def grid_array(images: Tensor, n_columns: int | None = None) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` as one ``(rows (H + 2) + 2, cols (W + 2) + 2, C)`` array, the
    images in row-major order with a 2-pixel white border."""
    n, c, h, w = images.shape
    cols = n_columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + 2) + 2, cols * (w + 2) + 2, c), 255, dtype=np.uint8)
    for i, image in enumerate(images.cpu().numpy()):
        r, q = divmod(i, cols)
        grid[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + q * (w + 2) : 2 + q * (w + 2) + w] = (
            image.transpose(1, 2, 0)
        )
    return grid


def save_grid(images: Tensor, path: str | Path, n_columns: int | None = None) -> Path:
    """uint8 ``(N, C, H, W)`` as one PNG grid with a 2-pixel border."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = grid_array(images, n_columns)
    Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid).save(path)
    return path


def save_panels(
    panels: Sequence[tuple[str, Tensor]], path: str | Path, n_columns: int | None = None
) -> Path:
    """Titled grids side by side in one PNG, e.g. ``[("held out", real), ("samples", x)]``,
    each uint8 ``(N, C, H, W)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grids = [grid_array(images, n_columns) for _, images in panels]
    fig, axes = plt.subplots(1, len(grids), figsize=(2.6 * len(grids), 3.0), squeeze=False)
    for ax, (title, _), grid in zip(axes[0], panels, grids, strict=True):
        image = grid[..., 0] if grid.shape[-1] == 1 else grid
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

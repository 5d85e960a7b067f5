"""An offline image collection for scans: deterministic crops of the photos and textures inside scikit-image.

Crop ``i`` is always the same image whatever ``n`` is (its random choices are seeded by ``i``), so
``sample_dataset(200)`` holds the first 200 files of ``sample_dataset(2000)``. Each crop takes one of
:data:`SAMPLE_SOURCES` in turn, a random square of 30 to 100 % of its shorter side at a random place, mirrored
half of the time, resized to :data:`SAMPLE_SIZE` pixels and saved as a JPEG (quality 90).

Example::

    >>> folder = sample_dataset(n=64)
    >>> sorted(p.name for p in folder.iterdir())[:2]
    ['00000_astronaut.jpg', '00001_brick.jpg']
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .._args import shown
from ..errors import InvalidArgumentError
from ..files import as_path, make_folder, write_atomic
from ..images import load_image

MAX_SAMPLES = 100_000
"""Most images :func:`sample_dataset` writes (about 1.5 GB of JPEG files)."""

__all__ = ["SAMPLE_SIZE", "SAMPLE_SOURCES", "sample_dataset"]

SAMPLE_SOURCES = (
    "astronaut",
    "brick",
    "chelsea",
    "grass",
    "coffee",
    "gravel",
    "rocket",
    "camera",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "page",
    "text",
    "horse",
    "cell",
    "logo",
    "clock",
)
"""The scikit-image pictures the crops come from (photos, microscopy, and the textures brick, grass, gravel)."""

SAMPLE_SIZE = 256
"""The side of every crop, in pixels."""

DEFAULT_FOLDER = Path("~/.cache/explorer/sample-dataset")


def _crop(picture: Image.Image, index: int) -> Image.Image:
    rng = np.random.default_rng([20260101, index])
    short = min(picture.size)
    side = max(16, int(short * rng.uniform(0.3, 1.0)))
    left = int(rng.integers(0, picture.width - side + 1))
    top = int(rng.integers(0, picture.height - side + 1))
    crop = picture.crop((left, top, left + side, top + side))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop.resize((SAMPLE_SIZE, SAMPLE_SIZE), Image.Resampling.LANCZOS)


def sample_dataset(n: int = 512, folder: str | os.PathLike | None = None) -> Path:
    """Write ``n`` deterministic crops of scikit-image's pictures as JPEG files, once; return their folder.

    Args:
        n: how many images.
        folder: where to write them; default ``~/.cache/explorer/sample-dataset/n<n>``. Files already there
            are kept (each is written atomically, so a present file is complete).

    Example::

        >>> scan = explorer.scan("default", explorer.sample_dataset(n=16), k=4, cache=None, progress=False)
        >>> len(scan), scan.stages
        (16, ['blocks.6'])
    """
    from skimage import data

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
        raise InvalidArgumentError(
            f"n={shown(n)}; pass a number of images from 1 to {MAX_SAMPLES:,}, for example n=512."
        )
    target = as_path(folder).expanduser() if folder is not None else DEFAULT_FOLDER.expanduser() / f"n{n}"
    make_folder(target)
    pictures: dict[str, Image.Image] = {}
    for index in range(n):
        name = SAMPLE_SOURCES[index % len(SAMPLE_SOURCES)]
        path = target / f"{index:05d}_{name}.jpg"
        if path.exists():
            continue
        if name not in pictures:
            pictures[name] = load_image(getattr(data, name)(), name=name)
        buffer = io.BytesIO()
        _crop(pictures[name], index).save(buffer, format="JPEG", quality=90)
        write_atomic(path, buffer.getvalue())
    return target

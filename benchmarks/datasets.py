"""Generated image folders and a small backbone, for the benchmarks that measure how a run scales with its number
of images (memory, resume), where the pictures themselves do not matter.

Example::

    paths = write_images(Path("/tmp/images"), 1000, 32)   # 1,000 PNGs of 32x32 pixels
    bb = small_backbone(32)                                # resnet18, random weights, 32x32 input, ``layer2``
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

import explorer
from explorer.backbones.timm import TimmPreprocess

__all__ = ["small_backbone", "write_images"]


def write_images(folder: Path, count: int, size: int) -> list[str]:
    """``count`` small PNGs (smooth random colour fields, seeded by their index) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.png"
        if not path.exists():
            rng = np.random.default_rng(i)
            coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(coarse).resize((size, size), Image.BILINEAR).save(path)
        paths.append(str(path))
    return paths


def small_backbone(size: int) -> explorer.Backbone:
    """A random-weights resnet18 (seed 0) that takes ``size`` x ``size`` images, its ``layer2`` selected."""
    torch.manual_seed(0)
    bb = explorer.load_backbone("resnet18", out_features=["layer2"], pretrained=False, device="cpu")
    bb.preprocess = TimmPreprocess({"input_size": (3, size, size), "crop_pct": 1.0})
    return bb

"""Write results to files: grids to PNG or JPEG, statistics to CSV and JSON, feature maps to ``.npz`` or ``.safetensors``.

Example::

    >>> save_png(render_grid(maps["blocks.1"][0]), "blocks1.png")
    PosixPath('blocks1.png')
    >>> stats_to_csv(channel_stats(maps["blocks.1"]), "blocks1.csv")
    PosixPath('blocks1.csv')
    >>> save_feature_maps(maps, "maps.safetensors")
    PosixPath('maps.safetensors')
    >>> load_feature_maps("maps.safetensors").shapes["blocks.1"]
    (1, 24, 56, 56)
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ._args import shown, torch_device, whole
from .errors import InvalidArgumentError
from .files import write_atomic
from .hooks import FeatureMaps
from .render import to_png

__all__ = [
    "SAVE_SUFFIXES",
    "load_feature_maps",
    "save_feature_maps",
    "save_image",
    "save_png",
    "stats_to_csv",
    "stats_to_json",
]

_ORDER_KEY = "explorer.order"
_SUFFIXES = (".npz", ".safetensors")


class _Table(Protocol):
    def rows(self, image: int | None = None) -> list[dict]: ...


def save_png(array: np.ndarray | torch.Tensor, path: str | os.PathLike, level: int = 6) -> Path:
    """Write a uint8 image (a grid, an overlay) as a PNG file; ``level`` 6 trades time for a smaller file.

    Raises:
        InvalidArgumentError: the name ends in another image format's suffix (``grid.jpg``): PNG bytes under
            that name would mislead every viewer; use :func:`save_image`, which writes what the suffix says.

    Example::

        >>> save_png(render_grid(fmap), "grid.png")
        PosixPath('grid.png')
    """
    path = _path(path)
    if path.suffix.lower() not in ("", ".png"):
        raise InvalidArgumentError(
            f'save_png() writes PNG, but "{path}" names a {path.suffix} file. Name it *.png, or use '
            "explorer.save_image(array, path), which writes PNG or JPEG by the suffix."
        )
    return write_atomic(path, to_png(array, level=level))


SAVE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""The file types :func:`save_image` writes."""


def save_image(array: np.ndarray | torch.Tensor, path: str | os.PathLike, quality: int = 95) -> Path:
    """Write a uint8 image as PNG (``.png``) or JPEG (``.jpg``, ``.jpeg``, at ``quality``), by the suffix.

    Raises:
        InvalidArgumentError: another suffix; the message lists :data:`SAVE_SUFFIXES`.

    Example::

        >>> save_image(render_grid(fmap), "grid.jpg")      # JPEG bytes, as the name says
        PosixPath('grid.jpg')
    """
    path = _path(path)
    suffix = path.suffix.lower()
    if suffix not in SAVE_SUFFIXES:
        raise InvalidArgumentError(
            f'Cannot tell which image format to write for "{path}": name it {", ".join(SAVE_SUFFIXES)}.'
        )
    if suffix == ".png":
        return save_png(array, path)
    from PIL import Image

    quality = whole("quality", quality, minimum=1, maximum=95)
    pixels = np.asarray(array.detach().cpu() if isinstance(array, torch.Tensor) else array)
    if pixels.dtype != np.uint8 or not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        raise InvalidArgumentError(
            f"JPEG takes (H, W) or (H, W, 3) uint8 pixels, got {pixels.dtype} {pixels.shape}. Render with "
            "render_grid()/overlay(), or save as .png (which also keeps transparency)."
        )
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="JPEG", quality=quality)
    return write_atomic(path, buffer.getvalue())


def _plain(value: object) -> object:
    """JSON-safe: NaN and inf become None; NumPy scalars and arrays become Python values."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def stats_to_csv(stats: _Table, path: str | os.PathLike, image: int | None = None) -> Path:
    """Write one row per channel (:meth:`~explorer.ChannelStats.rows`) as CSV; NaN is written as ``nan``.

    Args:
        stats: a :class:`~explorer.ChannelStats` or :class:`~explorer.ChannelDifference`.
        path: the CSV file.
        image: one image's statistics instead of the pooled ones.
    """
    _check_table(stats)
    rows = stats.rows(image) if image is not None else stats.rows()
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["channel"])
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, text.getvalue().encode())


def stats_to_json(stats: _Table, path: str | os.PathLike) -> Path:
    """Write shape, summary and rows (``stats.to_dict()``) as JSON; NaN and inf are written as ``null``."""
    _check_table(stats)
    data = stats.to_dict() if hasattr(stats, "to_dict") else {"rows": stats.rows()}
    return write_atomic(path, json.dumps(_plain(data), indent=1, allow_nan=False).encode())


def _check_table(stats: object) -> None:
    if not callable(getattr(stats, "rows", None)):
        raise InvalidArgumentError(
            f"stats={shown(stats)}; pass channel_stats() or channel_difference() output."
        )


def _path(path: object) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
        raise InvalidArgumentError(f"path={shown(path)} ({type(path).__name__}); pass a file path.")
    return Path(path)


def _suffix(path: Path) -> str:
    if "\x00" in str(path):
        raise InvalidArgumentError(f"The path {shown(str(path))} holds a NUL byte; pass a plain file path.")
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise InvalidArgumentError(f'Cannot tell the format of "{path}": name it *.npz or *.safetensors.')
    return suffix


def save_feature_maps(maps: Mapping[str, torch.Tensor] | torch.Tensor, path: str | os.PathLike) -> Path:
    """Save feature maps, keyed by stage name, as ``.npz`` (NumPy) or ``.safetensors``, chosen by suffix.

    Tensors are copied to the CPU; the stage order is kept. bfloat16 maps are saved as float32 in ``.npz``
    (NumPy has no bfloat16).

    Example::

        >>> save_feature_maps(bb.extract(cat), "cat.safetensors")
        PosixPath('cat.safetensors')
    """
    path = _path(path)
    suffix = _suffix(path)
    if isinstance(maps, torch.Tensor):
        maps = {"map": maps}
    if not isinstance(maps, Mapping) or not all(isinstance(t, torch.Tensor) for t in maps.values()):
        raise InvalidArgumentError(f"maps={shown(maps)}; pass FeatureMaps, a dict of tensors, or one tensor.")
    tensors = {str(name): tensor.detach().cpu().contiguous() for name, tensor in maps.items()}
    if suffix == ".safetensors":
        from safetensors.torch import save

        return write_atomic(path, save(tensors, metadata={_ORDER_KEY: json.dumps(list(tensors))}))
    arrays = {name: (t.float() if t.dtype == torch.bfloat16 else t).numpy() for name, t in tensors.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_atomic(path, buffer.getvalue())


def load_feature_maps(path: str | os.PathLike, device: str | torch.device = "cpu") -> FeatureMaps:
    """Read maps written by :func:`save_feature_maps` back, in their saved order.

    Example::

        >>> path = save_feature_maps(bb.extract(cat), "cat.safetensors")
        >>> load_feature_maps(path).shapes["blocks.1"]
        (1, 24, 56, 56)
    """
    path = _path(path)
    suffix = _suffix(path)
    device = torch_device("device", device)
    if suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            order = json.loads((handle.metadata() or {}).get(_ORDER_KEY, "[]")) or list(handle.keys())
            return FeatureMaps({name: handle.get_tensor(name) for name in order})
    with np.load(path, allow_pickle=False) as data:
        return FeatureMaps({name: torch.from_numpy(data[name]).to(device) for name in data.files})

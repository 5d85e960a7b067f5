"""Image input: anything a user has (bytes, a path, PIL, an array) becomes an upright RGB image, then a tensor.

Reading refuses what it cannot use with an :class:`~explorer.ImageError` that says why and what to do: empty
or corrupt bytes, a file that is not an image, a format outside :data:`FORMATS` (EPS would run Ghostscript), a
decompression bomb (checked from the header, before any pixel is decoded). Any mode (16-bit, CMYK, palette, transparency, greyscale) becomes RGB; EXIF orientation is applied;
an animated image gives its first frame, with ``image.info["frames"]`` telling how many it had.

Preprocessing is the checkpoint's own transform: :mod:`explorer.preprocessing` (``Preprocess``, ``preprocess``,
``model_view``, also importable from here).

Example::

    >>> import skimage, os
    >>> image = load_image(os.path.join(os.path.dirname(skimage.data.__file__), "chelsea.png"))
    >>> image.size, image.mode
    ((451, 300), 'RGB')
"""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ._args import finite_pair, shown
from .errors import ImageError

__all__ = [
    "ImageInput",
    "MAX_PIXELS",
    "MAX_FILE_BYTES",
    "MAX_INPUT_SIDE",
    "MAX_SIDE",
    "MAX_ASPECT",
    "FORMATS",
    "load_image",
    "sample_images",
    "SAMPLE_NAMES",
]

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray | torch.Tensor
"""Every form an image may take: a path, encoded bytes, a PIL image, an HWC/HW array or a CHW tensor."""

MAX_PIXELS = 100_000_000
"""Images with more pixels are refused before decoding (a decompression-bomb guard); raise it to allow them."""

MAX_FILE_BYTES = 1 << 30
"""Image files larger than this (1 GiB) are refused from their size, before any byte is read; raise it to allow
them (the pixel limit still applies)."""

MAX_SIDE = 4096
"""Larger images are downscaled to this longest side as they are read; the model input is smaller anyway."""

MAX_INPUT_SIDE = 2048
"""The longest side a checkpoint's configured input may have; larger ones (``size: 8000``) are refused as a
broken configuration: every forward pass would take seconds."""

MAX_ASPECT = 100
"""Images longer than this many times their width (or wider than their height) are refused before the transform:
a resize that keeps the aspect ratio would make a 4096x1 strip 1048576 pixels long."""

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "ICO", "TGA", "PPM")
"""The formats PIL may open (JPEG includes phones' MPO); others are refused: EPS would run Ghostscript."""

SAMPLE_NAMES = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "camera")
"""Sample images that ship inside scikit-image, in gallery order."""

# what PIL's format plugins raise on malformed data (Image.open itself lets NotImplementedError through)
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    TypeError,
    ArithmeticError,
    struct.error,
    NotImplementedError,
)

_log = logging.getLogger(__name__)


_PIL_LIMIT_LOCK = threading.RLock()


@contextmanager
def _pil_pixel_limit(limit: int | None) -> Iterator[None]:
    """Set PIL's own decompression-bomb limit for the block (PIL refuses over twice it and warns below)."""
    with _PIL_LIMIT_LOCK:  # a global of PIL's: threads reading images take turns
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _open(stream: BinaryIO, size: int, name: str) -> Image.Image:
    """PIL's lazy open of ``stream`` (``size`` bytes): only the header is read here."""
    if not size:
        raise ImageError(
            f"{name} is empty (0 bytes). Upload or pass a JPEG, PNG, WebP, GIF, BMP or TIFF image."
        )
    try:
        with _pil_pixel_limit(None):  # the check below, on the header's size, names the size and MAX_PIXELS
            image = Image.open(stream, formats=FORMATS)
    except (UnidentifiedImageError, *_DECODE_ERRORS) as err:
        if _text_chunk_error(err):
            raise
        stream.seek(0)
        head = stream.read(8)
        kind = "a PDF document" if head.startswith(b"%PDF") else "not an image the explorer reads"
        raise ImageError(
            f"{name} is {kind} ({size} bytes starting {head!r}). Use a JPEG, PNG, WebP, GIF, BMP or TIFF image."
        ) from err
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise _bomb_error(name, (width, height))
    return image


def _text_chunk_error(err: BaseException) -> bool:
    """PIL refused a PNG text chunk (metadata) over its ``MAX_TEXT_CHUNK`` / ``MAX_TEXT_MEMORY`` guard."""
    return isinstance(err, ValueError) and not isinstance(err, ImageError) and "MAX_TEXT" in str(err)


def _without_text_chunks(data: bytes) -> bytes:
    """The PNG ``data`` without its tEXt, zTXt and iTXt chunks (metadata; the pixels do not need them)."""
    kept, position = [data[:8]], 8
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        end = position + 12 + length
        if data[position + 4 : position + 8] not in (b"tEXt", b"zTXt", b"iTXt"):
            kept.append(data[position:end])
        position = end
    return b"".join(kept)


def _bomb_error(name: str, size: tuple[int, int] | None) -> ImageError:
    what = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else "too many pixels"
    return ImageError(
        f"{name} declares {what}, over the limit of {MAX_PIXELS:,} (a decompression-bomb guard); it was not "
        "decoded. If you trust the file, raise the limit: explorer.images.MAX_PIXELS = <pixels>."
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(_float_to_uint8(np.asarray(image)))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def _float_to_uint8(array: np.ndarray) -> np.ndarray:
    """A float image file's pixels (PIL mode ``F``) as uint8: values in ``[0, 1]`` are scaled, others clipped."""
    array = np.nan_to_num(array.astype(np.float64))
    if array.min() >= 0.0 and array.max() <= 1.0:
        array = array * 255.0
    return np.clip(array + 0.5, 0, 255).astype(np.uint8)


def _array_pixels(array: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    """uint8 pixels by the array rule (see :func:`load_image`), or an :class:`ImageError` naming the fix."""
    kind = f"An array of {array.dtype}"
    if array.dtype.kind not in "biuf":
        raise ImageError(f"{kind} is not an image; pass uint8, uint16 or float pixels.")
    values = array
    if array.dtype.kind == "f" or value_range is not None:
        values = array.astype(np.float64)
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise ImageError(
                f"{kind} holds {bad} NaN or infinite value(s), which no colour stands for. Replace them "
                "first, for example np.nan_to_num(a, nan=0.0)."
            )
    if value_range is not None:
        low, high = finite_pair("value_range", value_range)
        if low == high:
            raise ImageError(f"value_range={value_range}: black and white must differ.")
        return np.clip((values - low) * (255.0 / (high - low)) + 0.5, 0, 255).astype(np.uint8)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    if array.dtype.kind in "iu":
        raise ImageError(
            f"{kind} has no standard pixel range (uint8 is 0-255, uint16 0-65535). Say which values are black "
            "and white: load_image(a, value_range=(0, 4095)) for 12-bit data, (0, 255) for 8-bit values; or "
            "convert the array to uint8 or uint16."
        )
    low, high = float(values.min()), float(values.max())
    if low < 0.0:
        raise ImageError(
            f"{kind} runs from {low:.4g} to {high:.4g}: negative values, so it looks normalised (mean/std). Pass "
            "the original image, or name the values that are black and white: load_image(a, value_range=(low, "
            "high))."
        )
    if high > 1.0:
        raise ImageError(
            f"{kind} runs from {low:.4g} to {high:.4g}, but float pixels are read as 0 (black) to 1 (white). "
            "Pass load_image(a, value_range=(0, 255)) for 8-bit values, or scale it into [0, 1]."
        )
    return (values * 255.0 + 0.5).astype(np.uint8)


def _from_array(array: np.ndarray, value_range: tuple[float, float] | None = None) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or array.size == 0:
        raise ImageError(
            f"An array of shape {array.shape} is not an image. Pass (H, W), (H, W, 3) or (H, W, 4), "
            "or a (3, H, W) tensor."
        )
    return Image.fromarray(np.ascontiguousarray(_array_pixels(array, value_range)))


def load_image(
    source: ImageInput, *, name: str | None = None, value_range: tuple[float, float] | None = None
) -> Image.Image:
    """Read one image into an upright RGB ``PIL.Image``.

    Files are checked before they are read: one over :data:`MAX_FILE_BYTES` is refused from its size, one that
    is no image from its first bytes, a decompression bomb from its header.

    Arrays and tensors follow one rule, and what it cannot read unambiguously is refused with the fix:

    * ``uint8`` is 0-255 and ``uint16`` 0-65535 (their dtype's range); ``bool`` is black and white.
    * Floats must lie in ``[0, 1]``. A float image in 0-255, or a normalised tensor (negative values), is
      refused: pass ``value_range=(0, 255)``, or the original image.
    * Other integer types (int16, int32, int64, ...) have no standard pixel range: pass ``value_range``
      (``(0, 4095)`` for 12-bit data).
    * NaN or inf values are refused.

    Args:
        source: a path, encoded bytes (an upload), a PIL image, a NumPy array (``HW``, ``HWC``) or a ``CHW``
            tensor.
        name: how to call the image in error messages (a file name); defaults to the path or the type.
        value_range: for arrays and tensors, the values that are black and white, ``(low, high)``; values
            outside are clipped.

    Returns:
        An RGB image, EXIF orientation applied, at most :data:`MAX_SIDE` pixels on its longest side;
        ``info["frames"]`` holds the frame (or page) count of an animated image or multi-page file (its first
        is used) and ``info["format"]`` the file's format (``"GIF"``, ``"TIFF"``; None for arrays).

    Raises:
        ImageError: the input is empty, corrupt, not an image, over :data:`MAX_PIXELS` or
            :data:`MAX_FILE_BYTES`, or an array the rule above refuses.

    Example::

        >>> import skimage
        >>> load_image((Path(skimage.data.__file__).parent / "chelsea.png").read_bytes()).size
        (451, 300)
        >>> load_image(np.zeros((4, 6), np.int16), value_range=(0, 4095)).size
        (6, 4)
    """
    if isinstance(source, torch.Tensor):
        tensor = source.detach().cpu()
        source = (tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor).numpy()
    if isinstance(source, np.ndarray):
        source = _from_array(source, value_range)
    elif value_range is not None:
        raise ImageError(
            "value_range= is for arrays and tensors, whose values need a meaning; files and PIL images carry "
            "their own. Drop value_range=."
        )
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = name or str(path)
        try:
            if "\x00" in str(path) or not path.is_file():
                raise ImageError(
                    f"No image file at {str(path)!r:.300}. Check the path, or upload the image instead."
                )
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise ImageError(
                    f"{name} is {size:,} bytes, over the limit of {MAX_FILE_BYTES:,} for an image file; it was "
                    "not read. If it is an image you trust, raise the limit: explorer.images.MAX_FILE_BYTES = "
                    "<bytes>."
                )
            with path.open("rb") as handle:
                return _read(handle, size, name)
        except OSError as err:  # no permission, a folder that cannot be listed, an I/O error
            raise ImageError(
                f"{name} could not be read ({err.strerror or err}). Check its permissions, or pass another file."
            ) from err
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _read(io.BytesIO(data), len(data), name or "The uploaded file")
    if isinstance(source, Image.Image):
        return _decode(source, name or "The image")
    raise ImageError(
        f"Cannot read an image from {type(source).__name__}. Pass a path, bytes, a PIL image or an array."
    )


def _read(stream: BinaryIO, size: int, name: str) -> Image.Image:
    """Open and decode an encoded image; a PNG whose text chunks PIL refuses is read again without them."""
    try:
        return _decode(_open(stream, size, name), name)
    except ValueError as err:
        if not _text_chunk_error(err):
            raise
    _log.info("%s: text chunks over PIL's MAX_TEXT_CHUNK limit were left out (metadata only)", name)
    stream.seek(0)
    data = _without_text_chunks(stream.read())
    return _decode(_open(io.BytesIO(data), len(data), name), name)


def _decode(image: Image.Image, name: str) -> Image.Image:
    """Decode the first frame of an opened image into an upright RGB image, at most :data:`MAX_SIDE` px."""
    try:
        with _pil_pixel_limit((MAX_PIXELS + 1) // 2):  # frames and embedded images are checked while decoding
            frames = getattr(image, "n_frames", 1)
            if image.format == "JPEG" and max(image.size) > 2 * MAX_SIDE:
                image.draft("RGB", (MAX_SIDE, MAX_SIDE))
            image.seek(0)
            image.load()
            upright = ImageOps.exif_transpose(image)
        rgb = _to_rgb(upright)
    except Image.DecompressionBombError as err:
        raise _bomb_error(name, image.size) from err
    except _DECODE_ERRORS as err:
        if _text_chunk_error(err):
            raise
        raise ImageError(
            f"{name} is damaged and cannot be decoded ({err}). Re-save or re-export it."
        ) from err
    if max(rgb.size) > MAX_SIDE:
        rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    rgb.info["frames"] = frames
    rgb.info["format"] = image.format
    return rgb


def sample_images(names: Sequence[str] = SAMPLE_NAMES) -> dict[str, Image.Image]:
    """Sample photos that ship inside scikit-image (no network needed), as RGB images.

    Example::

        >>> sorted(sample_images(["chelsea", "coffee"]))
        ['chelsea', 'coffee']
    """
    from skimage import data

    if not isinstance(names, (list, tuple)) or not all(isinstance(name, str) for name in names):
        raise ImageError(f"names={shown(names)}; pass a list of names such as ['chelsea', 'coffee'].")
    samples = {}
    for name in names:
        loader = getattr(data, name, None)
        if loader is None:
            raise ImageError(f'No sample image "{name}". Choose from: {", ".join(SAMPLE_NAMES)}.')
        samples[name] = load_image(loader(), name=name)
    return samples


def __getattr__(name: str) -> object:
    """``Preprocess``, ``model_view`` and ``preprocess``, which live in :mod:`explorer.preprocessing`."""
    if name in ("Preprocess", "model_view", "preprocess"):
        from . import preprocessing

        return getattr(preprocessing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

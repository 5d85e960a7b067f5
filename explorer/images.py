"""Image input: anything a user has (bytes, a path, PIL, an array) becomes an upright RGB image, then a tensor.

Reading refuses what it cannot use with an :class:`~explorer.ImageError` that says why and what to do: empty
or corrupt bytes, a file that is not an image, a format outside :data:`FORMATS` (EPS would run Ghostscript), a
decompression bomb (checked from the header, before any pixel is decoded). Any mode (16-bit, CMYK, palette, transparency, greyscale) becomes RGB; EXIF orientation is applied;
an animated image gives its first frame, with ``image.info["frames"]`` telling how many it had.

Preprocessing follows the checkpoint's own configuration (:class:`Preprocess`, filled in by each source).

Example::

    >>> image = load_image("cat.jpg")
    >>> x = preprocess([image], Preprocess(input_size=(224, 224)))
    >>> x.shape
    torch.Size([1, 3, 224, 224])
"""

from __future__ import annotations

import io
import math
import os
import struct
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

__all__ = [
    "ImageInput",
    "Preprocess",
    "MAX_PIXELS",
    "MAX_SIDE",
    "FORMATS",
    "load_image",
    "model_view",
    "preprocess",
    "sample_images",
    "SAMPLE_NAMES",
]

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray | torch.Tensor
"""Every form an image may take: a path, encoded bytes, a PIL image, an HWC/HW array or a CHW tensor."""

MAX_PIXELS = 100_000_000
"""Images with more pixels are refused before decoding (a decompression-bomb guard); raise it to allow them."""

MAX_SIDE = 4096
"""Larger images are downscaled to this longest side as they are read; the model input is smaller anyway."""

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

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class Preprocess:
    """How a checkpoint expects its input: resize, crop and normalise.

    Attributes:
        input_size: ``(height, width)`` of the tensor the model gets.
        mean, std: per-channel normalisation of ``[0, 1]`` pixels.
        interpolation: ``"bicubic"``, ``"bilinear"``, ``"nearest"``, ...
        crop_pct: the crop's share of the resized image (timm's ``crop_pct``); 1.0 resizes straight to size.
        crop_mode: ``"center"`` (resize the short side, then crop) or ``"squash"`` (resize both sides, then crop).
    """

    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"


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


def _open_bytes(data: bytes, name: str) -> Image.Image:
    if not data:
        raise ImageError(
            f"{name} is empty (0 bytes). Upload or pass a JPEG, PNG, WebP, GIF, BMP or TIFF image."
        )
    try:
        with _pil_pixel_limit(None):  # the check below, on the header's size, names the size and MAX_PIXELS
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (UnidentifiedImageError, *_DECODE_ERRORS) as err:
        head = data[:8]
        kind = "a PDF document" if head.startswith(b"%PDF") else "not an image the explorer reads"
        raise ImageError(
            f"{name} is {kind} ({len(data)} bytes starting {head!r}). "
            "Use a JPEG, PNG, WebP, GIF, BMP or TIFF image."
        ) from err
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise _bomb_error(name, (width, height))
    return image


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
    array = np.nan_to_num(array.astype(np.float64))
    if array.min() >= 0.0 and array.max() <= 1.0:
        array = array * 255.0
    return np.clip(array + 0.5, 0, 255).astype(np.uint8)


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or array.size == 0:
        raise ImageError(
            f"An array of shape {array.shape} is not an image. Pass (H, W), (H, W, 3) or (H, W, 4), "
            "or a (3, H, W) tensor."
        )
    if array.dtype == np.uint16:
        array = (array.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = _float_to_uint8(array)
    return Image.fromarray(np.ascontiguousarray(array))


def load_image(source: ImageInput, *, name: str | None = None) -> Image.Image:
    """Read one image into an upright RGB ``PIL.Image``.

    Args:
        source: a path, encoded bytes (an upload), a PIL image, a NumPy array (``HW``, ``HWC``; uint8,
            uint16 or float in ``[0, 1]``) or a ``CHW`` tensor.
        name: how to call the image in error messages (a file name); defaults to the path or the type.

    Returns:
        An RGB image, EXIF orientation applied, at most :data:`MAX_SIDE` pixels on its longest side;
        ``info["frames"]`` holds the frame count of an animated image (its first frame is used).

    Raises:
        ImageError: the input is empty, corrupt, not an image, or over :data:`MAX_PIXELS`.

    Example::

        >>> load_image(Path("cat.jpg").read_bytes()).size
        (451, 300)
    """
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        source = _from_array(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            raise ImageError(f"No image file at {path}. Check the path, or upload the image instead.")
        source = path.read_bytes()
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "The uploaded file"
        image = _open_bytes(bytes(source), name)
    elif isinstance(source, Image.Image):
        image = source
    else:
        raise ImageError(
            f"Cannot read an image from {type(source).__name__}. Pass a path, bytes, a PIL image or an array."
        )
    name = name or "The image"
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
        raise ImageError(
            f"{name} is damaged and cannot be decoded ({err}). Re-save or re-export it."
        ) from err
    if max(rgb.size) > MAX_SIDE:
        rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    rgb.info["frames"] = frames
    return rgb


def model_view(image: Image.Image, config: Preprocess) -> Image.Image:
    """The image as the model sees it: resized and cropped to ``config.input_size`` (not normalised).

    Example::

        >>> model_view(load_image("cat.jpg"), Preprocess(input_size=(224, 224))).size
        (224, 224)
    """
    height, width = config.input_size
    resample = _RESAMPLE.get(config.interpolation, Image.Resampling.BICUBIC)
    scale_h, scale_w = (math.floor(height / config.crop_pct), math.floor(width / config.crop_pct))
    if config.crop_mode == "squash":
        size = (scale_w, scale_h)
    else:
        factor = max(scale_h / image.height, scale_w / image.width)
        size = (max(width, round(image.width * factor)), max(height, round(image.height * factor)))
    left = (size[0] - width) // 2
    top = (size[1] - height) // 2
    if size[0] * size[1] <= 4 * width * height:
        return image.resize(size, resample, reducing_gap=3.0).crop((left, top, left + width, top + height))
    # an extreme aspect ratio (a 1x4096 strip would first become 256x1048576): resize only what the crop keeps
    sx, sy = image.width / size[0], image.height / size[1]
    box = (left * sx, top * sy, (left + width) * sx, (top + height) * sy)
    return image.resize((width, height), resample, box=box, reducing_gap=3.0)


def preprocess(
    images: Iterable[ImageInput] | ImageInput,
    config: Preprocess,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Read, resize, crop and normalise images into one ``(B, 3, H, W)`` batch on ``device``.

    Example::

        >>> preprocess(["a.jpg", "b.png"], Preprocess(), device="cpu").shape
        torch.Size([2, 3, 224, 224])
    """
    if isinstance(
        images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray, torch.Tensor)
    ):
        images = [images]
    views = [model_view(load_image(image), config) for image in images]
    if not views:
        raise ImageError("No images given. Pass at least one image, or use explorer.sample_images().")
    batch = torch.from_numpy(np.stack([np.asarray(view) for view in views])).to(device)
    batch = batch.permute(0, 3, 1, 2).to(dtype).div_(255.0)
    mean = torch.tensor(config.mean, device=device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=device, dtype=dtype).view(1, 3, 1, 1)
    return batch.sub_(mean).div_(std)


def sample_images(names: Sequence[str] = SAMPLE_NAMES) -> dict[str, Image.Image]:
    """Sample photos that ship inside scikit-image (no network needed), as RGB images.

    Example::

        >>> sorted(sample_images(["chelsea", "coffee"]))
        ['chelsea', 'coffee']
    """
    from skimage import data

    samples = {}
    for name in names:
        loader = getattr(data, name, None)
        if loader is None:
            raise ImageError(f'No sample image "{name}". Choose from: {", ".join(SAMPLE_NAMES)}.')
        samples[name] = load_image(loader(), name=name)
    return samples

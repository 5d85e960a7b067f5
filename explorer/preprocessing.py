"""Preprocessing: the checkpoint's own transform behind one interface (:class:`Preprocess`, filled in by each
source), and the two calls built on it: :func:`preprocess` (images to a batch) and :func:`model_view` (the image
as the model saw it).

Example::

    >>> preprocess([cat], bb.preprocess).shape
    torch.Size([1, 3, 224, 224])
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from . import images as image_input
from ._args import shown
from .errors import ImageError
from .images import ImageInput, load_image

__all__ = ["Preprocess", "model_view", "preprocess"]


class Preprocess:
    """How a checkpoint expects its input: the source's own transform, behind one interface.

    Each source fills it in with its library's own preprocessing (timm's ``create_transform``, transformers'
    image processor); explorer adds only the size and header checks of :func:`load_image`. Subclasses live in
    the source modules (:mod:`explorer.backbones`).

    Attributes:
        input_size: ``(height, width)`` of the input a square image becomes (the checkpoint's nominal size; a
            processor that keeps the aspect ratio gives other sizes to other images).
        settings: the settings that decide the result, JSON-able (cache keys, reports).
        fixed_size: every image becomes ``input_size``; False for a processor that keeps the aspect ratio or pads
            (DETR's), whose maps and overlays follow each image's own size.

    Example::

        >>> bb.preprocess.pixel_values([cat]).shape
        torch.Size([1, 3, 224, 224])
        >>> bb.preprocess.view(cat).size       # the image as the model saw it
        (224, 224)
    """

    input_size: tuple[int, int]
    settings: dict
    fixed_size: bool = True

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The float ``(B, 3, H, W)`` batch the source's own transform makes of RGB images.

        Raises:
            ImageError: ``images`` is not a non-empty list of RGB PIL images, or one is over :data:`~explorer.images.MAX_ASPECT`.
        """
        if isinstance(images, Image.Image):
            images = [images]
        if not isinstance(images, (list, tuple)) or not images:
            raise ImageError(
                f"pixel_values() takes a non-empty list of RGB PIL images, got {shown(images)}. Read them with "
                "explorer.load_image(...), or use explorer.preprocess(paths, bb.preprocess)."
            )
        return self._pixel_values([_rgb("pixel_values()", image) for image in images])

    def view(self, image: Image.Image) -> Image.Image:
        """The RGB image as the model saw it: the transform's geometric steps only (no normalisation).

        Raises:
            ImageError: ``image`` is not an RGB PIL image, or its aspect ratio is over :data:`~explorer.images.MAX_ASPECT`.
        """
        return self._view(_rgb("view()", image))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """The transform's per-pixel steps on a float ``(B, 3, H, W)`` batch of :meth:`view` images in
        ``[0, 1]``, differentiably (for methods that make the input themselves: feature visualisation).

        Raises:
            ImageError: ``pixels`` is not a finite floating-point ``(B, 3, H, W)`` tensor with ``B, H, W >= 1``.
        """
        fix = "pass a float (B, 3, H, W) tensor of view() images scaled to [0, 1]."
        if not isinstance(pixels, torch.Tensor):
            raise ImageError(f"normalize() got {shown(pixels)}; {fix}")
        if not pixels.is_floating_point() or pixels.ndim != 4 or pixels.shape[1] != 3 or not pixels.numel():
            raise ImageError(f"normalize() got a {pixels.dtype} tensor of shape {tuple(pixels.shape)}; {fix}")
        if not bool(torch.isfinite(pixels.detach()).all()):
            raise ImageError(f"normalize() got NaN or infinite values; {fix}")
        return self._normalize(pixels)

    def _pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        raise NotImplementedError  # each source's own transform

    def _view(self, image: Image.Image) -> Image.Image:
        raise NotImplementedError

    def _normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings})"


def model_view(image: ImageInput, config: Preprocess) -> Image.Image:
    """The image as the model sees it: the source's transform without its normalisation (see :class:`Preprocess`).

    Example::

        >>> model_view(cat, bb.preprocess).size
        (224, 224)
    """
    if not isinstance(config, Preprocess):
        raise ImageError(
            f"model_view() takes the backbone's Preprocess (bb.preprocess) as config, got {type(config).__name__}."
        )
    return config.view(_checked(image if isinstance(image, Image.Image) else load_image(image)))


def _rgb(call: str, image: object) -> Image.Image:
    """``image`` when it is an RGB PIL image within :data:`~explorer.images.MAX_ASPECT`, else an :class:`ImageError` naming the fix."""
    if not isinstance(image, Image.Image):
        raise ImageError(
            f"{call} takes RGB PIL images, got {shown(image)}. Read images with explorer.load_image(...) first."
        )
    if image.mode != "RGB" or not image.width or not image.height:
        raise ImageError(
            f"{call} takes RGB images, got a {image.width}x{image.height} {image.mode} image. Convert it with "
            "explorer.load_image(image)."
        )
    return _checked(image)


def _checked(image: Image.Image) -> Image.Image:
    """``image``, or an :class:`ImageError` when its aspect ratio is over :data:`~explorer.images.MAX_ASPECT`."""
    width, height = image.size
    if max(width, height) > image_input.MAX_ASPECT * min(width, height):
        raise ImageError(
            f"The image is {width}x{height}, an aspect ratio over image_input.MAX_ASPECT = {image_input.MAX_ASPECT}:1; resizing it as "
            "the model's preprocessing does would take a very long image. Crop it to the part to look at."
        )
    return image


def preprocess(
    images: Iterable[ImageInput] | ImageInput,
    config: Preprocess,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Read images (:func:`load_image`'s checks) and run the source's own transform: one ``(B, 3, H, W)`` batch.

    Example::

        >>> preprocess([cat, photos["coffee"]], bb.preprocess, device="cpu").shape
        torch.Size([2, 3, 224, 224])
    """
    if isinstance(
        images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray, torch.Tensor)
    ) or not isinstance(images, Iterable):
        images = [images]  # one image; anything else that is not a list is refused by load_image
    pictures = [_checked(load_image(image)) for image in images]
    if not pictures:
        raise ImageError("No images given. Pass at least one image, or use explorer.sample_images().")
    return config.pixel_values(pictures).to(device=device, dtype=dtype)

"""The image feature visualisation optimises, and the random transforms it is seen through: Lucid's Fourier
parameterisation (a ``1/f``-scaled spectrum in a decorrelated colour space, squashed by a sigmoid), MaCo's
phase-only one (Fel et al., 2023, with a magnitude spectrum taken from the user's own images or the sample photos,
never downloaded), and Lucid's pad, jitter, scale and rotation.

Example::

    >>> param = Parameterisation("fft", batch=2, size=64, generator=torch.Generator().manual_seed(0))
    >>> param().shape
    torch.Size([2, 3, 64, 64])
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ImageOps
from torch import nn

from ._args import shown, whole
from .errors import InvalidArgumentError
from .images import ImageInput, load_image, sample_images
from .vocabulary import VIS_METHODS

__all__ = [
    "COLOR_CORRELATION",
    "COLOR_NORMALIZED",
    "METHODS",
    "MethodT",
    "Parameterisation",
    "TRANSFORMS",
    "fft_image",
    "fft_scale",
    "is_vit",
    "maco_image",
    "magnitude_of",
    "magnitude_spectrum",
    "random_transform",
    "to_rgb",
]

MethodT = Literal["fft", "maco"]
METHODS = VIS_METHODS
"""``method=`` names: Lucid's Fourier parameterisation, or MaCo's phase-only one."""

COLOR_CORRELATION = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)
"""Lucid's square root of ImageNet's colour covariance (``color_correlation_svd_sqrt``)."""

COLOR_NORMALIZED = COLOR_CORRELATION / COLOR_CORRELATION.norm(dim=0).amax()
"""Lucid's ``color_correlation_normalized``: the matrix scaled so its largest column norm is 1."""

_LUCID = {"pad": 12, "jitter": 8, "scales": [1 + (i - 5) / 50 for i in range(11)], "angles": 10, "late": 4}
_STRONG = {"pad": 16, "jitter": 16, "scales": [0.8 + i / 25 for i in range(11)], "angles": 20, "late": 8}
TRANSFORMS = {"lucid": _LUCID, "strong": _STRONG}
"""``transforms=`` presets: Lucid's ``standard_transforms``, and a stronger set for ViTs."""

_FFT_SD = 0.01  # Lucid's initial spectrum scale
_MAGIC = 4.0  # Lucid's divisor after the inverse FFT (less saturation)

# ----------------------------------------------------------------------------------------------- parameterisation


def _freqs(height: int, width: int) -> torch.Tensor:
    """``sqrt(fx^2 + fy^2)`` of the ``(height, width // 2 + 1)`` bins of a real 2-D FFT."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(width, dtype=torch.float64)[None, :]
    return (fx * fx + fy * fy).sqrt()


def fft_scale(height: int, width: int, decay_power: float = 1.0) -> torch.Tensor:
    """Lucid's ``1/f`` spectrum scale: ``1 / max(f, 1 / max(h, w)) ** decay_power``, shape ``(h, w // 2 + 1)``."""
    return (1.0 / _freqs(height, width).clamp_min(1.0 / max(height, width)) ** decay_power).float()


def fft_image(spectrum: torch.Tensor, scale: torch.Tensor, size: int) -> torch.Tensor:
    """Lucid's ``fft_image``: a ``(B, 3, size, size)`` image (decorrelated colours, unbounded) from a
    ``(B, 3, size, size // 2 + 1, 2)`` real/imaginary spectrum."""
    complex_spectrum = torch.view_as_complex(spectrum) * scale  # a real factor: the same products, vectorised
    return torch.fft.irfftn(complex_spectrum, s=(size, size), norm="ortho") / _MAGIC


def _standardize(tensor: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit standard deviation per batch element (horama's ``standardize``, one image each)."""
    flat = tensor.flatten(1)
    mean, std = flat.mean(1), flat.std(1)
    shape = (-1,) + (1,) * (tensor.ndim - 1)
    return (tensor - mean.view(shape)) / (std.view(shape) + 1e-4)


def maco_image(phase: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """MaCo's image (decorrelated colours, standardised) from a ``(B, 3, h, w // 2 + 1)`` phase and a fixed
    ``(3, h, w // 2 + 1)`` magnitude, as horama's ``maco_preconditioner`` before its colour step."""
    angle = _standardize(phase)
    spectrum = torch.complex(torch.cos(angle) * magnitude, torch.sin(angle) * magnitude)
    return _standardize(torch.fft.irfft2(spectrum, s=(phase.shape[-2], phase.shape[-2])))


def to_rgb(decorrelated: torch.Tensor) -> torch.Tensor:
    """Lucid's ``to_valid_rgb(decorrelate=True)``: recorrelate the colours, then a sigmoid into ``[0, 1]``."""
    color = COLOR_NORMALIZED.to(decorrelated.device, decorrelated.dtype)
    # (3, 3) @ (B, 3, H * W): the einsum's products, with a contiguous result (einsum permutes a batch of several)
    return torch.sigmoid(torch.matmul(color, decorrelated.flatten(2)).view_as(decorrelated))


def magnitude_spectrum(images: Sequence[ImageInput] | None = None, size: int = 224) -> torch.Tensor:
    """MaCo's fixed magnitude: the mean ``|rfft2|`` of images in Lucid's decorrelated colour space.

    Args:
        images: the user's own images (paths, PIL, arrays, bytes); None: :func:`explorer.sample_images`.
        size: the side of the square images that will be optimised.

    Returns:
        A ``(3, size, size // 2 + 1)`` float tensor on the CPU.

    Example::

        >>> magnitude_spectrum(size=128).shape
        torch.Size([3, 128, 65])
    """
    size = whole("size", size, minimum=16, maximum=1024)
    if images is not None and (not isinstance(images, Sequence) or isinstance(images, (str, bytes))):
        raise InvalidArgumentError(
            f"images={shown(images)} ({type(images).__name__}); pass a list of images, or None for the sample photos."
        )
    photos = list(sample_images().values()) if images is None else [load_image(i) for i in images]
    if not photos:
        raise InvalidArgumentError("spectrum=[] holds no image; pass images, or None for the sample photos.")
    pixels = (
        torch.from_numpy(np.stack([np.asarray(ImageOps.fit(p, (size, size))) for p in photos])).float() / 255
    )
    pixels = pixels.permute(0, 3, 1, 2)
    pixels = pixels - pixels.mean((2, 3), keepdim=True)
    decorrelated = torch.einsum("bchw,dc->bdhw", pixels, torch.linalg.inv(COLOR_NORMALIZED))
    return torch.fft.rfft2(decorrelated).abs().mean(0)


class Parameterisation(nn.Module):
    """The optimised tensor (a spectrum, or MaCo's phase) and the function from it to ``[0, 1]`` RGB images; every
    image of the batch starts from the same seeded noise."""

    def __init__(
        self,
        method: str,
        batch: int,
        size: int,
        generator: torch.Generator,
        magnitude: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.method, self.size = method, size
        bins = (3, size, size // 2 + 1)
        if method == "fft":
            start = torch.randn((1, *bins, 2), generator=generator) * _FFT_SD
            self.register_buffer("scale", fft_scale(size, size))
        else:
            start = torch.randn((1, *bins), generator=generator)
            self.register_buffer("magnitude", magnitude)
        # every image of a batch starts from the same noise: a batch equals one run per objective
        self.values = nn.Parameter(start.repeat(batch, *([1] * (start.ndim - 1))))

    def forward(self) -> torch.Tensor:
        if self.method == "fft":
            return to_rgb(fft_image(self.values, self.scale, self.size))
        return to_rgb(maco_image(self.values, self.magnitude))


# ----------------------------------------------------------------------------------------------- transforms


def _draw(generator: torch.Generator, high: int) -> int:
    return int(torch.randint(high, (1,), generator=generator))


def random_transform(images: torch.Tensor, preset: dict, generator: torch.Generator) -> torch.Tensor:
    """Lucid's transforms (a :data:`TRANSFORMS` preset), drawn once for the whole batch: pad with grey, jitter,
    scale, rotate, jitter, then back to the optimised size (so a ViT gets the size it was built for).

    The chain is one affine map from output to input coordinates, so it is one ``grid_sample`` of the batch
    straight at the optimised size (grey outside the image), not a pad, crops, a resampling and a resize.
    """
    size = images.shape[-1]
    pad, jitter, late = preset["pad"], preset["jitter"], preset["late"]
    dy, dx = _draw(generator, jitter), _draw(generator, jitter)
    scale = preset["scales"][_draw(generator, len(preset["scales"]))]
    angles = list(range(-preset["angles"], preset["angles"] + 1)) + 5 * [0]
    angle = np.deg2rad(angles[_draw(generator, len(angles))])
    ey, ex = _draw(generator, late), _draw(generator, late)
    # sides after each crop; normalised coordinates (align_corners=False) composed from the resize back:
    # v -> the late crop in the rotated image -> rotation and scale -> the jitter crop in the padded image
    jittered = size + 2 * pad - jitter + 1
    cropped = jittered - late + 1
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale
    late_shift = (cropped + 2 * np.array([ex, ey])) / jittered - 1
    jitter_shift = (jittered + 2 * (np.array([dx, dy]) - pad)) / size - 1
    linear = rotation * cropped / size
    offset = rotation @ late_shift * jittered / size + jitter_shift
    theta = torch.tensor(np.column_stack([linear, offset]), dtype=images.dtype, device=images.device)
    # one grid serves the whole batch (the same transform for every image)
    grid = F.affine_grid(theta[None], [1, *images.shape[1:]], align_corners=False)
    grid = grid.expand(images.shape[0], -1, -1, -1)
    # grey (0.5) outside the image: sample the offset from grey with zeros outside
    grey = F.grid_sample(images - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return grey + 0.5


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` has a patch embedding (timm's ``patch_embed``, transformers' ``patch_embeddings``)."""
    return any(name.endswith(("patch_embed", "patch_embeddings")) for name, _ in model.named_modules())


@functools.lru_cache(maxsize=4)
def _sample_magnitude(size: int) -> torch.Tensor:
    return magnitude_spectrum(None, size)


def magnitude_of(spectrum: Sequence[ImageInput] | torch.Tensor | None, size: int) -> torch.Tensor:
    """MaCo's fixed ``(3, size, size // 2 + 1)`` magnitude from ``visualize``'s ``spectrum=``: images, a tensor from
    :func:`magnitude_spectrum` (checked), or None for the sample photos (computed once per size)."""
    if spectrum is None:
        return _sample_magnitude(size)
    if isinstance(spectrum, torch.Tensor) and spectrum.ndim == 3:
        expected = (3, size, size // 2 + 1)
        if tuple(spectrum.shape) != expected or not torch.isfinite(spectrum).all() or (spectrum < 0).any():
            raise InvalidArgumentError(
                f"spectrum has shape {tuple(spectrum.shape)}; for size={size} pass a {expected} tensor of finite, "
                f"non-negative magnitudes (explorer.magnitude_spectrum(images, size={size})), or images."
            )
        return spectrum.detach().float().cpu()
    if isinstance(spectrum, (list, tuple)):
        return magnitude_spectrum(spectrum, size)
    raise InvalidArgumentError(
        f"spectrum={shown(spectrum)} ({type(spectrum).__name__}); pass a list of images, a magnitude tensor from "
        "explorer.magnitude_spectrum(), or None for the sample photos."
    )

"""Feature visualisation by optimisation: the image a channel, a direction or a class responds to most.

The Lucid recipe (Olah et al., Distill 2017; its PyTorch port Lucent), written here in one small module because
none of the libraries fits (Lucent pins ``kornia<=0.4.1``, which does not install beside this torch; horama
optimises one image at a time from the global random state and downloads MaCo's spectrum; torch-dreams needs
``mkl`` and OpenCV): the image is a Fourier spectrum scaled by ``1/f`` in a decorrelated colour space (Lucid's
colour correlation matrix), squashed into ``[0, 1]`` by a sigmoid; each step draws Lucid's random pad, jitter,
scale and rotation, normalises the pixels with the backbone's own mean and standard deviation, and takes an Adam
step (learning rate 0.05) up the objective. ``method="maco"`` (Fel et al., 2023) optimises only the phase of the
spectrum and keeps its magnitude fixed, taken from the user's own images or the sample photos (never downloaded).

The objective is read by a forward hook on the stage's (or layer's) module, which ends the pass there: layers
after it never run. A list of channels (or directions, or classes) is one batch; each image starts from the same
seeded noise and sees the same transforms, and the loss is a sum over the batch, so a batch gives the images that
one run per channel would give (up to float rounding in batched convolutions). Grey images at deep layers (every
ReLU unit before the objective dead on the starting noise, so no gradient) are avoided with Lucid's redirected
ReLU gradient.

What the picture is: an image that drives the channel hard, under small shifts, zooms and rotations. It is not
what the channel "means", and it lies far outside the photos the model was trained on; read it beside the
channel's dataset exemplars (``explorer.scan``). On random weights it shows nothing but the architecture's
biases.

ViTs: stages (block outputs) and MLP hidden units (``blocks.6.mlp.fc1``, ``blocks.6.mlp.act``) work; the token
grid is taken from the model's own prefix-token count. Stronger transforms are used for them (``transforms=
"auto"``), against the high-frequency patterns ViTs otherwise produce. Queries, keys and values (``attn.qkv``)
are not features of a location in the usual sense and their pictures are hard to read.

Example::

    >>> bb = explorer.load_backbone("default")
    >>> v = explorer.visualize(bb, stage="blocks.4", channel=17, steps=256, size=128)
    >>> v.image.size, v.activation > v.history[0]
    ((128, 128), True)
    >>> [r.activation for r in explorer.visualize(bb, stage="blocks.4", channel=[3, 5], steps=64, size=128)]
    [..., ...]
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

from ._args import real, shown, whole
from .errors import FeatureVisError, GradientError, InvalidArgumentError, LayerNotFoundError
from .hooks import LayerLayout, resolve_layers, to_nchw
from .images import ImageInput, load_image, sample_images

__all__ = [
    "FeatureVis",
    "visualize",
    "magnitude_spectrum",
    "fft_scale",
    "fft_image",
    "maco_image",
    "to_rgb",
    "METHODS",
    "TRANSFORMS",
    "COLOR_CORRELATION",
]

_log = logging.getLogger(__name__)

MethodT = Literal["fft", "maco"]
METHODS = ("fft", "maco")
"""``method=`` names: Lucid's Fourier parameterisation, or MaCo's phase-only one."""

ChannelT = int | Sequence[int]
"""One channel index, or a list of them (optimised in one batch)."""

COLOR_CORRELATION = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)
"""Lucid's square root of ImageNet's colour covariance (``color_correlation_svd_sqrt``)."""

_COLOR = COLOR_CORRELATION / COLOR_CORRELATION.norm(dim=0).amax()  # Lucid's color_correlation_normalized

_LUCID = {"pad": 12, "jitter": 8, "scales": [1 + (i - 5) / 50 for i in range(11)], "angles": 10, "late": 4}
_STRONG = {"pad": 16, "jitter": 16, "scales": [0.8 + i / 25 for i in range(11)], "angles": 20, "late": 8}
TRANSFORMS = {"lucid": _LUCID, "strong": _STRONG}
"""``transforms=`` presets: Lucid's ``standard_transforms``, and a stronger set for ViTs."""

_FFT_SD = 0.01  # Lucid's initial spectrum scale
_MAGIC = 4.0  # Lucid's divisor after the inverse FFT (less saturation)


@dataclass(frozen=True)
class FeatureVis:
    """One optimised image.

    Attributes:
        image: the optimised input, PIL RGB, ``size`` x ``size``.
        activation: the objective on ``image`` as the model sees it (8-bit pixels, normalised with the backbone's
            mean and std, no transform): a channel's mean activation, a direction's mean projection, or a logit.
        history: the objective at every step, on that step's transformed image (what was optimised).
        stage: the stage or layer (``"head"`` for a class logit).
        objective: what was maximised: ``"channel 17"``, ``"direction 0"``, ``"class 281 (tabby, tabby cat)"``.
        method: ``"fft"`` or ``"maco"``.
        seed: the seed it was made with.
        weights: where the backbone's weights came from; ``"random"`` means the picture shows nothing learnt.
    """

    image: Image.Image
    activation: float
    history: list[float] = field(repr=False)
    stage: str
    objective: str
    method: str
    seed: int
    weights: str


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
    complex_spectrum = torch.view_as_complex(spectrum * scale[..., None])
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
    color = _COLOR.to(decorrelated.device, decorrelated.dtype)
    return torch.sigmoid(torch.einsum("bchw,dc->bdhw", decorrelated, color))


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
    decorrelated = torch.einsum("bchw,dc->bdhw", pixels, torch.linalg.inv(_COLOR))
    return torch.fft.rfft2(decorrelated).abs().mean(0)


class _Parameterisation(nn.Module):
    """The optimised tensor and the function from it to ``[0, 1]`` RGB images."""

    def __init__(self, method: str, batch: int, size: int, generator: torch.Generator, magnitude=None):
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


def _transform(images: torch.Tensor, preset: dict, generator: torch.Generator) -> torch.Tensor:
    """Lucid's transforms, drawn once for the whole batch: pad with grey, jitter, scale, rotate, jitter; then
    back to the optimised size (so a ViT gets the size it was built for)."""
    size = images.shape[-1]
    pad, jitter, late = preset["pad"], preset["jitter"], preset["late"]
    out = F.pad(images, [pad] * 4, value=0.5)
    for shift in (jitter, None, late):
        if shift is None:  # scale and rotation in one resampling
            scale = preset["scales"][_draw(generator, len(preset["scales"]))]
            angles = list(range(-preset["angles"], preset["angles"] + 1)) + 5 * [0]
            angle = np.deg2rad(angles[_draw(generator, len(angles))])
            cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
            theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=out.dtype, device=out.device)
            grid = F.affine_grid(theta.expand(out.shape[0], 2, 3), list(out.shape), align_corners=False)
            out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
            continue
        dy, dx = _draw(generator, shift), _draw(generator, shift)
        out = out[..., dy : out.shape[-2] - shift + 1 + dy, dx : out.shape[-1] - shift + 1 + dx]
    return F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


def _is_vit(model: nn.Module) -> bool:
    return any(name.endswith(("patch_embed", "patch_embeddings")) for name, _ in model.named_modules())


# ----------------------------------------------------------------------------------------------- objectives


class _Stop(Exception):
    """Ends the forward pass once the objective's module has run."""


@dataclass
class _Objective:
    """Where the objective is read and how: per batch element, a channel, a direction or a class."""

    stage: str  # stage or layer name, "head" for logits
    module: str | None  # module path to hook; None reads the model's output (logits)
    layout: LayerLayout
    labels: list[str]
    channels: torch.Tensor | None = None  # (B,) channel indices
    directions: torch.Tensor | None = None  # (B, C)
    classes: torch.Tensor | None = None  # (B,)

    def score(self, output: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
        """``(B,)`` objective values from the hooked module's output (or the logits)."""
        if self.classes is not None:
            logits = _logits(output)
            return logits.gather(1, self.classes[:, None].to(logits.device))[:, 0]
        fmap = to_nchw(output, input_hw, self.layout).float()
        if self.channels is not None:
            index = self.channels.to(fmap.device)
            picked = fmap[torch.arange(fmap.shape[0], device=fmap.device), index]
            return picked.flatten(1).mean(1)
        directions = self.directions.to(fmap.device, fmap.dtype)
        return torch.einsum("bchw,bc->bhw", fmap, directions).flatten(1).mean(1)


def _logits(output: object) -> torch.Tensor:
    logits = getattr(output, "logits", output)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return logits


def _stage_module(bb, stage: str | None) -> tuple[str, str, LayerLayout]:
    """``(name, module path, layout)`` of a stage name or any :func:`list_layers` name."""
    by_name = {s.name: s for s in bb.all_stages}
    stage = bb.stage_names[-1] if stage is None else stage
    if not isinstance(stage, str):
        raise InvalidArgumentError(
            f"stage={shown(stage)}; pass a stage name ({', '.join(bb.stage_names)}) or a layer name from "
            "explorer.list_layers(bb)."
        )
    if stage in by_name and by_name[stage].module:
        return stage, by_name[stage].module, bb.layout(stage)
    try:
        resolve_layers(bb.model, [stage])
    except LayerNotFoundError as err:
        raise LayerNotFoundError(f"{err} Stages: {', '.join(bb.stage_names)}.") from None
    return stage, stage, bb.layout(stage)


def _channels_of(bb, name: str, size: int) -> int:
    """The channels of the module's output, from one forward pass on zeros (any layer, any layout)."""
    zeros = torch.zeros(1, 3, size, size, device=bb.device, dtype=bb.dtype)
    fmap = bb.capture(zeros, layers=[name])[name]
    return int(fmap.shape[1])


def _as_list(value, name: str) -> tuple[list, bool]:
    """``(items, batched)``: a single value becomes one item; a list or tuple is a batch."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise InvalidArgumentError(f"{name}=[] is empty; pass at least one.")
        return list(value), True
    return [value], False


def _objective(bb, stage, channel, direction, target, size) -> tuple[_Objective, bool]:
    given = [
        n for n, v in (("channel", channel), ("direction", direction), ("target", target)) if v is not None
    ]
    if len(given) != 1:
        raise InvalidArgumentError(
            f"Pass exactly one objective: channel= (a channel index or a list), direction= (a (C,) vector or a "
            f"(K, C) array) or target= (a class of the head); got {', '.join(given) or 'none'}."
        )
    if target is not None:
        return _class_objective(bb, stage, target)
    name, module, layout = _stage_module(bb, stage)
    channels = _channels_of(bb, name, size)
    if channel is not None:
        items, batched = _as_list(channel, "channel")
        for item in items:
            whole("channel", item, maximum=channels - 1, hint=f" {name} has {channels} channels.")
        labels = [f"channel {int(c)}" for c in items]
        return _Objective(
            name, module, layout, labels, channels=torch.tensor([int(c) for c in items])
        ), batched
    try:
        vectors = torch.as_tensor(np.asarray(direction, dtype=np.float32))
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"direction={shown(direction)} ({type(direction).__name__}); pass a ({channels},) vector or a "
            f"(K, {channels}) array of directions in {name}'s channel space (a concepts basis row)."
        ) from None
    batched = vectors.ndim == 2
    if vectors.ndim not in (1, 2) or vectors.shape[-1] != channels or vectors.numel() == 0:
        raise InvalidArgumentError(
            f"direction has shape {tuple(vectors.shape)}; {name} has {channels} channels, so pass a ({channels},) "
            f"vector or a (K, {channels}) array."
        )
    if not torch.isfinite(vectors).all() or bool((vectors.abs().amax(-1) == 0).any()):
        raise InvalidArgumentError(
            "direction holds NaN, inf or an all-zero vector; pass finite, non-zero ones."
        )
    vectors = vectors.reshape(-1, channels)
    labels = [f"direction {i}" for i in range(len(vectors))]
    return _Objective(name, module, layout, labels, directions=vectors), batched


def _class_objective(bb, stage, target) -> tuple[_Objective, bool]:
    from .cam_targets import class_index

    names = bb.class_names
    num_classes = len(names)
    if not num_classes:
        raise FeatureVisError(
            f"{bb.spec} has no classifier head, so target= names no class. Visualise a channel (channel=) or a "
            "direction (direction=) of a stage instead."
        )
    if stage is not None:
        raise InvalidArgumentError(
            f"stage={stage!r} with target=: a class logit is read from the head. Drop stage=, or pass channel=."
        )
    items, batched = _as_list(target, "target")
    indices = []
    for item in items:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            indices.append(
                whole("target", item, maximum=num_classes - 1, hint=" (a class index of the head)")
            )
        elif isinstance(item, str):
            indices.append(class_index(item, names))
        else:
            raise InvalidArgumentError(
                f"target={shown(item)} ({type(item).__name__}); pass a class index or a class name."
            )
    labels = [f"class {i} ({names[i]})" for i in indices]
    return _Objective("head", None, LayerLayout(), labels, classes=torch.tensor(indices)), batched


# ----------------------------------------------------------------------------------------------- running


def _score(bb, objective: _Objective, pixels: torch.Tensor) -> torch.Tensor:
    """Run the model on normalised ``pixels`` and return the ``(B,)`` objective; the pass stops at the module."""
    if objective.module is None:
        return objective.score(bb.model(pixels), tuple(pixels.shape[-2:]))
    found: list[torch.Tensor] = []

    def hook(_module, _args, output):
        found.append(objective.score(output, tuple(pixels.shape[-2:])))
        raise _Stop

    handles = []
    try:
        handles.append(
            resolve_layers(bb.model, [objective.module])[objective.module].register_forward_hook(hook)
        )
        bb.model(pixels)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if not found:
        raise FeatureVisError(
            f"The forward pass never ran {objective.stage} as a module. Pick a stage, or a layer from "
            "explorer.list_layers(bb) that the model calls."
        )
    return found[0]


class _RedirectedReLU(torch.autograd.Function):
    """Lucid's redirected ReLU gradient (``redirected_relu_grad``): an image on which the true gradient is zero
    everywhere (every unit dead, as on a grey start before a deep ReLU) gets instead the gradient with only the
    part blocked that would push a negative input lower; images with any true gradient keep the true one."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, upper: float | None) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.upper = upper
        return x.clamp(0, upper)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        upper = ctx.upper
        passing = (x > 0) if upper is None else (x > 0) & (x < upper)
        true = grad * passing
        # descent moves x by -grad: grad > 0 lowers x, grad < 0 raises it
        blocked = (x < 0) & (grad > 0)
        if upper is not None:
            blocked |= (x > upper) & (grad < 0)
        redirected = grad.masked_fill(blocked, 0)
        alive = true.flatten(1).abs().amax(1) > 0
        return torch.where(alive.view(-1, *[1] * (grad.ndim - 1)), true, redirected), None


@contextmanager
def _redirected_relus(model: nn.Module) -> Iterator[None]:
    """Give every ``nn.ReLU`` and ``nn.ReLU6`` module of ``model`` the redirected gradient inside the block."""
    inputs: dict[nn.Module, torch.Tensor] = {}

    def keep_input(module, args):
        inputs[module] = args[0].clone()  # before an in-place ReLU overwrites it

    def redirect(module, _args, _output):
        return _RedirectedReLU.apply(inputs.pop(module), 6.0 if isinstance(module, nn.ReLU6) else None)

    handles = []
    try:
        for module in model.modules():
            if isinstance(module, (nn.ReLU, nn.ReLU6)):
                handles.append(module.register_forward_pre_hook(keep_input))
                handles.append(module.register_forward_hook(redirect))
        yield
    finally:
        for handle in handles:
            handle.remove()
        inputs.clear()


def _progress(steps: int, progress: bool | Callable[[int, int], None]):
    if callable(progress):
        return progress
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, unit="step", disable=not progress, desc="visualize")

    def update(done: int, _total: int) -> None:
        bar.update(1)
        if done == steps:
            bar.close()

    return update


@functools.lru_cache(maxsize=4)
def _sample_magnitude(size: int) -> torch.Tensor:
    return magnitude_spectrum(None, size)


def _magnitude(spectrum, size: int) -> torch.Tensor:
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


def _check_model(bb) -> None:
    if not hasattr(bb, "model") or not hasattr(bb, "all_stages"):
        raise InvalidArgumentError(
            f"visualize() takes a Backbone, not {type(bb).__name__}; load one with explorer.load_backbone(spec)."
        )
    training = [name or type(bb.model).__name__ for name, m in bb.model.named_modules() if m.training]
    if training:
        raise FeatureVisError(
            f"{bb.spec} is in train mode ({training[0]} and {len(training) - 1} more modules): batch norm would use "
            "the optimised images' own statistics and dropout would change the objective at every step. Call "
            "bb.model.eval() first."
        )
    if any(p.is_inference() for p in bb.model.parameters()):
        raise GradientError(
            "visualize() needs gradients, but the weights were made under torch.inference_mode(). Load the "
            "backbone outside inference mode."
        )


def visualize(
    bb,
    stage: str | None = None,
    channel: ChannelT | None = None,
    *,
    direction: torch.Tensor | np.ndarray | Sequence[float] | None = None,
    target: int | str | Sequence[int | str] | None = None,
    steps: int = 256,
    size: int = 224,
    seed: int = 0,
    method: MethodT = "fft",
    lr: float = 0.05,
    spectrum: Sequence[ImageInput] | torch.Tensor | None = None,
    transforms: Literal["auto", "lucid", "strong"] = "auto",
    redirect_relu: bool = True,
    progress: bool | Callable[[int, int], None] = False,
) -> FeatureVis | list[FeatureVis]:
    """The image that a channel (or a direction, or a class) of a backbone responds to most, by optimisation.

    Args:
        bb: a :class:`~explorer.Backbone` in eval mode (train mode is refused).
        stage: a stage name (``bb.stage_names``) or any layer from :func:`~explorer.list_layers`; None: the last
            stage. Not used with ``target=``.
        channel: a channel index of the stage, or a list of them (one batch, one image each).
        direction: a ``(C,)`` vector in the stage's channel space (a concept, ``concepts(...).basis[i]``), or a
            ``(K, C)`` array of them; the objective is the mean projection over locations.
        target: a class index or name of the model's head (``281``, ``"tabby cat"``), or a list; the logit is
            maximised. A backbone without a head raises :class:`~explorer.FeatureVisError`.
        steps: optimisation steps (Lucid uses 512).
        size: side of the square image, in pixels (Lucid uses 128, then upsamples for display).
        seed: seeds the starting noise and every transform drawn; the same seed gives the same image.
        method: ``"fft"`` (Lucid: the whole spectrum, ``1/f`` scaled) or ``"maco"`` (the phase only, with the
            magnitude of ``spectrum``).
        lr: Adam's learning rate (Lucid's 0.05).
        spectrum: for ``"maco"``: images whose mean magnitude spectrum is kept, or a ``(3, size, size // 2 + 1)``
            tensor from :func:`magnitude_spectrum`; None: the sample photos.
        transforms: ``"lucid"`` (pad 12, jitter 8, scale 0.9-1.1, rotate +-10 degrees, jitter 4), ``"strong"``
            (twice that, for ViTs), or ``"auto"``: strong for models with a patch embedding.
        redirect_relu: Lucid's fix for grey images at deep layers: while optimising, an image on which every
            ``nn.ReLU``/``nn.ReLU6`` unit before the objective is dead gets a gradient through them anyway (only
            the part that would push their inputs lower is blocked). Images with any true gradient are unchanged.
            Models that call ``F.relu`` instead of a module are not reached.
        progress: True draws a progress bar (tqdm); a callable gets ``(done, steps)`` after every step.

    Returns:
        A :class:`FeatureVis` for one channel, direction or class; a list of them, in order, for a list.

    Raises:
        FeatureVisError: train mode, a class target without a head, a layer the forward pass never runs.
        GradientError: weights made under ``torch.inference_mode()``.
        LayerNotFoundError: no such stage or layer.
        InvalidArgumentError: a channel out of range, a direction of the wrong shape, bad steps, size, seed, method,
            lr, spectrum or transforms.

    Example::

        >>> bb = explorer.load_backbone("default")
        >>> v = visualize(bb, stage="blocks.4", channel=[3, 5], steps=256, size=128)
        >>> [r.objective for r in v], v[0].image.size
        (['channel 3', 'channel 5'], (128, 128))
    """
    _check_model(bb)
    steps = whole("steps", steps, minimum=1, maximum=100_000)
    size = whole("size", size, minimum=16, maximum=1024)
    seed = whole("seed", seed, maximum=2**63 - 1)
    lr = real("lr", lr, hint="pass a positive learning rate, such as Lucid's 0.05.")
    if lr <= 0:
        raise InvalidArgumentError(f"lr={lr}; pass a positive learning rate, such as Lucid's 0.05.")
    if method not in METHODS:
        raise InvalidArgumentError(f"method={shown(method)}; choose one of: {', '.join(METHODS)}.")
    if transforms not in ("auto", *TRANSFORMS):
        raise InvalidArgumentError(f"transforms={shown(transforms)}; choose auto, {', '.join(TRANSFORMS)}.")
    if spectrum is not None and method != "maco":
        raise InvalidArgumentError('spectrum= is used by method="maco" only; drop it or pass method="maco".')
    magnitude = _magnitude(spectrum, size) if method == "maco" else None
    objective, batched = _objective(bb, stage, channel, direction, target, size)
    if transforms == "auto":
        transforms = "strong" if _is_vit(bb.model) else "lucid"
    preset = TRANSFORMS[transforms]
    if bb.weights == "random":
        _log.warning("%s has random weights: the optimised images show nothing learnt.", bb.spec)

    model = bb.model
    frozen = [p for p in model.parameters() if p.requires_grad]
    report = _progress(steps, progress)
    with torch.inference_mode(False), torch.enable_grad():
        generator = torch.Generator().manual_seed(seed)
        param = _Parameterisation(method, len(objective.labels), size, generator, magnitude).to(bb.device)
        normalise = bb.preprocess.normalize
        optimizer = torch.optim.Adam(param.parameters(), lr=lr)
        history: list[list[float]] = []
        try:
            for parameter in frozen:
                parameter.requires_grad_(False)
            redirect = _redirected_relus(model) if redirect_relu else nullcontext()
            with redirect:
                for step in range(steps):
                    optimizer.zero_grad(set_to_none=True)
                    images = _transform(param(), preset, generator)
                    values = _score(bb, objective, normalise(images.to(bb.dtype)))
                    (-values.sum()).backward()
                    optimizer.step()
                    history.append(values.detach().float().cpu().tolist())
                    report(step + 1, steps)
            with torch.no_grad():
                final = (param().clamp(0, 1) * 255).round().to(torch.uint8)
                activation = _score(bb, objective, normalise(final.to(bb.dtype) / 255)).float().cpu().tolist()
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)
    pictures = final.permute(0, 2, 3, 1).cpu().numpy()
    results = [
        FeatureVis(
            image=Image.fromarray(pictures[i]),
            activation=float(activation[i]),
            history=[row[i] for row in history],
            stage=objective.stage,
            objective=label,
            method=method,
            seed=seed,
            weights=bb.weights,
        )
        for i, label in enumerate(objective.labels)
    ]
    return results if batched else results[0]

"""Feature visualisation by optimisation: the image a channel, a direction or a class responds to most.

This module is the optimisation loop (Adam up the objective, the model left as found, progress and live
previews); the images it optimises are :mod:`explorer.feature_images`'s and the objectives
:mod:`explorer.feature_objectives`'. The Lucid recipe (Olah et al., Distill 2017; its PyTorch port Lucent) is
written here because none of the libraries fits (Lucent pins ``kornia<=0.4.1``, which does not install beside this torch; horama
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
    >>> v = explorer.visualize(bb, stage="blocks.4", channel=17, steps=8, size=64)
    >>> v.image.size, v.activation > v.history[0]
    ((64, 64), True)
    >>> len(explorer.visualize(bb, stage="blocks.4", channel=[3, 5], steps=2, size=64))
    2
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from ._args import real, shown, whole
from .errors import FeatureVisError, GradientError, InvalidArgumentError
from .feature_images import (
    METHODS,
    TRANSFORMS,
    MethodT,
    Parameterisation,
    is_vit,
    magnitude_of,
    magnitude_spectrum,
    random_transform,
)
from .feature_objectives import ChannelT, Objective, make_objective, objective_module, score
from .images import ImageInput

__all__ = ["FeatureVis", "visualize", "magnitude_spectrum"]

_log = logging.getLogger(__name__)

_CPU_CHUNK = 1
"""Images per forward and backward pass on a CPU (see :func:`_chunk`)."""


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


class _RedirectedReLU(torch.autograd.Function):
    """Lucid's redirected ReLU gradient (``redirected_relu_grad``): an image on which the true gradient is zero
    everywhere (every unit dead, as on a grey start before a deep ReLU) gets instead the gradient with only the
    part blocked that would push a non-positive input lower; images with any true gradient keep the true one.

    The true gradient is ReLU's own backward kernel; the redirected one is only computed for a batch holding a
    dead image (the first steps at most), so a step costs about what an unmodified backward costs. Both are read
    from the output (``y <= 0`` where ``x <= 0``, ``y >= upper`` where ``x >= upper``), so an in-place module
    stays in place, as in the model's own pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, upper: float | None, inplace: bool) -> torch.Tensor:
        if inplace:
            ctx.mark_dirty(x)
            y = x.clamp_(0, upper)
        else:
            y = x.clamp(0, upper)
        ctx.save_for_backward(y)
        ctx.upper = upper
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (y,) = ctx.saved_tensors
        upper = ctx.upper
        if upper is None:
            true = torch.ops.aten.threshold_backward(grad, y, 0)
        else:
            true = torch.ops.aten.hardtanh_backward(grad, y, 0, upper)
        alive = torch.linalg.vector_norm(true.flatten(1), dim=1) > 0  # as Lucid: the L2 norm (one fast pass)
        if bool(alive.all()):
            return true, None, None
        # descent moves x by -grad: grad > 0 lowers x, grad < 0 raises it
        blocked = (y <= 0) & (grad > 0)
        if upper is not None:
            blocked |= (y >= upper) & (grad < 0)
        redirected = grad.masked_fill(blocked, 0)
        return torch.where(alive.view(-1, *[1] * (grad.ndim - 1)), true, redirected), None, None


@contextmanager
def _redirected_relus(model: nn.Module) -> Iterator[None]:
    """Give every ``nn.ReLU`` and ``nn.ReLU6`` module of ``model`` the redirected gradient inside the block.

    Each module's ``forward`` is swapped for the redirected function (one clamp, in place where the module is; a
    hook on its output would compute the clamp twice, out of place), and put back on the way out; hooks on the
    modules still run."""
    relus = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    own = [m.__dict__.get("forward") for m in relus]  # a forward set on the instance itself, to restore

    def redirected(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        upper = 6.0 if isinstance(module, nn.ReLU6) else None
        return lambda x: _RedirectedReLU.apply(x, upper, module.inplace)

    try:
        for module in relus:
            module.forward = redirected(module)
        yield
    finally:
        for module, forward in zip(relus, own):
            if forward is None:
                del module.forward
            else:
                module.forward = forward


def _chunk(device: torch.device, batch: int) -> int:
    """Images per forward and backward pass: the whole batch on an accelerator; on a CPU, a few at a time, as a
    batched pass there costs more per image than a small one (activations leave the caches; depthwise
    convolutions take a slower path)."""
    return batch if device.type != "cpu" else _CPU_CHUNK


def _scores(
    bb, objective: Objective, module: nn.Module | None, pixels: torch.Tensor, chunk: int, ascend: bool
) -> torch.Tensor:
    """The ``(B,)`` objective on normalised ``pixels``, ``chunk`` images per pass, read at ``module``
    (:func:`objective_module`); with ``ascend``, the gradient of the objective's sum, negated (Adam descends),
    reaches ``pixels``' graph (one backward into it)."""
    if chunk >= len(pixels):
        values = score(bb, objective, module, pixels)
        if ascend:
            (-values.sum()).backward()
        return values.detach()
    parts, leaves = [], []
    for start in range(0, len(pixels), chunk):
        rows = slice(start, start + chunk)
        leaf = pixels[rows].detach().requires_grad_(ascend)
        values = score(bb, objective.part(rows), module, leaf)
        if ascend:
            (-values.sum()).backward()
        parts.append(values.detach())
        leaves.append(leaf)
    if ascend:
        pixels.backward(torch.cat([leaf.grad for leaf in leaves]))
    return torch.cat(parts)


def _eight_bit(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _pictures(images: torch.Tensor) -> list[Image.Image]:
    """PIL images of a ``(B, 3, H, W)`` batch, in ``[0, 1]`` or already 8-bit."""
    pixels = images if images.dtype == torch.uint8 else _eight_bit(images)
    return [Image.fromarray(p) for p in pixels.permute(0, 2, 3, 1).cpu().numpy()]


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
    preview: Callable[[int, list[Image.Image]], None] | None = None,
    preview_every: int = 16,
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
        preview: called with ``(done, images)`` (PIL, one per objective) every ``preview_every`` steps, to show
            the images refining; an exception it raises stops the optimisation (the model is still left as found).
        preview_every: steps between previews.

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
        >>> v = visualize(bb, stage="blocks.4", channel=[3, 5], steps=4, size=64)
        >>> [r.objective for r in v], v[0].image.size
        (['channel 3', 'channel 5'], (64, 64))
    """
    _check_model(bb)
    steps = whole("steps", steps, minimum=1, maximum=100_000)
    size = whole("size", size, minimum=16, maximum=1024)
    seed = whole("seed", seed, maximum=2**63 - 1)
    preview_every = whole("preview_every", preview_every, minimum=1)
    lr = real("lr", lr, hint="pass a positive learning rate, such as Lucid's 0.05.")
    if lr <= 0:
        raise InvalidArgumentError(f"lr={lr}; pass a positive learning rate, such as Lucid's 0.05.")
    if method not in METHODS:
        raise InvalidArgumentError(f"method={shown(method)}; choose one of: {', '.join(METHODS)}.")
    if transforms not in ("auto", *TRANSFORMS):
        raise InvalidArgumentError(f"transforms={shown(transforms)}; choose auto, {', '.join(TRANSFORMS)}.")
    if spectrum is not None and method != "maco":
        raise InvalidArgumentError('spectrum= is used by method="maco" only; drop it or pass method="maco".')
    magnitude = magnitude_of(spectrum, size) if method == "maco" else None
    objective, batched = make_objective(bb, stage, channel, direction, target, size)
    if transforms == "auto":
        transforms = "strong" if is_vit(bb.model) else "lucid"
    preset = TRANSFORMS[transforms]
    if bb.weights == "random":
        _log.warning("%s has random weights: the optimised images show nothing learnt.", bb.spec)

    model = bb.model
    frozen = [p for p in model.parameters() if p.requires_grad]
    report = _progress(steps, progress)
    chunk = _chunk(bb.device, len(objective.labels))
    module = objective_module(bb, objective)
    with torch.inference_mode(False), torch.enable_grad():
        generator = torch.Generator().manual_seed(seed)
        param = Parameterisation(method, len(objective.labels), size, generator, magnitude).to(bb.device)
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
                    images = random_transform(param(), preset, generator)
                    values = _scores(
                        bb, objective, module, normalise(images.to(bb.dtype)), chunk, ascend=True
                    )
                    optimizer.step()
                    history.append(values.float().cpu().tolist())
                    report(step + 1, steps)
                    if preview is not None and (step + 1) % preview_every == 0 and step + 1 < steps:
                        with torch.no_grad():
                            preview(step + 1, _pictures(param()))
            with torch.no_grad():
                final = _eight_bit(param())
                pixels = normalise(final.to(bb.dtype) / 255)
                activation = (
                    _scores(bb, objective, module, pixels, chunk, ascend=False).float().cpu().tolist()
                )
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)
    pictures = _pictures(final)
    results = [
        FeatureVis(
            image=pictures[i],
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

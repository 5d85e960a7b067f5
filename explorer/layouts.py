"""How a layer's output is laid out, and how to make it NCHW: the one owner of token grids and strides.

No hooks and no model run here: these are rules on shapes. A ``(B, N, C)`` token output is a grid of patch
tokens after some prefix tokens (:func:`token_grid`); a ``(B, H, W, C)`` output is channels-last; a map is a grid
of the input when its sides are the input's divided by one stride (:func:`grid_stride`). :func:`layout_from_shapes`
reads a layout from the shapes an output takes at two input sizes (the probe of :func:`explorer.hooks.find_layouts`).

Example::

    >>> to_nchw(torch.zeros(1, 197, 384), (224, 224)).shape    # 1 class token + 14x14 patches
    torch.Size([1, 384, 14, 14])
    >>> grid_stride(56, 56, (224, 224))
    4
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .errors import CaptureError

__all__ = [
    "LayerLayout",
    "PROBE_SCALE",
    "first_tensor",
    "grid_stride",
    "layout_from_shapes",
    "to_nchw",
    "token_grid",
    "unaligned_reason",
]


@dataclass(frozen=True)
class LayerLayout:
    """What is known in advance about a layer's output, to turn it into NCHW.

    Attributes:
        channels: the number of channels, when known (a stage's ``num_chs``).
        channels_last: the layer returns ``(B, H, W, C)`` (timm Swin, ConvNeXt-V2 NHWC variants).
        reduction: stride relative to the input, used to find the token grid of ViT-style outputs.
        prefix_tokens: class, register and distillation tokens before the patch tokens of ``(B, N, C)``
            outputs (timm's ``num_prefix_tokens``); None when unknown, and then inferred from the token count.
        unaligned: why the output is no grid of the input (found by :func:`find_layouts`); None when it is one.
    """

    channels: int | None = None
    channels_last: bool = False
    reduction: int | None = None
    prefix_tokens: int | None = None
    unaligned: str | None = None


def first_tensor(output: object) -> torch.Tensor | None:
    """The first tensor in a layer's output (a tensor, a tuple or dict of them, a model output's
    ``last_hidden_state``); None when it holds none."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    if isinstance(output, Mapping):
        for item in output.values():
            found = first_tensor(item)
            if found is not None:
                return found
    hidden = getattr(output, "last_hidden_state", None)
    return hidden if isinstance(hidden, torch.Tensor) else None


def token_grid(
    tokens: int, input_hw: tuple[int, int], reduction: int | None, prefix_tokens: int | None = None
) -> tuple[int, int, int]:
    """The ``(prefix, h, w)`` grid of ``tokens`` ViT-style tokens for a ``(height, width)`` input: ``prefix`` class,
    register or distillation tokens first, then ``h * w`` patch tokens, ``h`` and ``w`` the input's sides divided by
    ``reduction`` (rounded down or up; every stride up to 64 when None).

    Args:
        tokens: the token count ``N`` of a ``(B, N, C)`` output.
        input_hw: the input's ``(height, width)``.
        reduction: the patch size (stride), when known.
        prefix_tokens: the model's own prefix count, used as given; None tries 0 to 8.

    Raises:
        CaptureError: no such grid.

    Example::

        >>> token_grid(1 + 4 + 14 * 10, (224, 160), 16, 5)      # class and 4 register tokens
        (5, 14, 10)
    """
    height, width = input_hw
    strides = [reduction] if reduction else list(range(1, 65))
    for prefix in [prefix_tokens] if prefix_tokens is not None else range(0, 9):
        for stride in strides:
            for rounding in (lambda a, b: a // b, lambda a, b: -(-a // b)):
                h, w = rounding(height, stride), rounding(width, stride)
                if h * w == tokens - prefix and h > 0:
                    return prefix, h, w
    raise CaptureError(
        f"Cannot lay out {tokens} tokens as a grid for a {height}x{width} input. "
        "Capture a layer with spatial output, or pass a LayerLayout with the right reduction."
    )


def to_nchw(output: object, input_hw: tuple[int, int], layout: LayerLayout = LayerLayout()) -> torch.Tensor:
    """Turn a layer's output into a ``(B, C, H, W)`` tensor.

    Accepted forms: ``(B, C, H, W)``; ``(B, H, W, C)`` (``layout.channels_last``, or detected from
    ``layout.channels``); ViT-style tokens ``(B, N, C)`` with class/register prefix tokens, which become the
    ``(B, C, h, w)`` grid of patch tokens (non-square inputs too); pooled ``(B, C)`` becomes ``(B, C, 1, 1)``;
    an output of more axes that ``layout.unaligned`` flags keeps its last two, the others folded into channels.
    A tuple or model output uses its first tensor.

    Example::

        >>> to_nchw(torch.zeros(1, 197, 384), (224, 224)).shape    # 1 class token + 14x14 patches
        torch.Size([1, 384, 14, 14])
    """
    tensor = first_tensor(output)
    if tensor is None:
        raise CaptureError(f"The layer returned {type(output).__name__}, which holds no tensor.")
    if tensor.ndim == 4:
        channels = layout.channels
        if layout.channels_last or (
            channels and tensor.shape[-1] == channels and tensor.shape[1] != channels
        ):
            tensor = tensor.permute(0, 3, 1, 2)
        return tensor
    if tensor.ndim == 3:
        batch, tokens, dim = tensor.shape
        try:
            prefix, h, w = token_grid(tokens, input_hw, layout.reduction, layout.prefix_tokens)
        except CaptureError:
            if not layout.unaligned:
                raise
            return tensor.transpose(1, 2)[
                ..., None
            ]  # no grid, and flagged so: (B, C, N, 1) as the layer gave it
        return tensor[:, prefix:, :].transpose(1, 2).reshape(batch, dim, h, w)
    if tensor.ndim == 2:
        return tensor[:, :, None, None]
    if tensor.ndim > 4 and layout.unaligned:  # flagged: the leading axes folded into channels, as it came
        return tensor.reshape(tensor.shape[0], -1, *tensor.shape[-2:])
    raise CaptureError(
        f"The layer's output has shape {tuple(tensor.shape)}, which is not an image-like map. "
        "Pick a layer whose output is (B, C, H, W), (B, H, W, C) or (B, tokens, C)."
    )


def unaligned_reason(
    output: object, fmap: torch.Tensor, input_shape: tuple[int, int, int] | None
) -> str | None:
    """Why ``fmap`` (made from ``output``) is not a spatial map of a ``(B, H, W)`` input; None when it is.

    A map is image-aligned when it has the input's batch size and is a grid of the input (:func:`grid_stride`).

    Example::

        >>> out = torch.zeros(16, 49, 192)      # Swin's window attention: 16 windows of 7x7 tokens, one image
        >>> unaligned_reason(out, torch.zeros(16, 192, 7, 7), (1, 224, 224))
        'batch of 16 for 1 input image: windows or heads folded into the batch'
    """
    if input_shape is None:
        return None
    batch, height, width = input_shape
    raw = first_tensor(output)
    if raw is not None and raw.ndim == 2:
        return "a pooled vector per image, with no spatial extent"
    if fmap.shape[0] != batch:
        return (
            f"batch of {fmap.shape[0]} for {batch} input image{'s' * (batch != 1)}: windows or heads folded into "
            "the batch"
        )
    h, w = int(fmap.shape[-2]), int(fmap.shape[-1])
    if grid_stride(h, w, (height, width)) is not None:
        return None
    return f"a {h}x{w} grid is no stride of the {height}x{width} input (attention weights, or tokens)"


# ------------------------------------------------------------------------------------------- layouts by probing
PROBE_SCALE = (2, 3)
"""The second probe's input is the first one's height times 2 and width times 3: the two neighbouring axes that
grow so are rows and columns, a token axis grows with both."""


def _follows(before: int, after: int, scale: int) -> bool:
    """An axis of ``before`` cells is ``after`` cells once the input side is ``scale`` times longer, give or take
    the border unpadded convolutions cut (up to a tenth of the side, and two cells)."""
    return abs(after - scale * before) <= (scale - 1) * (2 + 0.1 * before)


def _tokens_layout(
    first: int, second: int, size: tuple[int, int], prefix_tokens: int | None
) -> LayerLayout | None:
    """Stride and prefix tokens with ``prefix + h * w`` tokens at both probe sizes; the model's count first."""
    (height, width), (sh, sw) = size, PROBE_SCALE
    found = []
    for stride in range(1, 65):
        for rounding in (lambda a, b: a // b, lambda a, b: -(-a // b)):
            h1, w1 = rounding(height, stride), rounding(width, stride)
            h2, w2 = rounding(height * sh, stride), rounding(width * sw, stride)
            prefix = first - h1 * w1
            if h1 > 0 and w1 > 0 and 0 <= prefix <= 16 and second - h2 * w2 == prefix:
                found.append(LayerLayout(reduction=stride, prefix_tokens=prefix))
    preferred = [layout for layout in found if layout.prefix_tokens == prefix_tokens]
    return (preferred or found or [None])[0]


def layout_from_shapes(
    first: tuple[int, ...],
    second: tuple[int, ...] | None,
    size: tuple[int, int],
    prefix_tokens: int | None = None,
) -> LayerLayout:
    """The layout of an output of shape ``first`` for a ``size`` input and ``second`` for a
    :data:`PROBE_SCALE` larger one (None: the model accepts one size only).

    Example::

        >>> layout_from_shapes((1, 56, 56, 96), (1, 112, 168, 96), (224, 224))      # channels-last
        LayerLayout(channels=96, channels_last=True, reduction=4, prefix_tokens=None, unaligned=None)
    """
    if len(first) == 2:
        return LayerLayout(first[1], unaligned="a pooled vector per image, with no spatial extent")
    if len(first) not in (3, 4):
        return LayerLayout(unaligned=f"a {len(first)}-D output {first}, not an image-like map")
    if first[0] != 1:  # the probe runs one image
        return LayerLayout(
            unaligned=f"batch of {first[0]} for 1 input image: windows or heads folded into the batch"
        )
    if second is None:  # one size only: what the shape alone says, flagged where it cannot say
        return _one_size_layout(first, size, prefix_tokens)
    changed = [axis for axis, (a, b) in enumerate(zip(first, second)) if a != b]
    if 0 in changed:
        return LayerLayout(
            unaligned=f"batch of {first[0]} for 1 input image: windows or heads folded into the batch"
        )
    if len(first) == 3:
        if changed == [1]:
            found = _tokens_layout(first[1], second[1], size, prefix_tokens)
            if found is not None:
                return LayerLayout(first[2], False, found.reduction, found.prefix_tokens)
        what = "no grid of the input" if changed else "a size that does not follow the input's"
        return LayerLayout(unaligned=f"tokens {first} with {what}")
    if not changed:
        return LayerLayout(unaligned=f"a {first[1:]} map whose size does not follow the input's")
    # rows before columns, next to each other: (B, C, H, W) or (B, H, W, C)
    if changed not in ([2, 3], [1, 2]) or not all(
        _follows(first[axis], second[axis], scale) for axis, scale in zip(changed, PROBE_SCALE)
    ):
        return LayerLayout(unaligned=f"a {first[1:]} map whose axes are no grid of the input")
    rows = changed[0]
    reduction = max(1, round(size[0] / first[rows]))
    if rows == 2:
        return LayerLayout(first[1], False, reduction)
    return LayerLayout(first[3], True, reduction)


def _one_size_layout(first: tuple[int, ...], size: tuple[int, int], prefix_tokens: int | None) -> LayerLayout:
    """The layout from one shape (a model that accepts one input size): tokens of the model's grid, and NCHW or
    NHWC where only one of them is a grid of the input."""
    if len(first) == 3:
        for known in dict.fromkeys([prefix_tokens, 0]):  # the model's prefix tokens; none (a patch embedding)
            try:
                prefix, h, _ = token_grid(first[1], size, None, known)
            except CaptureError:
                continue
            return LayerLayout(first[2], False, max(1, round(size[0] / h)), prefix)
        return LayerLayout(unaligned=f"{first[1]} tokens make no grid of the {size[0]}x{size[1]} input")
    nchw = grid_stride(first[2], first[3], size)
    nhwc = grid_stride(first[1], first[2], size)
    if nchw and nhwc:
        return LayerLayout(
            unaligned=f"a {first[1:]} map: either axes could be the grid, and the model runs at one size only"
        )
    if nchw:
        return LayerLayout(first[1], False, nchw)
    if nhwc:
        return LayerLayout(first[3], True, nhwc)
    return LayerLayout(unaligned=f"a {first[1:]} map that is no grid of the {size[0]}x{size[1]} input")


def grid_stride(h: int, w: int, size: tuple[int, int]) -> int | None:
    """The stride at which an ``(h, w)`` map is the grid of a ``size = (height, width)`` input; None if none is.

    Each axis holds ``side / stride`` cells rounded either way, less the border that unpadded convolutions cut:
    the same number of input pixels on both axes (within a stride), at most a tenth of the smaller side. A 1x1 map
    is a pooled vector, no grid.

    Example::

        >>> grid_stride(51, 47, (107, 99))      # inception's valid convolutions: 5 pixels lost on both axes
        2
        >>> grid_stride(6, 6, (96, 64)) is None
        True
    """
    height, width = size
    if h * w <= 1:
        return None
    for stride in range(1, 65):
        lost_h, lost_w = height - stride * h, width - stride * w
        small = all(
            -stride < lost < stride or 0 < lost <= 0.1 * min(height, width) for lost in (lost_h, lost_w)
        )
        if small and abs(lost_h - lost_w) < stride:
            return stride
    return None

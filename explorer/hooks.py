"""Forward hooks that take feature maps out of any ``nn.Module``, and put every map into NCHW.

Hooks live only inside :func:`capture`: they are registered on entry and removed on exit, whether the forward
pass succeeds, stops early or raises. Once every requested layer has produced its output the forward pass is
aborted, so layers after the last requested one never run. Hooks record only the forward passes of the thread
that entered the block, so several threads may capture from one model at once, each getting its own maps.

Example::

    >>> model = timm.create_model("resnet18").eval()
    >>> with capture(model, ["layer1", "layer2"]) as maps:
    ...     model(torch.randn(1, 3, 224, 224))      # stops after layer2; keep this the last line of the block
    >>> maps.shapes
    {'layer1': (1, 64, 56, 56), 'layer2': (1, 128, 28, 28)}
"""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ._args import shown
from .errors import CaptureError, InvalidArgumentError, LayerNotFoundError

__all__ = [
    "FeatureMaps",
    "LayerLayout",
    "PROBE_SCALE",
    "capture",
    "find_layouts",
    "grid_stride",
    "layout_from_shapes",
    "tap",
    "token_grid",
    "list_layers",
    "resolve_layers",
    "to_nchw",
    "unaligned_reason",
]

_log = logging.getLogger(__name__)


class FeatureMaps(dict):
    """Feature maps keyed by stage or layer name, in network order; every tensor is ``(B, C, H, W)``.

    Stage maps are always spatial maps of the input image. A layer captured by name may output something else:
    windows or heads folded into the batch (Swin's window attention), attention weights, a pooled vector.
    Such a map is returned as the layer gave it (made 4-D where its shape allows) and listed in
    :attr:`unaligned` with the reason; :attr:`aligned` says, per name, whether a map may be drawn over the image.

    Example::

        >>> maps.shapes
        {'layer1': (1, 64, 56, 56)}
        >>> maps["layer1"].device
        device(type='cpu')
        >>> maps = bb.capture(x, layers=["layers.1.blocks.0.attn"])    # timm Swin, one 224x224 image
        >>> maps.aligned, maps.unaligned
        ({'layers.1.blocks.0.attn': False}, {'layers.1.blocks.0.attn': 'batch of 16 for 1 input image ...'})
    """

    def __init__(self, *args, unaligned: Mapping[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if unaligned is not None and not isinstance(unaligned, Mapping):
            raise InvalidArgumentError(
                f"unaligned={shown(unaligned)}; pass a mapping of map name to the reason it is not aligned."
            )
        self.unaligned: dict[str, str] = {k: v for k, v in (unaligned or {}).items() if k in self}
        """Names of maps that are not spatial maps of the input image, with the reason."""

    @property
    def aligned(self) -> dict[str, bool]:
        """Per name: True when the map is a spatial map of the input image (drawable as an overlay)."""
        return {name: name not in self.unaligned for name in self}

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every map as a plain tuple."""
        return {name: tuple(t.shape) for name, t in self.items()}

    def to(self, *args, **kwargs) -> FeatureMaps:
        """A copy with every tensor moved with ``Tensor.to(*args, **kwargs)``."""
        return FeatureMaps(
            {name: t.to(*args, **kwargs) for name, t in self.items()}, unaligned=self.unaligned
        )

    def cpu(self) -> FeatureMaps:
        """A copy with every tensor on the CPU."""
        return self.to("cpu")

    def __repr__(self) -> str:
        inner = ", ".join(f"{name!r}: {tuple(t.shape)}" for name, t in self.items())
        return f"FeatureMaps({{{inner}}})"


class _StopForward(Exception):
    """Raised by the last needed hook to end the forward pass early; never leaves :func:`capture`."""


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


def list_layers(model: nn.Module | object) -> list[str]:
    """Every module name that :func:`capture` accepts, in registration order.

    Args:
        model: an ``nn.Module``, or a :class:`~explorer.Backbone` (its ``.model`` is used).

    Example::

        >>> list_layers(bb)[:4]
        ['conv1', 'bn1', 'act1', 'maxpool']
    """
    module = getattr(model, "model", model)
    if not isinstance(module, nn.Module):
        raise InvalidArgumentError(
            f"list_layers() takes a Backbone or an nn.Module, got {type(model).__name__}: {shown(model)}."
        )
    return [name for name, _ in module.named_modules() if name]


def resolve_layers(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Map layer names to modules, or raise :class:`LayerNotFoundError` naming the closest names."""
    modules = dict(model.named_modules())
    resolved = {}
    for name in names:
        if name not in modules or not name:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
            hint = f" Closest names: {', '.join(close)}." if close else ""
            raise LayerNotFoundError(
                f'No layer named "{name}" in {type(model).__name__}.{hint} '
                "Use explorer.list_layers(model) to see every name capture() accepts."
            )
        resolved[name] = modules[name]
    return resolved


def _first_tensor(output: object) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(output, Mapping):
        for item in output.values():
            found = _first_tensor(item)
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
    tensor = _first_tensor(output)
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

        >>> unaligned_reason(out, torch.zeros(16, 192, 7, 7), (1, 224, 224))   # Swin window attention
        'batch of 16 for 1 input image: windows or heads folded into the batch'
    """
    if input_shape is None:
        return None
    batch, height, width = input_shape
    raw = _first_tensor(output)
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


@contextmanager
def tap(
    model: nn.Module,
    layers: Sequence[str],
    *,
    stop_early: bool = False,
    keep: Callable[[str, object], object] | None = None,
    replace: Callable[[str, object], object] | None = None,
) -> Iterator[dict[str, object]]:
    """The outputs of named modules during the forward passes run inside the block, gradients kept.

    The one place hooks are registered: :func:`capture`, class-activation maps and the scan's receptive-field probe
    all use it. Hooks are registered inside the ``try`` whose ``finally`` removes them, and record only the forward
    passes of the thread that entered the block.

    Args:
        model: the network; its own forward (or any method) is called inside the block.
        layers: module names (see :func:`list_layers`).
        stop_early: abort the forward pass once every layer has produced its output (the forward call must then
            be the block's last statement).
        keep: what to record of an output, ``keep(name, output)``; the output itself when None. Only a layer's
            first output in a pass is recorded, before ``replace``.
        replace: ``replace(name, output)`` returns what the module outputs instead (a tap that rewrites it), on
            every call of the module.

    Yields:
        A dict filled as the layers run: name -> what ``keep`` made of the output.

    Raises:
        LayerNotFoundError: a name is not a module of ``model``.
        CaptureError: the forward pass ended without reaching some of the layers.

    Example::

        >>> x = torch.randn(1, 3, 64, 64, requires_grad=True)
        >>> with tap(model, ["layer1"]) as outputs:
        ...     model(x)
        >>> outputs["layer1"].sum().backward()        # gradients reach x
    """
    names = list(dict.fromkeys(layers))
    if not names:
        raise LayerNotFoundError("At least one layer name is needed; see explorer.list_layers(model).")
    modules = resolve_layers(model, names)
    outputs: dict[str, object] = {}
    owner = threading.get_ident()  # hooks sit on shared modules: one thread must not take another's pass

    def make_hook(name: str):
        def hook(_module, _args, output):
            if threading.get_ident() != owner:
                return None
            if name in outputs:
                _log.debug("layer %s ran again in the same pass; keeping its first output", name)
            else:
                outputs[name] = output if keep is None else keep(name, output)
            if replace is not None:
                output = replace(name, output)
            if stop_early and len(outputs) == len(names):
                raise _StopForward
            return output if replace is not None else None

        return hook

    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        try:
            yield outputs
        except _StopForward:
            pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in names if name not in outputs]
    if missing:
        raise CaptureError(
            f"The forward pass never reached {', '.join(missing)}. Run the model inside the block, and check "
            "that these layers are used by its forward()."
        )


@contextmanager
def capture(
    model: nn.Module,
    layers: Sequence[str],
    *,
    stop_early: bool = True,
    layouts: Mapping[str, LayerLayout] | None = None,
    input_size: tuple[int, int] | None = None,
    default_layout: LayerLayout = LayerLayout(),
    batch_size: int | None = None,
) -> Iterator[FeatureMaps]:
    """Capture the outputs of named modules during the forward passes run inside the block, as NCHW maps.

    Args:
        model: the network; its own forward is called inside the block.
        layers: module names (see :func:`list_layers`), kept in this order in the result.
        stop_early: abort the forward pass once every layer has produced its output, so later layers never
            run. The forward call must then be the last statement of the block.
        layouts: per layer, what is known of its output layout (see :class:`LayerLayout`, :func:`find_layouts`).
        input_size: ``(height, width)`` of the input, to lay out token outputs; taken from the first 4-D
            argument of ``model``'s forward when not given.
        default_layout: the layout of layers not in ``layouts`` (a model's ``prefix_tokens``, say).
        batch_size: the input's batch size, with ``input_size``, when the block runs a method of ``model``
            other than its forward (timm's ``forward_intermediates``); taken from the forward's input otherwise.

    Yields:
        A :class:`FeatureMaps`, detached, on the model's device, NCHW, filled as the layers run and put in the
        order of ``layers`` when the block ends; maps that are not spatial maps of the input are listed in its
        ``unaligned`` (see :class:`FeatureMaps`).

    Raises:
        LayerNotFoundError: a name is not a module of ``model``.
        CaptureError: the forward pass ended without reaching some of the layers.
    """
    names = list(dict.fromkeys(layers))
    if not names:
        raise LayerNotFoundError("capture() needs at least one layer name; see explorer.list_layers(model).")
    resolve_layers(model, names)
    layouts = dict(layouts or {})
    maps = FeatureMaps()
    inputs: list[tuple[int, int, int]] = [(batch_size, *input_size)] if batch_size and input_size else []
    owner = threading.get_ident()

    def record_input(_module, args, kwargs):
        if threading.get_ident() != owner:
            return
        pixels = args[0] if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
        if isinstance(pixels, torch.Tensor) and pixels.ndim == 4:
            hw = tuple(input_size) if input_size else (int(pixels.shape[-2]), int(pixels.shape[-1]))
            inputs.append((int(pixels.shape[0]), *hw))

    def keep(name: str, output: object) -> torch.Tensor:
        shape = inputs[-1] if inputs else None
        hw = shape[1:] if shape else tuple(input_size or (0, 0))
        layout = layouts.get(name, default_layout)
        # a copy: later in-place operations (x += shortcut, ReLU(inplace=True)) would change a view
        fmap = to_nchw(output, hw, layout).detach().clone()
        reason = layout.unaligned or unaligned_reason(output, fmap, shape)
        if reason:
            maps.unaligned[name] = reason
        return fmap

    handle = model.register_forward_pre_hook(record_input, with_kwargs=True)
    try:
        with tap(model, names, stop_early=stop_early, keep=keep) as raw:
            yield maps
    finally:
        handle.remove()
    maps.update((name, raw[name]) for name in names)


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


def find_layouts(
    run: Callable[[tuple[int, int]], None],
    model: nn.Module,
    layers: Sequence[str],
    size: tuple[int, int],
    prefix_tokens: int | None = None,
    *,
    second: bool = True,
) -> dict[str, LayerLayout]:
    """The layout of each layer's output, from its shapes at two input sizes.

    ``run(size)`` runs a forward pass of ``model`` (a meta-device copy: shapes only) on a ``(1, 3, *size)``
    input; it runs at ``size`` and at :data:`PROBE_SCALE` times it. Axes that grow with the height are rows, with
    the width columns; a token axis grows with both, and the prefix tokens are what the grid leaves over (the
    model's own ``prefix_tokens`` preferred). A model that refuses the second size, or ``second=False`` (a real
    forward pass, where six times the pixels could exhaust memory), is read from one shape.

    Example::

        >>> find_layouts(run, model, ["stages.0.blocks.0.norm"], (224, 224))       # timm ConvNeXt
        {'stages.0.blocks.0.norm': LayerLayout(channels=96, channels_last=True, reduction=4, ...)}
    """

    def shapes(at: tuple[int, int]) -> dict[str, tuple[int, ...]]:
        with tap(model, layers, stop_early=True, keep=lambda _n, out: _shape(out)) as found:
            run(at)
        return found

    first = shapes(size)
    larger: dict[str, tuple[int, ...]] = {}
    scaled = (size[0] * PROBE_SCALE[0], size[1] * PROBE_SCALE[1])
    if second:
        try:
            larger = shapes(scaled)
        except (
            Exception
        ) as err:  # the model refuses the size: its own assert, a reshape, a position embedding
            _log.debug("layouts from one size only (%s)", err)
    if (
        larger
        and all(larger[name] == first[name] for name in layers)
        and _resizes_input(run, model, size, scaled)
    ):
        larger = {}  # the model resizes every input to its own size (CrossViT): it sees one size only
    return {name: layout_from_shapes(first[name], larger.get(name), size, prefix_tokens) for name in layers}


def _resizes_input(
    run: Callable[[tuple[int, int]], None], model: nn.Module, size: tuple[int, int], scaled: tuple[int, int]
) -> bool:
    """No module of ``model`` gives another shape at ``scaled`` than at ``size``: the model resizes its input."""

    def every_shape(at: tuple[int, int]) -> dict[str, tuple[int, ...]]:
        found: dict[str, tuple[int, ...]] = {}
        try:
            with tap(model, list_layers(model), keep=lambda _n, out: _shape_or_none(out)) as found:
                run(at)
        except CaptureError:  # modules the forward pass never runs
            pass
        return found

    at_size, at_scaled = every_shape(size), every_shape(scaled)
    return bool(at_size) and all(at_scaled.get(name) == shape for name, shape in at_size.items())


def _shape_or_none(output: object) -> tuple[int, ...] | None:
    tensor = _first_tensor(output)
    return None if tensor is None else tuple(int(v) for v in tensor.shape)


def _shape(output: object) -> tuple[int, ...]:
    tensor = _first_tensor(output)
    if tensor is None:
        raise CaptureError(f"The layer returned {type(output).__name__}, which holds no tensor.")
    return tuple(int(v) for v in tensor.shape)

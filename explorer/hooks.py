"""The one owner of forward hooks: :func:`tap` and :func:`capture` take outputs out of any ``nn.Module``.

Maps are put into NCHW by the rules of :mod:`explorer.layouts` (re-exported here); :func:`find_layouts` probes
a layer's layout with hooks.

Hooks live only inside :func:`capture`: they are registered on entry and removed on exit, whether the forward
pass succeeds, stops early or raises. Once every requested layer has produced its output the forward pass is
aborted, so layers after the last requested one never run. Hooks record only the forward passes of the thread
that entered the block, so several threads may capture from one model at once, each getting its own maps.

Example::

    >>> import timm
    >>> model = timm.create_model("resnet18").eval()
    >>> with capture(model, ["layer1", "layer2"]) as maps:
    ...     model(torch.randn(1, 3, 224, 224))      # stops after layer2; keep this the last line of the block
    >>> maps.shapes
    {'layer1': (1, 64, 56, 56), 'layer2': (1, 128, 28, 28)}
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ._args import closest, shown
from .errors import CaptureError, InvalidArgumentError, LayerNotFoundError
from .layouts import (
    PROBE_SCALE,
    LayerLayout,
    first_tensor,
    grid_stride,
    layout_from_shapes,
    to_nchw,
    token_grid,
    unaligned_reason,
)

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

        >>> maps.shapes["blocks.1"]
        (1, 24, 56, 56)
        >>> maps["blocks.1"].device
        device(type='cpu')
        >>> swin = load_backbone("swin_tiny_patch4_window7_224", pretrained=False, device="cpu")
        >>> found = swin.capture(torch.randn(1, 3, 224, 224), layers=["layers.1.blocks.0.attn"])
        >>> found.aligned, found.unaligned
        ({'layers.1.blocks.0.attn': False}, {'layers.1.blocks.0.attn': 'batch of 16 for 1 input image: windows ...'})
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


def list_layers(model: nn.Module | object) -> list[str]:
    """Every module name that :func:`capture` accepts, in registration order.

    Args:
        model: an ``nn.Module``, or a :class:`~explorer.Backbone` (its ``.model`` is used).

    Example::

        >>> list_layers(bb)[:4]
        ['conv_stem', 'bn1', 'bn1.drop', 'bn1.act']
    """
    module = getattr(model, "model", model)
    if not isinstance(module, nn.Module):
        raise InvalidArgumentError(
            f"list_layers() takes a Backbone or an nn.Module, got {type(model).__name__}: {shown(model)}."
        )
    return [name for name, _ in module.named_modules() if name]


def resolve_layers(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Map layer names to modules, or raise :class:`LayerNotFoundError` naming the closest names."""
    resolved = {}
    for name in names:
        try:  # a walk down the dotted path: no walk over every module (each capture resolves its layers)
            module = model.get_submodule(name) if isinstance(name, str) and name else None
        except AttributeError:
            module = None
        if module is None:
            hint = closest(name, [n for n, _ in model.named_modules() if n])
            raise LayerNotFoundError(
                f'No layer named "{name}" in {type(model).__name__}.{hint} '
                "Use explorer.list_layers(model) to see every name capture() accepts."
            )
        resolved[name] = module
    return resolved


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

        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        >>> x = torch.randn(1, 3, 64, 64, requires_grad=True)
        >>> with tap(model, ["0"]) as outputs:
        ...     _ = model(x)
        >>> outputs["0"].shape
        torch.Size([1, 8, 62, 62])
        >>> outputs["0"].sum().backward()        # gradients reach x
        >>> x.grad.shape
        torch.Size([1, 3, 64, 64])
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
    copy: bool = True,
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
        copy: keep a copy of each output (True), or the output itself where nothing changes it in place
            afterwards (a softmax's weights): no copy of every block's attention.

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
        fmap = to_nchw(output, hw, layout).detach()
        fmap = fmap.clone() if copy else fmap
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

        >>> import timm
        >>> model = timm.create_model("convnext_atto", conv_mlp=False).eval()
        >>> def run(size):
        ...     model(torch.zeros(1, 3, *size))
        >>> find_layouts(run, model, ["stages.0.blocks.0.norm"], (224, 224))
        {'stages.0.blocks.0.norm': LayerLayout(channels=40, channels_last=True, reduction=4, ...)}
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
    tensor = first_tensor(output)
    return None if tensor is None else tuple(int(v) for v in tensor.shape)


def _shape(output: object) -> tuple[int, ...]:
    tensor = first_tensor(output)
    if tensor is None:
        raise CaptureError(f"The layer returned {type(output).__name__}, which holds no tensor.")
    return tuple(int(v) for v in tensor.shape)

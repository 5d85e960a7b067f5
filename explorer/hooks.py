"""Forward hooks that take feature maps out of any ``nn.Module``, and put every map into NCHW.

Hooks live only inside :func:`capture`: they are registered on entry and removed on exit, whether the forward
pass succeeds, stops early or raises. Once every requested layer has produced its output the forward pass is
aborted, so layers after the last requested one never run.

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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .errors import CaptureError, LayerNotFoundError

__all__ = ["FeatureMaps", "LayerLayout", "capture", "list_layers", "resolve_layers", "to_nchw"]

_log = logging.getLogger(__name__)


class FeatureMaps(dict):
    """Feature maps keyed by stage or layer name, in network order; every tensor is ``(B, C, H, W)``.

    Example::

        >>> maps.shapes
        {'layer1': (1, 64, 56, 56)}
        >>> maps["layer1"].device
        device(type='cpu')
    """

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every map as a plain tuple."""
        return {name: tuple(t.shape) for name, t in self.items()}

    def to(self, *args, **kwargs) -> FeatureMaps:
        """A copy with every tensor moved with ``Tensor.to(*args, **kwargs)``."""
        return FeatureMaps({name: t.to(*args, **kwargs) for name, t in self.items()})

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
    """

    channels: int | None = None
    channels_last: bool = False
    reduction: int | None = None


def list_layers(model: nn.Module | object) -> list[str]:
    """Every module name that :func:`capture` accepts, in registration order.

    Args:
        model: an ``nn.Module``, or a :class:`~explorer.Backbone` (its ``.model`` is used).

    Example::

        >>> list_layers(bb)[:4]
        ['conv1', 'bn1', 'act1', 'maxpool']
    """
    module = getattr(model, "model", model)
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


def _token_grid(tokens: int, input_hw: tuple[int, int], reduction: int | None) -> tuple[int, int, int]:
    """Find ``(prefix, h, w)`` with ``prefix + h * w == tokens`` and ``h / w`` matching the input's shape."""
    height, width = input_hw
    strides = [reduction] if reduction else list(range(1, 65))
    for prefix in range(0, 9):
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
    ``(B, C, h, w)`` grid of patch tokens (non-square inputs too); pooled ``(B, C)`` becomes ``(B, C, 1, 1)``.
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
        prefix, h, w = _token_grid(tokens, input_hw, layout.reduction)
        return tensor[:, prefix:, :].transpose(1, 2).reshape(batch, dim, h, w)
    if tensor.ndim == 2:
        return tensor[:, :, None, None]
    raise CaptureError(
        f"The layer's output has shape {tuple(tensor.shape)}, which is not an image-like map. "
        "Pick a layer whose output is (B, C, H, W), (B, H, W, C) or (B, tokens, C)."
    )


@contextmanager
def capture(
    model: nn.Module,
    layers: Sequence[str],
    *,
    stop_early: bool = True,
    layouts: Mapping[str, LayerLayout] | None = None,
    input_size: tuple[int, int] | None = None,
) -> Iterator[FeatureMaps]:
    """Capture the outputs of named modules during the forward passes run inside the block.

    Args:
        model: the network; its own forward is called inside the block.
        layers: module names (see :func:`list_layers`), kept in this order in the result.
        stop_early: abort the forward pass once every layer has produced its output, so later layers never
            run. The forward call must then be the last statement of the block.
        layouts: per layer, what is known of its output layout (see :class:`LayerLayout`).
        input_size: ``(height, width)`` of the input, to lay out token outputs; taken from the first 4-D
            argument of ``model``'s forward when not given.

    Yields:
        A :class:`FeatureMaps`, filled when the block ends, detached, on the model's device, NCHW.

    Raises:
        LayerNotFoundError: a name is not a module of ``model``.
        CaptureError: the forward pass ended without reaching some of the layers.
    """
    names = list(dict.fromkeys(layers))
    if not names:
        raise LayerNotFoundError("capture() needs at least one layer name; see explorer.list_layers(model).")
    modules = resolve_layers(model, names)
    layouts = dict(layouts or {})
    raw: dict[str, torch.Tensor] = {}
    input_hw: list[tuple[int, int]] = [tuple(input_size)] if input_size else []

    def record_input(_module, args, kwargs):
        pixels = args[0] if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
        if isinstance(pixels, torch.Tensor) and pixels.ndim == 4:
            input_hw.append((int(pixels.shape[-2]), int(pixels.shape[-1])))

    def make_hook(name: str):
        def hook(_module, _args, output):
            if name in raw:
                _log.debug("layer %s ran again in the same pass; keeping its first output", name)
                return
            hw = input_hw[-1] if input_hw else (0, 0)
            # a copy: later in-place operations (x += shortcut, ReLU(inplace=True)) would change a view
            raw[name] = to_nchw(output, hw, layouts.get(name, LayerLayout())).detach().clone()
            if stop_early and len(raw) == len(names):
                raise _StopForward

        return hook

    handles = [] if input_size else [model.register_forward_pre_hook(record_input, with_kwargs=True)]
    maps = FeatureMaps()
    try:
        handles += [module.register_forward_hook(make_hook(name)) for name, module in modules.items()]
        try:
            yield maps
        except _StopForward:
            pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in names if name not in raw]
    if missing:
        raise CaptureError(
            f"The forward pass never reached {', '.join(missing)}. Run the model inside the capture block, "
            "and check that these layers are used by its forward()."
        )
    maps.update((name, raw[name]) for name in names)

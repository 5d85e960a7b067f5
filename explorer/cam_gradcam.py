"""The grad-cam adapter: runs one of grad-cam's methods on a backbone with a tap at a stage or layer, and gives
back the maps at that layer's resolution and the scores the targets were picked from.

How: grad-cam is handed a small model (:class:`ScoringModel`) whose ``tap`` (an ``nn.Identity``) is its target
layer. A forward hook on the real module turns its output into an NCHW map, passes it through the tap, and puts
the tap's output back into the network in the module's own layout, so grad-cam sees a plain NCHW layer for every
backbone (its ablation layer replaces the tap, its gradients are the map's). The scores are the head's logits
(:attr:`explorer.Backbone.head`), or, headless, a stage's map as the backbone gives it
(:meth:`explorer.Backbone.stage_maps`). The gradient path starts at the tap: nothing below it is differentiated
and the weights are never touched. Hooks and grad-cam's buffers are released after every call.

Only grad-cam's public API is used: its method classes, ``get_target_width_height`` overridden in a subclass
(maps at the layer's own resolution), FinerCAM's ``base_method=``, ``activations_and_grads`` (its lists and
hook handles), ``ClassifierOutputTarget`` and ``scale_cam_image``.

Example::

    >>> import pytorch_grad_cam
    >>> bb, x = load_backbone("resnet18", pretrained=False), torch.randn(1, 3, 64, 64)
    >>> maps, scores = explain(pytorch_grad_cam, bb, x, ("layer3", "layer3"), "gradcam", [3], None)
    >>> maps.shape, scores.shape                # resnet18, one 64x64 image
    ((1, 4, 4), torch.Size([1, 1000]))
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import CAMError, GradientError, MissingDependencyError
from .hooks import LayerLayout, tap, to_nchw

__all__ = ["METHODS", "ScoringModel", "TapLayout", "explain", "grad_cam", "release", "tap_layout"]

METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "gradcamelementwise": "GradCAMElementWise",
    "eigengradcam": "EigenGradCAM",
    "shapleycam": "ShapleyCAM",
    "finercam": "FinerCAM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
    "eigencam": "EigenCAM",
    "kpcacam": "KPCA_CAM",
    "fem": "FEM",
    "randomcam": "RandomCAM",
}
"""``method=`` names and the grad-cam class behind each."""


def grad_cam():
    """The ``pytorch_grad_cam`` module, or a :class:`~explorer.MissingDependencyError` naming the extra."""
    try:
        return importlib.import_module("pytorch_grad_cam")
    except ImportError as err:
        raise MissingDependencyError(
            'Class-activation maps need grad-cam. Install the extra: pip install "explorer[cam]".'
        ) from err


# ----------------------------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class TapLayout:
    """Where the map sits in a module's output and how to turn it into NCHW and back."""

    path: tuple[int, ...]  # index into nested tuple/list outputs; () is the output itself
    kind: str  # "nchw", "nhwc" or "tokens"
    prefix: int = 0
    grid: tuple[int, int] = (0, 0)

    def pick(self, output: object) -> torch.Tensor:
        for index in self.path:
            output = output[index]
        return output

    def to_nchw(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.kind == "nhwc":
            return tensor.permute(0, 3, 1, 2)
        if self.kind == "tokens":
            return tensor[:, self.prefix :].transpose(1, 2).reshape(tensor.shape[0], -1, *self.grid)
        return tensor

    def from_nchw(self, nchw: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """The map in the module's layout, as a new tensor (later in-place operations must not reach the tap)."""
        if self.kind == "nhwc":
            return nchw.permute(0, 2, 3, 1).to(original.dtype, copy=True)
        if self.kind == "tokens":
            prefix = original[:, : self.prefix].expand(nchw.shape[0], -1, -1)
            return torch.cat([prefix, nchw.flatten(2).transpose(1, 2).to(original.dtype)], dim=1)
        return nchw.to(original.dtype, copy=True)

    def rebuild(self, output: object, tensor: torch.Tensor, path: tuple[int, ...] | None = None) -> object:
        path = self.path if path is None else path
        if not path:
            return tensor
        items = list(output)
        items[path[0]] = self.rebuild(output[path[0]], tensor, path[1:])
        return type(output)(items) if isinstance(output, tuple) else items


def _tensors(output: object, path: tuple[int, ...] = ()):
    if isinstance(output, torch.Tensor):
        yield path, output
    elif isinstance(output, (tuple, list)):
        for index, item in enumerate(output):
            yield from _tensors(item, (*path, index))


def tap_layout(output: object, known: LayerLayout, input_hw: tuple[int, int], name: str) -> TapLayout:
    """Where the map sits in ``output`` and its layout: a stage's as its source declares it (the tensor with its
    channels, in a tuple of branches), any other layer's as the layout probe found it.

    Raises:
        CAMError: the layer's output is no map of the image (pooled, unaligned, not image-like).
    """
    if known.unaligned:
        raise CAMError(
            f"{name} gives {known.unaligned}, not a map of the image to explain. Pick a stage, or a layer "
            "whose output is a grid of the input (explorer.list_layers(bb))."
        )
    for path, tensor in _tensors(output):
        channels = tensor.shape[1] if tensor.ndim == 4 and not known.channels_last else tensor.shape[-1]
        if tensor.ndim in (3, 4) and (known.channels is None or channels == known.channels):
            if tensor.ndim == 4:
                return TapLayout(path, "nhwc" if known.channels_last else "nchw")
            height, width = to_nchw(tensor, input_hw, known).shape[-2:]  # the patch tokens' grid
            return TapLayout(path, "tokens", tensor.shape[1] - height * width, (height, width))
    shapes = [tuple(t.shape) for _, t in _tensors(output)]
    wanted = f" of {known.channels} channels" if known.channels else ""
    raise CAMError(
        f"{name} outputs {shapes}, which holds no image-like map{wanted}. Pass stage= another stage, or a layer "
        "from explorer.list_layers(bb) whose output is (B, C, H, W), (B, H, W, C) or (B, tokens, C)."
    )


# ----------------------------------------------------------------------------------------------- the model grad-cam runs


class ScoringModel(nn.Module):
    """What grad-cam runs: the backbone's network with a tap, returning the scores targets pick.

    With a head the scores are its logits; without one, the channel means of the scored stage's map as the
    backbone gives it (``(B, C)``), or its total activation (``(B, 1)``).

    Args:
        backbone: the :class:`~explorer.Backbone`.
        scored: headless: ``(stage, total)``, the stage to score and whether its total activation is the score;
            None: the head's logits.
    """

    def __init__(self, backbone, scored: tuple[str, bool] | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.scored = scored
        self.net = (
            backbone.model if scored else backbone.head.network
        )  # its parameters give grad-cam the device
        self.tap = nn.Identity()
        self.stage_wh = (0, 0)  # the tapped map's (width, height): the size of grad-cam's maps
        self.scores: torch.Tensor | None = None  # the first pass's scores (grad-cam may run more passes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        precision = self.backbone.precision
        with torch.autocast(
            self.backbone.device.type, dtype=precision or torch.float32, enabled=bool(precision)
        ):
            if self.scored is None:
                scores = self.backbone.head.logits(pixel_values)
            else:
                stage, total = self.scored
                nchw = self.backbone.stage_maps(pixel_values, [stage])[stage].float()
                scores = nchw.mean((1, 2, 3))[:, None] if total else nchw.mean((2, 3))
        scores = scores.float()
        if self.scores is None:
            self.scores = scores.detach()
        return scores


def _stage_size(explainer, _input_tensor: torch.Tensor) -> tuple[int, int]:
    return explainer.model.stage_wh


@functools.cache
def _stage_sized(method_class: type) -> type:
    """``method_class`` whose maps come at the tapped layer's resolution (the upsampling to the input follows)."""
    return type(method_class.__name__, (method_class,), {"get_target_width_height": _stage_size})


class _TopClass:
    """A grad-cam target: the image's own top-scoring class (what grad-cam picks itself when given none)."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return (
            output[..., output.argmax(-1)]
            if output.ndim == 1
            else output.gather(-1, output.argmax(-1)[:, None])
        )


def _explainer(gc, method: str, runner: ScoringModel):
    if method == "finercam":
        return gc.FinerCAM(runner, [runner.tap], base_method=_stage_sized(gc.GradCAM))
    options = {"ablation_layer": gc.AblationLayer()} if method == "ablationcam" else {}  # no shared state
    return _stage_sized(getattr(gc, METHODS[method]))(model=runner, target_layers=[runner.tap], **options)


def explain(
    gc,
    backbone,
    pixel_values: torch.Tensor,
    tapped: tuple[str, str],
    method: str,
    indices: list[int | None],
    scored: tuple[str, bool] | None,
) -> tuple[np.ndarray, torch.Tensor]:
    """grad-cam's maps of the tapped layer for a batch, and the scores of the first pass.

    Args:
        gc: the ``pytorch_grad_cam`` module (:func:`grad_cam`).
        backbone: the :class:`~explorer.Backbone`.
        pixel_values: ``(B, 3, H, W)`` on the backbone's device.
        tapped: ``(name, module path)`` of the stage or layer explained.
        method: a key of :data:`METHODS`.
        indices: per image the score to explain (a class; headless a channel), None for the top class.
        scored: headless: ``(stage, total)`` (see :class:`ScoringModel`); None: the head's logits.

    Returns:
        ``(B, h, w)`` maps in ``[0, 1]`` at the tapped layer's resolution, and the ``(B, classes)`` scores.

    Raises:
        CAMError: the layer never runs, or the target's gradient is zero there.
        GradientError: a gradient method on weights made under ``torch.inference_mode()``.
    """
    name, module_path = tapped
    model = backbone.model
    runner = ScoringModel(backbone, scored)
    input_hw = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
    known = backbone.layout(name if name in backbone.stage_names else module_path, input_hw)
    found: list[TapLayout] = []

    def rewrite(_module: str, output: object) -> object:
        if not found:
            found.append(tap_layout(output, known, input_hw, name))
        layout = found[0]
        tensor = layout.pick(output)
        start = tensor if base.compute_input_gradient else tensor.detach().requires_grad_(base.uses_gradients)
        nchw = layout.to_nchw(start).float()
        runner.stage_wh = (int(nchw.shape[-1]), int(nchw.shape[-2]))
        return layout.rebuild(output, layout.from_nchw(runner.tap(nchw), start))  # grad-cam's hooks run here

    if scored is None:
        targets = [
            _TopClass() if i is None else gc.utils.model_targets.ClassifierOutputTarget(i) for i in indices
        ]
    else:
        targets = [gc.utils.model_targets.ClassifierOutputTarget(i or 0) for i in indices]
    # no weight gradients: the backward pass ends at the tap (inference tensors cannot be changed, nor need it)
    parameters = list(dict.fromkeys([*model.parameters(), *runner.net.parameters()]))
    requires_grad = [p for p in parameters if p.requires_grad and not p.is_inference()]
    base = None
    try:
        explainer = _explainer(gc, method, runner)  # grad-cam registers its hooks (on runner.tap) here
        base = getattr(explainer, "base_cam", explainer)  # FinerCAM runs a GradCAM
        for parameter in requires_grad:
            parameter.requires_grad_(False)
        if base.uses_gradients and any(p.is_inference() for p in parameters):
            raise RuntimeError("Inference tensors cannot be saved for backward.")  # reported below
        if method == "finercam" and len(set(indices)) > 1:
            raise CAMError("finercam takes one target for the whole batch; make one call per target.")
        with tap(model, [module_path], replace=rewrite, keep=lambda _name, _output: None):
            if method == "finercam":
                maps = explainer(pixel_values, targets=None, target_idx=indices[0])
            else:
                with torch.set_grad_enabled(base.uses_gradients):  # methods without gradients record no graph
                    maps = explainer(pixel_values, targets=targets)
        _check_reached(base, name, method)
        if base.uses_gradients and method != "shapleycam" and not _any_gradient(base):
            raise _unreached(backbone, name, method)
    except RuntimeError as err:
        if "nference tensor" in str(err):
            raise GradientError(
                f"method={method!r} needs gradients, but the weights were made under torch.inference_mode(). "
                "Load the backbone outside inference mode, or use method='eigencam', which needs none."
            ) from err
        if "does not require grad" in str(err):
            _check_reached(base, name, method)
            raise _unreached(backbone, name, method) from err
        raise
    finally:
        if base is not None:
            release(base)
        for parameter in requires_grad:
            parameter.requires_grad_(True)
    return maps, runner.scores


def release(base) -> None:
    """Drop grad-cam's hooks, activations and gradients (and with them the graph).

    Not grad-cam's own ``activations_and_grads.release()``: it detaches gradients in place, which fails on the
    views ShapleyCAM keeps; its public lists and handles are emptied instead.
    """
    recorded = base.activations_and_grads
    recorded.activations = []
    recorded.gradients = []
    for handle in recorded.handles:
        handle.remove()
    recorded.handles.clear()


def _check_reached(base, name: str, method: str) -> None:
    if not base.activations_and_grads.activations and method != "ablationcam":
        raise CAMError(
            f"The forward pass never ran {name} as a module, so there is no map to explain. Pick another stage, "
            "or a layer from explorer.list_layers(bb) that the model calls."
        )


def _any_gradient(base) -> bool:
    return any(bool(g.abs().amax() > 0) for g in base.activations_and_grads.gradients)


def _unreached(backbone, name: str, method: str) -> CAMError:
    head = backbone.head
    weights = list(head.classifier.parameters()) if head is not None else []
    if weights and not any(bool(p.detach().abs().amax() > 0) for p in weights):
        reason = "the classifier's weights are all zero (how timm initialises some heads without pretrained weights)"
    else:
        reason = (
            f"{name} does not reach the target (after a ViT's last block only its class token does; some models "
            "use a stage's output only beside the main path)"
        )
    return CAMError(
        f"The gradient of the target at {name} is zero everywhere, so {method} would draw nothing: {reason}. "
        "Pick an earlier stage or another layer, load pretrained weights, or use method='eigencam', which needs "
        "no gradient."
    )

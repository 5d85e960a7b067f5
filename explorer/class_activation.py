"""Class-activation maps at any stage of any backbone, on ``grad-cam``, with no setup.

grad-cam (``pytorch_grad_cam``) computes the maps; explorer supplies what users get wrong by hand: the target
module (a stage name or any :func:`~explorer.list_layers` name), the reshape from that module's layout (ViT
tokens with their class, distillation and register tokens dropped; Swin's channels-last maps; tuples), and the
targets (a class of the model's own head, by index or ImageNet name; for a backbone without a head, a channel
of a later stage or the last stage's total activation).

How: grad-cam is handed a small wrapper model whose ``tap`` (an ``nn.Identity``) is its target layer. A forward
hook on the real module turns its output into an NCHW map, passes it through the tap, and puts the tap's output
back into the network in the module's own layout, so grad-cam sees a plain NCHW layer for every backbone (its
ablation layer replaces the tap, its gradients are the map's). The gradient path starts at the stage: nothing
below it is differentiated and the weights are never touched, so a frozen model works and the backward pass
goes no deeper than the stage. Hooks, grad-cam's buffers and the graph are released after every call.

Example::

    >>> bb = explorer.load_backbone("default")
    >>> result = explorer.cam(bb, explorer.sample_images(["chelsea"])["chelsea"], stage="blocks.6")
    >>> result.map.shape, result.stage_map.shape, result.target_name
    (torch.Size([224, 224]), torch.Size([7, 7]), 'tabby, tabby cat')
    >>> result.top5[0][:2]
    (281, 'tabby, tabby cat')
"""

from __future__ import annotations

import difflib
import functools
import importlib
import logging
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._args import shown
from .errors import (
    CAMError,
    GradientError,
    InvalidArgumentError,
    LayerNotFoundError,
    MissingDependencyError,
)
from .hooks import LayerLayout, list_layers, tap, token_grid
from .images import ImageInput

__all__ = ["CAM", "cam", "cam_methods", "METHODS"]

_log = logging.getLogger(__name__)

TargetT = int | str | None
"""A class index or name of the model's head; for a headless backbone a channel index of the last stage or
``"stage:channel"``; None: the top prediction (headless: the last stage's total activation)."""

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

_NEEDS_CLASSES = {"finercam"}  # compares the target class with its most similar classes: needs a classifier


def cam_methods() -> list[str]:
    """The names ``method=`` accepts.

    Example::

        >>> cam_methods()[:3]
        ['gradcam', 'gradcam++', 'xgradcam']
    """
    return list(METHODS)


@dataclass(frozen=True)
class CAM:
    """A class-activation map of one image.

    Attributes:
        map: ``(H, W)`` in ``[0, 1]``, on the image as the model saw it (``bb.preprocess.input_size``).
        stage_map: ``(h, w)`` in ``[0, 1]``, at the stage's resolution.
        target: what it explains: a class index of the head; headless: a channel index, or None for the total
            activation.
        target_name: the class name (``'tabby, tabby cat'``), or ``'stage4 channel 17'`` / ``'stage4 total
            activation'``.
        top5: the head's top predictions ``[(class index, name, probability), ...]``; empty without a head.
        stage: the stage or layer explained.
        method: the ``method=`` used.
    """

    map: torch.Tensor
    stage_map: torch.Tensor
    target: int | None
    target_name: str
    top5: list[tuple[int, str, float]]
    stage: str
    method: str


# ----------------------------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class _Layout:
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


def _layout_of(output: object, known: LayerLayout, input_hw: tuple[int, int], name: str) -> _Layout:
    """Where the map sits in ``output`` and its layout: a stage's as its source declares it (the tensor with its
    channels, in a tuple of branches), any other layer's as the layout probe found it."""
    if known.unaligned:
        raise CAMError(
            f"{name} gives {known.unaligned}, not a map of the image to explain. Pick a stage, or a layer "
            "whose output is a grid of the input (explorer.list_layers(bb))."
        )
    for path, tensor in _tensors(output):
        channels = tensor.shape[1] if tensor.ndim == 4 and not known.channels_last else tensor.shape[-1]
        if tensor.ndim in (3, 4) and (known.channels is None or channels == known.channels):
            if tensor.ndim == 4:
                return _Layout(path, "nhwc" if known.channels_last else "nchw")
            prefix, h, w = token_grid(tensor.shape[1], input_hw, known.reduction, known.prefix_tokens)
            return _Layout(path, "tokens", prefix, (h, w))
    shapes = [tuple(t.shape) for _, t in _tensors(output)]
    raise CAMError(
        f"{name} outputs {shapes}, which is not an image-like map. Pick a stage, or a layer whose output is "
        "(B, C, H, W), (B, H, W, C) or (B, tokens, C)."
    )


# ----------------------------------------------------------------------------------------------- the model grad-cam runs


class _Stop(Exception):
    """Ends a headless forward pass once the scored stage has run."""


class _CAMModel(nn.Module):
    """What grad-cam runs: the backbone's network with a tap at the stage, returning the scores targets pick.

    With a head the scores are the logits; without one, the channel means of the scored stage (``(B, C)``), or
    its total activation (``(B, 1)``).
    """

    def __init__(self, network: nn.Module, autocast: torch.dtype | None, device: torch.device) -> None:
        super().__init__()
        self.net = network
        self.tap = nn.Identity()
        self.autocast = autocast
        self.device_type = device.type
        self.scores: torch.Tensor | None = None  # the first pass's scores (grad-cam may run more passes)
        self.headless_scores: torch.Tensor | None = None
        self.headless = False

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            self.device_type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None
        ):
            try:
                output = self.net(pixel_values)
            except _Stop:
                output = None
        scores = self.headless_scores if self.headless else next(t for _, t in _tensors(output))
        self.headless_scores = None
        scores = scores.float()
        if self.scores is None:
            self.scores = scores.detach()
        return scores


def _grad_cam():
    try:
        return importlib.import_module("pytorch_grad_cam")
    except ImportError as err:
        raise MissingDependencyError(
            'Class-activation maps need grad-cam. Install the extra: pip install "explorer[cam]".'
        ) from err


# ----------------------------------------------------------------------------------------------- targets


@functools.lru_cache(maxsize=8)
def _imagenet_names(subset: str) -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo(subset)
    return tuple(info.index_to_description(i) for i in range(info.num_classes()))


def _class_names(model: nn.Module, num_classes: int) -> list[str]:
    """The head's class names: timm's offline ImageNet names when the head is an ImageNet one, else ``class N``."""
    try:
        from timm.data import infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        names = _imagenet_names(subset) if subset else ()
    except Exception:  # not a timm model, or an unknown label set
        names = ()
    return list(names) if len(names) == num_classes else [f"class {i}" for i in range(num_classes)]


def _class_index(target: int | str, names: list[str]) -> int:
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if not 0 <= int(target) < len(names):
            raise CAMError(
                f"target={target} is out of range: the head has {len(names)} classes (0 to {len(names) - 1}). "
                f"Pass a class index in that range or a class name such as {names[0]!r}; None explains the top "
                "prediction."
            )
        return int(target)
    if isinstance(target, str):
        wanted = target.strip().lower()
        for index, name in enumerate(names):
            if wanted == name.lower() or wanted in (part.strip().lower() for part in name.split(",")):
                return index
        synonyms = list(dict.fromkeys(part.strip() for name in names for part in name.split(",")))
        close = difflib.get_close_matches(target, synonyms, n=5, cutoff=0.6)
        hint = f" Closest names: {', '.join(close)}." if close else ""
        raise CAMError(
            f'No class named "{target}" in the head ({len(names)} classes).{hint} Pass a class index or a name '
            "from CAM.top5, or None for the top prediction."
        )
    raise CAMError(f"target must be a class index, a class name or None, not {type(target).__name__}.")


# ----------------------------------------------------------------------------------------------- cam()


def _refuse_unrolled_tokens(backbone, name: str, module_path: str) -> None:
    """Hiera (timm) keeps its tokens in an unrolled order until its last stage and puts them back in place only
    in ``forward_intermediates``: a CAM of a module before that would be drawn in the wrong places."""
    last = backbone.all_stages[-1]
    if hasattr(backbone.model, "reroll") and module_path != last.module:
        raise CAMError(
            f"{type(backbone.model).__name__} keeps its tokens in an unrolled (not spatial) order before its last "
            f'stage, so a map of "{name}" would be drawn in the wrong places. Explain stage="{last.name}".'
        )


def _stage_module(backbone, stage: str | None) -> tuple[str, str]:
    """``(name, module path)`` of the stage or layer to explain."""
    by_name = {s.name: s for s in backbone.all_stages}
    modules = dict(backbone.model.named_modules())
    if stage is None:
        # stages computed inside the forward, not by a module of their own (MViTv2, Twins, HRNet) cannot be tapped
        tappable = [s.name for s in backbone.all_stages if s.module in modules and s.module]
        if not tappable:
            raise CAMError(
                f"No stage of {type(backbone.model).__name__} is the output of a module of its own, so a CAM has "
                "nothing to tap. Pass stage= a layer from explorer.list_layers(bb)."
            )
        stage = tappable[-1]
        if getattr(backbone.model, "global_pool", None) == "token" and len(tappable) > 1:
            # a class-token ViT reads only the class token after its last block: its patch tokens get no gradient
            stage = tappable[-2]
    if stage in by_name:
        found = by_name[stage]
        if found.module not in modules or not found.module:
            raise CAMError(
                f'Stage "{stage}" is computed inside {type(backbone.model).__name__}\'s forward, not by a module of '
                f'its own (its feature_info names "{found.module}"), so a CAM cannot tap it. Pass stage= a layer '
                "from explorer.list_layers(bb) that computes it."
            )
        return stage, found.module
    layers = list_layers(backbone)
    if stage in layers:
        return stage, stage
    close = difflib.get_close_matches(stage, list(dict.fromkeys([*by_name, *layers])), n=5, cutoff=0.5)
    hint = f" Closest names: {', '.join(close)}." if close else ""
    raise LayerNotFoundError(
        f'No stage or layer named "{stage}".{hint} Stages: {", ".join(backbone.stage_names)}; '
        "explorer.list_layers(bb) lists every layer name."
    )


def _headless_target(backbone, target: TargetT, stage: str) -> tuple[str, int | None]:
    """``(stage to score, channel or None for the total activation)`` for a backbone without a head."""
    names = backbone.stage_names
    if target is None:
        return names[-1], None
    if isinstance(target, str) and ":" in target:
        score_stage, _, channel = target.rpartition(":")
    elif isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        score_stage, channel = names[-1], target
    else:
        raise CAMError(
            f"{backbone.spec} has no classifier head, so target={target!r} names no class. Pass a channel of the "
            f'last stage ({names[-1]}: 0 to {backbone.all_stages[-1].channels - 1}), "<stage>:<channel>" for a '
            "later stage, or None for the last stage's total activation."
        )
    by_name = {s.name: s for s in backbone.all_stages}
    if score_stage not in by_name or not str(channel).lstrip("-").isdigit():
        raise CAMError(f'target="{target}": use "<stage>:<channel>" with a stage of {", ".join(names)}.')
    channel, scored = int(channel), by_name[score_stage]
    if not 0 <= channel < scored.channels:
        raise CAMError(
            f"target channel {channel} is out of range: {score_stage} has {scored.channels} channels "
            f"(0 to {scored.channels - 1})."
        )
    if stage in by_name and by_name[stage].index > scored.index:
        raise CAMError(
            f"{score_stage} comes before {stage}, so it does not depend on it. Target a channel of {stage} or of "
            "a later stage."
        )
    return score_stage, channel


def _check_arguments(backbone, image: object, stage: object, target: object, method: object) -> None:
    """Refuse arguments of the wrong kind before anything runs, each with the fix (the prologue of :func:`cam`)."""
    from .backbones import Backbone

    if not isinstance(backbone, Backbone):
        raise InvalidArgumentError(
            f"backbone={shown(backbone)} ({type(backbone).__name__}); pass a Backbone: "
            "cam(explorer.load_backbone(spec), image, ...)."
        )
    if not isinstance(method, str):
        raise CAMError(
            f"method={shown(method)} ({type(method).__name__}); pass one name of: {', '.join(METHODS)}."
        )
    if stage is not None and not isinstance(stage, str):
        raise InvalidArgumentError(
            f"stage={shown(stage)} ({type(stage).__name__}); pass a stage name ({', '.join(backbone.stage_names)}) "
            "or a layer from explorer.list_layers(bb), or None for the last stage."
        )
    targets = list(target) if isinstance(target, (list, tuple)) else [target]
    for one in targets:
        if one is not None and (isinstance(one, bool) or not isinstance(one, (int, np.integer, str))):
            raise CAMError(
                f"target={shown(one)} ({type(one).__name__}); pass a class index, a class name, "
                '"<stage>:<channel>" or None.'
            )
        if isinstance(one, str) and any(c.isdigit() and c not in "0123456789" for c in one):
            raise CAMError(f"target={one!r} holds a digit other than 0-9; write indices with 0-9.")
    if isinstance(image, (list, tuple)) and not image:
        raise InvalidArgumentError("image=[] holds no image; pass at least one.")
    if isinstance(image, torch.Tensor):
        if image.ndim == 4 and image.shape[0] == 0:
            raise InvalidArgumentError(
                f"image is an empty batch {tuple(image.shape)}; pass at least one image."
            )
        if image.is_floating_point() and image.numel() and not bool(torch.isfinite(image).all()):
            raise InvalidArgumentError(
                "image holds NaN or infinite values; a map of them would explain nothing. Pass finite pixels."
            )


def _is_batch(image: object) -> bool:
    return isinstance(image, (list, tuple)) or (isinstance(image, torch.Tensor) and image.ndim == 4)


def cam(
    backbone,
    image: ImageInput | Sequence[ImageInput] | torch.Tensor,
    stage: str | None = None,
    target: TargetT | Sequence[TargetT] = None,
    method: str = "gradcam",
) -> CAM | list[CAM]:
    """A class-activation map of a stage (or any named layer), for one image or a batch.

    Args:
        backbone: a :class:`~explorer.Backbone` (any source: timm, transformers, local files, the default).
        image: one image (path, bytes, PIL, array), a list of them, or a ``(B, 3, H, W)`` tensor of
            ``pixel_values`` already preprocessed (``bb.pixel_values(images)``).
        stage: a stage name (``bb.stage_names``) or any layer from :func:`~explorer.list_layers`. None: the last
            stage (for a class-token ViT, the one before: after the last block only the class token counts).
        target: a class index or name of the head (``281``, ``"tabby cat"``, ``"tabby, tabby cat"``); None: the top
            prediction. Without a head: a channel of the last stage, ``"<stage>:<channel>"``, or None for the
            last stage's total activation. A list gives one target per image.
        method: one of :func:`cam_methods` (grad-cam's methods).

    Returns:
        A :class:`CAM` for one image; a list of them, one per image, for a list or a 4-D tensor.

    Raises:
        InvalidArgumentError: not a Backbone, a stage that is not a string, no image, non-finite pixels.
        CAMError: unknown method, a target the head does not have, a method that needs a head on a headless
            backbone, a stage whose gradient never reaches the target.
        LayerNotFoundError: no such stage or layer.
        GradientError: a gradient method on weights made under ``torch.inference_mode()``.
        MissingDependencyError: grad-cam is not installed (the ``cam`` extra).

    Example::

        >>> result = cam(bb, ["cat.jpg", "dog.jpg"], stage="blocks.4", target="tabby cat")
        >>> [r.map.shape for r in result], result[0].stage_map.shape
        ([torch.Size([224, 224]), torch.Size([224, 224])], torch.Size([14, 14]))
    """
    _check_arguments(backbone, image, stage, target, method)
    if method not in METHODS:
        close = difflib.get_close_matches(method, METHODS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise CAMError(f'Unknown CAM method "{method}".{hint} Choose one of: {", ".join(METHODS)}.')
    grad_cam = _grad_cam()
    name, module_path = _stage_module(backbone, stage)
    _refuse_unrolled_tokens(backbone, name, module_path)
    model = backbone.model
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if method in _NEEDS_CLASSES and not num_classes:
        working = [m for m in METHODS if m not in _NEEDS_CLASSES]
        raise CAMError(
            f'{backbone.spec} has no classifier head, and method="{method}" compares classes of one. Methods '
            f"that work without a head: {', '.join(working)} (eigencam needs no target at all)."
        )
    batch = _is_batch(image)
    with torch.inference_mode(False):
        if isinstance(image, torch.Tensor) and image.ndim == 4:
            pixel_values = image.to(backbone.device, backbone.dtype).clone()
        else:
            pixel_values = backbone.pixel_values(image if batch else [image]).clone()
        count = pixel_values.shape[0]
        targets = list(target) if isinstance(target, (list, tuple)) else [target] * count
        if len(targets) != count:
            raise CAMError(f"{len(targets)} targets for {count} images; pass one target, or one per image.")
        bad = int((~torch.isfinite(pixel_values)).sum())
        if bad:
            raise CAMError(
                f"The input holds {bad} NaN or infinite pixel value(s); a map of them means nothing. Pass images, "
                "or finite pixel_values (bb.pixel_values(images))."
            )
        with _lock(backbone), torch.enable_grad():  # hooks on one model: one CAM at a time, each its own map
            results = _run(grad_cam, backbone, pixel_values, name, module_path, targets, method)
    return results if batch else results[0]


class _TopClass:
    """A grad-cam target: the image's own top-scoring class (what grad-cam picks itself when given none)."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return (
            output[..., output.argmax(-1)]
            if output.ndim == 1
            else output.gather(-1, output.argmax(-1)[:, None])
        )


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def _lock(backbone) -> threading.Lock:
    """The lock of ``backbone``'s CAMs (made once per backbone)."""
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(backbone, threading.Lock())


def _run(grad_cam, backbone, pixel_values, name, module_path, targets, method) -> list[CAM]:
    model = backbone.model
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    runner = _CAMModel(model, backbone.precision, backbone.device)
    input_hw = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
    options = (
        {"ablation_layer": grad_cam.AblationLayer()} if method == "ablationcam" else {}
    )  # no shared state
    explainer = getattr(grad_cam, METHODS[method])(model=runner, target_layers=[runner.tap], **options)
    base = getattr(explainer, "base_cam", explainer)
    keep_graph = bool(base.compute_input_gradient)
    layouts: dict[str, _Layout] = {}
    stage_hw: list[tuple[int, int]] = []
    tapped_layout = backbone.layout(name if name in backbone.stage_names else module_path, input_hw)

    def tap_output(output):
        if "tap" not in layouts:
            layouts["tap"] = _layout_of(output, tapped_layout, input_hw, name)
        layout = layouts["tap"]
        tensor = layout.pick(output)
        start = tensor if keep_graph else tensor.detach().requires_grad_(base.uses_gradients)
        nchw = layout.to_nchw(start).float()
        stage_hw[:] = [(int(nchw.shape[-1]), int(nchw.shape[-2]))]
        tapped = runner.tap(nchw)  # grad-cam's hooks (or its ablation layer) run here
        return layout.rebuild(output, layout.from_nchw(tapped, start))

    rewrites = {module_path: [tap_output]}  # per module, in order: what its output becomes
    if num_classes:
        class_names = _class_names(model, num_classes)
        indices = [None if t is None else _class_index(t, class_names) for t in targets]
        cam_targets = [
            _TopClass() if i is None else grad_cam.utils.model_targets.ClassifierOutputTarget(i)
            for i in indices
        ]
    else:
        class_names = []
        picks = [_headless_target(backbone, t, name) for t in targets]
        if len({stage for stage, _ in picks}) > 1:
            raise CAMError("The targets of one call must score one stage; make one call per stage.")
        scored_name, scored_module = _stage_module(backbone, picks[0][0])
        scored_layout = backbone.layout(scored_name, input_hw)
        total = all(channel is None for _, channel in picks)
        if not total and any(channel is None for _, channel in picks):
            raise CAMError("Mix no channel targets with a total-activation target (None); make two calls.")
        runner.headless = True

        def score_output(output):
            if "score" not in layouts:
                layouts["score"] = _layout_of(output, scored_layout, input_hw, scored_name)
            nchw = layouts["score"].to_nchw(layouts["score"].pick(output)).float()
            runner.headless_scores = nchw.mean((1, 2, 3))[:, None] if total else nchw.mean((2, 3))
            raise _Stop

        rewrites.setdefault(scored_module, []).append(score_output)
        indices = [channel for _, channel in picks]
        cam_targets = [grad_cam.utils.model_targets.ClassifierOutputTarget(i or 0) for i in indices]
        labels = [
            f"{scored_name} total activation" if i is None else f"{scored_name} channel {i}" for i in indices
        ]

    def rewrite(module: str, output: object) -> object:
        for step in rewrites[module]:
            output = step(output)
        return output

    # grad-cam scales each map to the size this returns: the stage's own; the upsampling to the input follows
    base.get_target_width_height = lambda _input: stage_hw[0]
    # no weight gradients: the backward pass ends at the stage (inference tensors cannot be changed, nor need it)
    requires_grad = [p for p in model.parameters() if p.requires_grad and not p.is_inference()]
    try:
        for parameter in requires_grad:
            parameter.requires_grad_(False)
        if base.uses_gradients and any(p.is_inference() for p in model.parameters()):
            raise RuntimeError("Inference tensors cannot be saved for backward.")  # reported below
        if method == "finercam" and len(set(indices)) > 1:
            raise CAMError("finercam takes one target for the whole batch; make one call per target.")
        with tap(model, list(rewrites), replace=rewrite, keep=lambda _name, _output: None):
            if method == "finercam":
                stage_maps = explainer(pixel_values, targets=None, target_idx=indices[0])
            else:
                with torch.set_grad_enabled(base.uses_gradients):  # methods without gradients record no graph
                    stage_maps = explainer(pixel_values, targets=cam_targets)
        _check_reached(base, name, method)
        if base.uses_gradients and method != "shapleycam" and not _any_gradient(base):
            raise _unreached(model, name, method)
    except RuntimeError as err:
        if "nference tensor" in str(err):
            raise GradientError(
                f"method={method!r} needs gradients, but the weights were made under torch.inference_mode(). "
                "Load the backbone outside inference mode, or use method='eigencam', which needs none."
            ) from err
        if "does not require grad" in str(err):
            _check_reached(base, name, method)
            raise _unreached(model, name, method) from err
        raise
    finally:
        _release(base)
        for parameter in requires_grad:
            parameter.requires_grad_(True)
    scores = runner.scores
    if num_classes:
        probabilities = scores.softmax(-1)
        top = probabilities.topk(min(5, num_classes), dim=-1)
        top5 = [
            [(int(i), class_names[int(i)], float(p)) for p, i in zip(values, classes)]
            for values, classes in zip(top.values.tolist(), top.indices.tolist())
        ]
        indices = [int(scores[b].argmax()) if i is None else i for b, i in enumerate(indices)]
        labels = [class_names[i] for i in indices]
    else:
        top5 = [[] for _ in indices]
    upsampled = grad_cam.utils.image.scale_cam_image(stage_maps, (input_hw[1], input_hw[0]))
    upsampled = grad_cam.utils.image.scale_cam_image(np.maximum(upsampled, 0))  # as grad-cam's own last step
    device = backbone.device
    return [
        CAM(
            map=torch.from_numpy(upsampled[b]).to(device),
            stage_map=torch.from_numpy(stage_maps[b]).to(device),
            target=indices[b],
            target_name=labels[b],
            top5=top5[b],
            stage=name,
            method=method,
        )
        for b in range(len(indices))
    ]


def _check_reached(base, name: str, method: str) -> None:
    if not base.activations_and_grads.activations and method != "ablationcam":
        raise CAMError(
            f"The forward pass never ran {name} as a module, so there is no map to explain. Pick another stage, "
            "or a layer from explorer.list_layers(bb) that the model calls."
        )


def _unreached(model: nn.Module, name: str, method: str) -> CAMError:
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    weights = [p for p in classifier.parameters()] if isinstance(classifier, nn.Module) else []
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


def _release(base) -> None:
    """Drop grad-cam's hooks, activations, gradients and outputs (and with them the graph).

    Not grad-cam's own ``release()``: it detaches gradients in place, which fails on the views ShapleyCAM keeps.
    """
    recorded = base.activations_and_grads
    recorded.activations.clear()
    recorded.gradients = []
    for handle in recorded.handles:
        handle.remove()
    recorded.handles.clear()
    base.outputs = None


def _any_gradient(base) -> bool:
    return any(bool(g.abs().amax() > 0) for g in base.activations_and_grads.gradients)

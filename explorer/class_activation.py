"""``cam()``: class-activation maps at any stage of any backbone, on ``grad-cam``, with no setup.

This module checks the arguments and assembles the results. What is explained (the stage or layer, the class or
channel) is resolved by :mod:`explorer.cam_targets`; grad-cam runs through the adapter in
:mod:`explorer.cam_gradcam` (the tap, the layouts, the scores). The head and its class names come from the
backbone (:attr:`explorer.Backbone.head`), so nothing here knows timm or transformers.

Example::

    >>> bb = explorer.load_backbone("default")
    >>> result = explorer.cam(bb, explorer.sample_images(["chelsea"])["chelsea"], stage="blocks.6")
    >>> result.map.shape, result.stage_map.shape, result.target_name
    (torch.Size([224, 224]), torch.Size([7, 7]), 'tiger cat')
    >>> result.top5[0][:2]
    (282, 'tiger cat')
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ._args import closest, shown
from .cam_gradcam import METHODS, explain, grad_cam
from .cam_targets import TargetT, class_index, headless_target, stage_module
from .errors import CAMError, InvalidArgumentError
from .images import ImageInput

__all__ = ["CAM", "cam", "cam_methods", "METHODS"]

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
        map: ``(H, W)`` in ``[0, 1]``, on the image as the model saw it (``bb.preprocess.input_size``; each
            image's own size where the processor keeps the aspect ratio, as DETR's does).
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

        >>> result = cam(bb, [photos["chelsea"], photos["coffee"]], stage="blocks.4", target="tabby cat")
        >>> [r.map.shape for r in result], result[0].stage_map.shape
        ([torch.Size([224, 224]), torch.Size([224, 224])], torch.Size([14, 14]))
    """
    _check_arguments(backbone, image, stage, target, method)
    if method not in METHODS:
        raise CAMError(
            f'Unknown CAM method "{method}".{closest(method, METHODS, n=3)} Choose one of: {", ".join(METHODS)}.'
        )
    gc = grad_cam()
    name, module_path = stage_module(backbone, stage)
    unordered = backbone.out_of_order(module_path)
    if unordered:
        last = backbone.all_stages[-1].name
        raise CAMError(
            f'"{name}" holds {unordered}, so its map would be drawn in the wrong places. Explain a stage whose '
            f'map is in image order, such as stage="{last}".'
        )
    names = backbone.class_names
    if method in _NEEDS_CLASSES and not names:
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
        if names:
            indices = [None if t is None else class_index(t, names) for t in targets]
            scored = None
        else:
            picks = [headless_target(backbone, t, name) for t in targets]
            if len({stage for stage, _ in picks}) > 1:
                raise CAMError("The targets of one call must score one stage; make one call per stage.")
            indices = [channel for _, channel in picks]
            total = all(channel is None for channel in indices)
            if not total and None in indices:
                raise CAMError(
                    "Mix no channel targets with a total-activation target (None); make two calls."
                )
            scored = (picks[0][0], total)
        with _lock(backbone), torch.enable_grad():  # hooks on one model: one CAM at a time, each its own map
            stage_maps, scores = explain(
                gc, backbone, pixel_values, (name, module_path), method, indices, scored
            )
    if names:
        top = scores.softmax(-1).topk(min(5, len(names)), dim=-1)
        top5 = [
            [(int(i), names[int(i)], float(p)) for p, i in zip(values, classes)]
            for values, classes in zip(top.values.tolist(), top.indices.tolist())
        ]
        indices = [int(scores[b].argmax()) if i is None else i for b, i in enumerate(indices)]
        labels = [names[i] for i in indices]
    else:
        top5 = [[] for _ in indices]
        labels = [
            f"{scored[0]} total activation" if i is None else f"{scored[0]} channel {i}" for i in indices
        ]
    input_hw = tuple(pixel_values.shape[-2:])
    upsampled = gc.utils.image.scale_cam_image(stage_maps, (input_hw[1], input_hw[0]))
    upsampled = gc.utils.image.scale_cam_image(np.maximum(upsampled, 0))  # as grad-cam's own last step
    results = [
        CAM(
            map=torch.from_numpy(upsampled[b]).to(backbone.device),
            stage_map=torch.from_numpy(stage_maps[b]).to(backbone.device),
            target=indices[b],
            target_name=labels[b],
            top5=top5[b],
            stage=name,
            method=method,
        )
        for b in range(count)
    ]
    return results if batch else results[0]


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def _lock(backbone) -> threading.Lock:
    """The lock of ``backbone``'s CAMs (made once per backbone)."""
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(backbone, threading.Lock())

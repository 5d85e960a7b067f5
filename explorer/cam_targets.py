"""What a class-activation map explains: the stage or layer to tap, and the target (a class of the backbone's
head by index or name; for a headless backbone a channel of a stage, or a stage's total activation).

Knows only the :class:`~explorer.Backbone` interface (``head``, ``class_names``, ``all_stages``,
``reads_class_token_only``); nothing of timm, transformers or grad-cam.

Example::

    >>> class_index("tabby cat", ["tench", "tabby, tabby cat"])
    1
"""

from __future__ import annotations

import numpy as np

from ._args import closest
from .errors import CAMError, LayerNotFoundError
from .hooks import list_layers

__all__ = ["TargetT", "class_index", "headless_target", "stage_module"]

TargetT = int | str | None
"""A class index or name of the model's head; for a headless backbone a channel index of the last stage or
``"stage:channel"``; None: the top prediction (headless: the last stage's total activation)."""


def class_index(target: int | str, names: list[str]) -> int:
    """The index of a class of the head, given as an index or a name (or one of its comma-separated synonyms).

    Raises:
        CAMError: an index out of range, an unknown name (with the closest names), another type.

    Example::

        >>> class_index(1, ["tench", "goldfish"]), class_index("Goldfish", ["tench", "goldfish"])
        (1, 1)
    """
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
        raise CAMError(
            f'No class named "{target}" in the head ({len(names)} classes).{closest(target, synonyms)} Pass a class index or a name '
            "from CAM.top5, or None for the top prediction."
        )
    raise CAMError(f"target must be a class index, a class name or None, not {type(target).__name__}.")


def stage_module(backbone, stage: str | None) -> tuple[str, str]:
    """``(name, module path)`` of the stage or layer to explain; None: the last stage that is the output of a
    module of its own (the one before it when the head reads only the class token).

    Raises:
        CAMError: no stage is a module's output, or the named stage is computed inside the forward pass.
        LayerNotFoundError: no such stage or layer (with the closest names).

    Example::

        >>> stage_module(load_backbone("resnet18", pretrained=False), None)
        ('layer4', 'layer4')
    """
    modules = dict(backbone.model.named_modules())
    if stage is None:
        # stages computed inside the forward, not by a module of their own (MViTv2, Twins, HRNet) cannot be tapped
        tappable = [s.name for s in backbone.all_stages if s.module and s.module in modules]
        if not tappable:
            raise CAMError(
                f"No stage of {type(backbone.model).__name__} is the output of a module of its own, so a CAM has "
                "nothing to tap. Pass stage= a layer from explorer.list_layers(bb)."
            )
        stage = tappable[-1]
        if backbone.reads_class_token_only and len(tappable) > 1:
            # after the last block only the class token reaches the head: its patch tokens get no gradient
            stage = tappable[-2]
    if stage in backbone.stage_names:
        found = backbone.stage(stage)
        if not found.module or found.module not in modules:
            raise CAMError(
                f'Stage "{stage}" is computed inside {type(backbone.model).__name__}\'s forward, not by a module of '
                f'its own (its feature_info names "{found.module}"), so a CAM cannot tap it. Pass stage= a layer '
                "from explorer.list_layers(bb) that computes it."
            )
        return stage, found.module
    layers = list_layers(backbone)
    if stage in layers:
        return stage, stage
    hint = closest(stage, list(dict.fromkeys([*backbone.stage_names, *layers])))
    raise LayerNotFoundError(
        f'No stage or layer named "{stage}".{hint} Stages: {", ".join(backbone.stage_names)}; '
        "explorer.list_layers(bb) lists every layer name."
    )


def headless_target(backbone, target: TargetT, stage: str) -> tuple[str, int | None]:
    """``(stage to score, channel or None for the total activation)`` for a backbone without a head.

    Raises:
        CAMError: a class name (there is no head), a channel out of range, a scored stage before ``stage``.

    Example::

        >>> headless = load_backbone("resnet18", pretrained=False, features_only=True)   # no head
        >>> headless_target(headless, "layer3:5", "layer2")
        ('layer3', 5)
    """
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
    if score_stage not in backbone.stage_names or not str(channel).lstrip("-").isdigit():
        raise CAMError(f'target="{target}": use "<stage>:<channel>" with a stage of {", ".join(names)}.')
    channel, scored = int(channel), backbone.stage(score_stage)
    if not 0 <= channel < scored.channels:
        raise CAMError(
            f"target channel {channel} is out of range: {score_stage} has {scored.channels} channels "
            f"(0 to {scored.channels - 1})."
        )
    if stage in backbone.stage_names and backbone.stage(stage).index > scored.index:
        raise CAMError(
            f"{score_stage} comes before {stage}, so it does not depend on it. Target a channel of {stage} or of "
            "a later stage."
        )
    return score_stage, channel

"""The records a backbone is described by: :class:`Stage`, :class:`Head`, :class:`AttentionWeights`, and
:data:`WEIGHT_ORIGINS` (where the weights came from). Plain frozen dataclasses: nothing here runs a model.

Example::

    >>> bb.stages[1]
    Stage(name='blocks.1', index=1, channels=24, reduction=4, module='blocks.1', channels_last=False)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..layouts import LayerLayout

__all__ = ["AttentionWeights", "Head", "Stage", "WEIGHT_ORIGINS", "WeightOrigin"]

WeightOrigin = Literal["hub", "cache", "file", "package", "random"]
"""Where a backbone's weights came from: the hub (downloaded now), the local hub cache, a file or folder the user
named, the package that ships the default's weights, or random initialisation."""

WEIGHT_ORIGINS: tuple[str, ...] = ("hub", "cache", "file", "package", "random")
"""Every :data:`WeightOrigin`; ``Backbone.weights_origin`` (alias ``Backbone.weights``) is one of these."""


@dataclass(frozen=True)
class Stage:
    """One stage of a backbone, known before anything runs.

    Attributes:
        name: the stage name (``"layer1"`` for timm, ``"stage1"`` for transformers).
        index: its position in ``stage_names``.
        channels: channels of its feature map.
        reduction: its stride relative to the input (4 means a 224 input gives a 56 map).
        module: dotted path of the module whose output it is, as :func:`explorer.list_layers` names it.
        channels_last: the module returns ``(B, H, W, C)``; maps are permuted to NCHW.
    """

    name: str
    index: int
    channels: int
    reduction: int
    module: str
    channels_last: bool = False

    def feature_layout(self) -> LayerLayout:
        """The layout of this stage's map as its source's feature API returns it (timm's
        ``forward_intermediates``, transformers' ``feature_maps``): channels first, at the stage's reduction.

        Example::

            >>> Stage("layer2", 2, 128, 8, "layer2").feature_layout()
            LayerLayout(channels=128, channels_last=False, reduction=8, prefix_tokens=None, unaligned=None)
        """
        return LayerLayout(self.channels, False, self.reduction)


@dataclass(frozen=True)
class AttentionWeights:
    """The softmax attention weights of some blocks of a ViT, for one batch, as the model computed them.

    Attributes:
        weights: per block name, ``(B, heads, N, N)``: row ``q`` is query token ``q``'s attention over the
            ``N`` tokens (each row sums to 1).
        prefix: the tokens before the patch tokens, in token order (``"class"``, ``"distillation"``,
            ``"register 0"``, ...); the class token comes first.
        grid: ``(h, w)`` of the patch tokens that follow them, row-major.
    """

    weights: dict[str, torch.Tensor]
    prefix: tuple[str, ...]
    grid: tuple[int, int]


def _output_itself(output: object) -> torch.Tensor:
    return output


@dataclass(frozen=True)
class Head:
    """A backbone's classifier: the whole network from pixels to class scores, and the names of its classes.

    The network runs the backbone's own modules (the same objects as in ``Backbone.model``), so a hook on a stage
    module fires when the head runs and gradients flow from the scores back to that stage.

    Attributes:
        network: the classification model (timm's model itself; transformers' ``*ForImageClassification``).
        class_names: the name of each class, by index (``config.id2label``; timm's ImageNet names offline).
        classifier: the layers after the backbone (timm's ``get_classifier()``, transformers' ``classifier``).
        read_logits: turns the network's output into the ``(B, classes)`` scores (transformers: ``.logits``).

    Example::

        >>> head = load_backbone("resnet18", pretrained=False).head
        >>> head.logits(torch.randn(1, 3, 224, 224)).shape, head.class_names[281]
        (torch.Size([1, 1000]), 'tabby, tabby cat')
    """

    network: nn.Module
    class_names: tuple[str, ...]
    classifier: nn.Module
    read_logits: Callable[[object], torch.Tensor] = _output_itself

    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The ``(B, classes)`` scores of a batch, in the caller's grad mode (gradients flow where enabled)."""
        return self.read_logits(self.network(pixel_values))

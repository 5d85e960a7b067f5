"""Backbone loaders: :func:`load_backbone` reads a spec, picks its source and returns a :class:`Backbone`.

Specs:
    - ``"resnet18"``, ``"timm:resnet18"``, ``"convnext_tiny.fb_in22k"``: timm registry names.
    - ``"hf-hub:timm/resnet18.a1_in1k"``: a timm model on the Hugging Face hub (cache first).
    - ``"hf:microsoft/resnet-50"``, ``"hf:/path/to/folder"``: transformers; an ``AutoBackbone``, or the
      backbone inside a task model.
    - a path to a ``.safetensors`` / ``.pt`` / ``.pth`` file (with ``arch=``) or a folder.
    - ``"default"``: the built-in ``tf_efficientnet_lite0`` with ImageNet weights, offline.

Example::

    >>> bb = load_backbone("resnet18", out_indices=(1, 2), pretrained=False)
    >>> bb.channels, bb.reductions, bb.weights
    ([64, 128], [4, 8], 'random')
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import torch

from .._args import shown
from ..errors import CheckpointError, InvalidArgumentError
from ..stages import OutFeaturesT, OutIndicesT
from ._base import WEIGHT_ORIGINS, Backbone, Stage, resolve_device
from ._checkpoint import WEIGHT_SUFFIXES

__all__ = [
    "Backbone",
    "Stage",
    "WEIGHT_ORIGINS",
    "load_backbone",
    "list_backbones",
    "resolve_device",
    "SUGGESTED",
]

SUGGESTED = (
    "default",
    "resnet18",
    "resnet50",
    "convnext_tiny",
    "efficientnet_b0",
    "mobilenetv3_large_100",
    "regnety_016",
    "vit_small_patch16_224",
    "swin_tiny_patch4_window7_224",
    "deit_small_patch16_224",
)
"""Checkpoints the panel suggests; any timm name, ``hf-hub:``, ``hf:`` spec or path works as well."""


def list_backbones(pattern: str | None = None) -> list[str]:
    """Suggested specs, or every timm name (and ``"default"``) matching a wildcard pattern.

    Example::

        >>> list_backbones("resnet1*")[:3]
        ['resnet10t', 'resnet14t', 'resnet18']
    """
    if pattern is None:
        return list(SUGGESTED)
    if not isinstance(pattern, str):
        raise InvalidArgumentError(f"pattern={shown(pattern)}; pass a glob such as 'resnet*', or None.")
    import timm

    found = ["default"] if fnmatch.fnmatch("default", pattern) else []
    return found + timm.list_models(pattern)


def _is_local(spec: str) -> bool:
    try:
        return _is_path(spec) or Path(spec).expanduser().exists()
    except (OSError, ValueError):  # a name too long for the file system: no local file
        return False


def _is_path(spec: str) -> bool:
    return (
        spec.endswith(WEIGHT_SUFFIXES)
        or spec.startswith((".", "/", "~"))
        or os.sep in spec
        and Path(spec).exists()
    )


def load_backbone(
    spec: str | os.PathLike = "default",
    out_indices: OutIndicesT | None = None,
    out_features: OutFeaturesT | None = None,
    *,
    pretrained: bool = True,
    device: str | torch.device = "auto",
    **kwargs,
) -> Backbone:
    """Load a backbone from any spec (see the module docs) with the selected stages.

    Args:
        spec: what to load.
        out_indices: stage indices (list or tuple, negatives allowed), transformers' rules.
        out_features: stage names (list), transformers' rules; neither selects the last stage.
        pretrained: real weights or a clear error (True); random init (False, ``bb.weights == "random"``).
        device: ``"auto"`` (cuda, then mps, then cpu), or any torch device.
        kwargs: ``arch=`` for bare weight files; anything else goes to the model's constructor.

    Raises:
        UnknownBackboneError, WeightsUnavailableError, CheckpointError, UnsafeCheckpointError,
        MissingDependencyError, StageSelectionError (stage selection), InvalidArgumentError (``arch=`` for a
        spec that is no local file, an unknown device).
    """
    options = dict(pretrained=pretrained, device=device, out_indices=out_indices, out_features=out_features)
    if not isinstance(spec, (str, os.PathLike)) or not isinstance(os.fspath(spec), str):
        raise InvalidArgumentError(f"spec={shown(spec)} ({type(spec).__name__}); pass a string or a path.")
    spec = os.fspath(spec).strip()
    if "\x00" in spec:
        raise InvalidArgumentError(f"spec={shown(spec)} holds a NUL byte; pass a model name or a plain path.")
    if not spec:  # Path("") is the current folder: an empty box in the panel must not load it
        raise InvalidArgumentError(
            'An empty spec names no model. Pass "default", a timm name ("resnet18"), "hf:<repo or folder>", '
            '"hf-hub:<timm repo>" or a path ("." for the current folder).'
        )
    local = spec != "default" and not spec.startswith(("hf-hub:", "hf:")) and _is_local(spec)
    if "arch" in kwargs and not local and spec != "default":
        raise InvalidArgumentError(
            f'arch= names the timm architecture of a bare weights file, but "{spec}" is not a local file or '
            "folder: its architecture is known already. Drop arch=, or pass the path of the weights file."
        )
    try:
        return _load(spec, local, options, kwargs)
    except RecursionError:
        raise CheckpointError(
            f"A config file of {shown(spec)} is nested too deeply to read: it is no model config. Replace its "
            "config.json / preprocessor_config.json with the model's own."
        ) from None
    except PermissionError as err:
        raise CheckpointError(
            f"Cannot read {err.filename or spec} (permission denied). Check its permissions, or copy the model "
            "somewhere you can read."
        ) from None


def _load(spec: str, local: bool, options: dict, kwargs: dict) -> Backbone:
    """The source's loader for ``spec``."""
    if spec == "default":
        from .default import load_default

        return load_default(**options, **kwargs)
    if spec.startswith("hf-hub:"):
        from .timm import load_timm_hub

        return load_timm_hub(spec[len("hf-hub:") :], **options, **kwargs)
    if spec.startswith("hf:"):
        from .hf import load_hf

        return load_hf(spec[len("hf:") :], **options, **kwargs)
    if local:
        from .local import load_local

        return load_local(spec, **options, **kwargs)
    from .timm import load_timm

    return load_timm(spec.removeprefix("timm:"), **options, **kwargs)

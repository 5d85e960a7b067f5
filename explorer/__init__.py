"""explorer: see what a vision backbone sees, in Jupyter.

Importing the package is cheap: torch, timm and transformers load on first use of a name that needs them.

Example::

    >>> import explorer
    >>> bb = explorer.load_backbone("default", out_indices=[1, 2])
    >>> maps = bb.extract(explorer.sample_images(["chelsea"])["chelsea"])
    >>> maps.shapes
    {'blocks.1': (1, 24, 56, 56), 'blocks.2': (1, 40, 28, 28)}
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "load_backbone": "explorer.backbones",
    "list_backbones": "explorer.backbones",
    "Backbone": "explorer.backbones",
    "Stage": "explorer.backbones",
    "FeatureMaps": "explorer.hooks",
    "capture": "explorer.hooks",
    "list_layers": "explorer.hooks",
    "select_stages": "explorer.stages",
    "load_image": "explorer.images",
    "sample_images": "explorer.images",
    "Preprocess": "explorer.images",
    "Explorer": "explorer.widgets",
    "ExplorerState": "explorer.widgets",
    "ExplorerError": "explorer.errors",
    "UnknownBackboneError": "explorer.errors",
    "WeightsUnavailableError": "explorer.errors",
    "CheckpointError": "explorer.errors",
    "UnsafeCheckpointError": "explorer.errors",
    "MissingDependencyError": "explorer.errors",
    "LayerNotFoundError": "explorer.errors",
    "ImageError": "explorer.errors",
    "CaptureError": "explorer.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .backbones import Backbone, Stage, list_backbones, load_backbone
    from .errors import (
        CaptureError,
        CheckpointError,
        ExplorerError,
        ImageError,
        LayerNotFoundError,
        MissingDependencyError,
        UnknownBackboneError,
        UnsafeCheckpointError,
        WeightsUnavailableError,
    )
    from .hooks import FeatureMaps, capture, list_layers
    from .images import Preprocess, load_image, sample_images
    from .stages import select_stages
    from .widgets import Explorer, ExplorerState


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'explorer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

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

from . import errors as _errors  # plain exception classes: cheap

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
    "model_view": "explorer.preprocessing",
    "sample_images": "explorer.images",
    "Preprocess": "explorer.preprocessing",
    "Explorer": "explorer.widgets",
    "ExplorerState": "explorer.widgets",
    "ExplorerError": "explorer.errors",
    "ChannelStats": "explorer.stats",
    "ChannelDifference": "explorer.stats",
    "Histogram": "explorer.histograms",
    "channel_stats": "explorer.stats",
    "channel_difference": "explorer.stats",
    "stage_similarity": "explorer.stats",
    "histogram": "explorer.histograms",
    "GridLayout": "explorer.render",
    "render_grid": "explorer.render",
    "select_channels": "explorer.render",
    "value_range": "explorer.render",
    "colormap_lut": "explorer.render",
    "overlay": "explorer.render",
    "to_png": "explorer.render",
    "save_png": "explorer.export",
    "save_image": "explorer.export",
    "stats_to_csv": "explorer.export",
    "stats_to_json": "explorer.export",
    "save_feature_maps": "explorer.export",
    "load_feature_maps": "explorer.export",
    "heatmap_figure": "explorer.figures",
    "stat_bar_figure": "explorer.figures",
    "histogram_figure": "explorer.figures",
    "stage_grid_figure": "explorer.figures",
    "patch_pca_figure": "explorer.figures",
    "similarity_figure": "explorer.figures",
    "attention_figure": "explorer.figures",
    "scan": "explorer.dataset",
    "Scan": "explorer.dataset",
    "Exemplar": "explorer.dataset",
    "sample_dataset": "explorer.dataset",
    "concepts": "explorer.concept_discovery",
    "Concepts": "explorer.concept_discovery",
    "cam": "explorer.class_activation",
    "CAM": "explorer.class_activation",
    "cam_methods": "explorer.class_activation",
    "pca": "explorer.patch_views",
    "similarity": "explorer.patch_views",
    "PCABasis": "explorer.patch_views",
    "PatchPCA": "explorer.patch_views",
    "Similarity": "explorer.patch_views",
    "attention": "explorer.attention_maps",
    "Attention": "explorer.attention_maps",
    "visualize": "explorer.feature_vis",
    "FeatureVis": "explorer.feature_vis",
    "magnitude_spectrum": "explorer.feature_vis",
}

_ERRORS = {name: "explorer.errors" for name in _errors.__all__ if name not in _EXPORTS}
"""The families of :class:`ExplorerError` (:mod:`explorer.errors`): reachable as ``explorer.<Name>`` for ``except``
clauses, kept out of ``__all__`` so that star imports and the API listing show functions and classes."""

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .attention_maps import Attention, attention
    from .backbones import Backbone, Stage, list_backbones, load_backbone
    from .class_activation import CAM, cam, cam_methods
    from .concept_discovery import Concepts, concepts
    from .dataset import Exemplar, Scan, sample_dataset, scan
    from .errors import (  # ExplorerError in __all__; the others for except clauses (see _ERRORS)
        AttentionError,
        CacheError,
        CAMError,
        CaptureError,
        CheckpointError,
        ClusterError,
        DatasetError,
        ExplorerError,
        FeatureVisError,
        GradientError,
        ImageError,
        InvalidArgumentError,
        LayerNotFoundError,
        MissingDependencyError,
        StageSelectionError,
        UnknownBackboneError,
        UnsafeCheckpointError,
        WeightsUnavailableError,
        WriteError,
    )
    from .export import (
        load_feature_maps,
        save_feature_maps,
        save_image,
        save_png,
        stats_to_csv,
        stats_to_json,
    )
    from .feature_vis import FeatureVis, magnitude_spectrum, visualize
    from .figures import (
        attention_figure,
        heatmap_figure,
        histogram_figure,
        patch_pca_figure,
        similarity_figure,
        stage_grid_figure,
        stat_bar_figure,
    )
    from .histograms import Histogram, histogram
    from .hooks import FeatureMaps, capture, list_layers
    from .images import load_image, sample_images
    from .patch_views import PatchPCA, PCABasis, Similarity, pca, similarity
    from .preprocessing import Preprocess, model_view
    from .render import GridLayout, colormap_lut, overlay, render_grid, select_channels, to_png, value_range
    from .stages import select_stages
    from .stats import ChannelDifference, ChannelStats, channel_difference, channel_stats, stage_similarity
    from .widgets import Explorer, ExplorerState


def __getattr__(name: str):
    module = _EXPORTS.get(name) or _ERRORS.get(name)
    if module is None:
        raise AttributeError(f"module 'explorer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_ERRORS})

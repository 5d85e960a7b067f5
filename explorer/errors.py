"""The exceptions the library raises, one class per kind of mistake, each naming its fix.

Every class derives from :class:`ExplorerError`, so a caller (the panel's status line, a notebook) can catch them
all at once, and from the built-in class a plain Python caller would expect (``ValueError``, ``ImportError`` ...).

The families, by what went wrong:

* loading a backbone: :class:`UnknownBackboneError`, :class:`WeightsUnavailableError`, :class:`CheckpointError`
  (and its :class:`UnsafeCheckpointError`), :class:`MissingDependencyError`;
* arguments and inputs: :class:`InvalidArgumentError` (and its :class:`StageSelectionError`),
  :class:`LayerNotFoundError`, :class:`ImageError`, :class:`CaptureError`;
* analyses: :class:`CAMError`, :class:`GradientError`, :class:`AttentionError`, :class:`FeatureVisError`;
* scans and files: :class:`DatasetError`, :class:`CacheError`, :class:`WriteError`, :class:`ClusterError`.

Each is also reachable as ``explorer.<Name>`` (``except explorer.ImageError``); ``explorer.__all__`` lists only
:class:`ExplorerError`, so ``from explorer import *`` brings the functions and classes, not nineteen exceptions.

Example::

    >>> try:
    ...     explorer.load_backbone("resnet-18")
    ... except explorer.UnknownBackboneError as err:
    ...     print(err)
    Unknown model "resnet-18". Closest timm names: resnet18, ... or "default".
"""

from __future__ import annotations

__all__ = [
    "ExplorerError",
    "UnknownBackboneError",
    "WeightsUnavailableError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "MissingDependencyError",
    "LayerNotFoundError",
    "ImageError",
    "CaptureError",
    "InvalidArgumentError",
    "StageSelectionError",
    "CAMError",
    "GradientError",
    "DatasetError",
    "CacheError",
    "AttentionError",
    "FeatureVisError",
    "WriteError",
    "ClusterError",
]


class ExplorerError(Exception):
    """Base class of every error the explorer raises on purpose."""


class UnknownBackboneError(ExplorerError, ValueError):
    """The spec names no model that any source knows."""


class WeightsUnavailableError(ExplorerError, RuntimeError):
    """``pretrained=True`` but no weights can be had (hub unreachable, nothing cached)."""


class CheckpointError(ExplorerError, ValueError):
    """A checkpoint file is unreadable, truncated or made for another architecture."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle checkpoint needs code execution to load; it was refused and nothing ran."""


class MissingDependencyError(ExplorerError, ImportError):
    """An optional package is needed (for example transformers for ``hf:`` specs)."""


class LayerNotFoundError(ExplorerError, ValueError):
    """A layer name passed to ``capture`` does not exist in the model."""


class ImageError(ExplorerError, ValueError):
    """An image could not be read, or is refused (empty, corrupt, a decompression bomb)."""


class CaptureError(ExplorerError, RuntimeError):
    """A forward pass ended without producing a requested feature map."""


class InvalidArgumentError(ExplorerError, ValueError, TypeError):
    """An argument's value or type is outside what the function accepts (a size out of bounds, a float where a
    count goes, an unknown device); the message says what it accepts.

    It is both a ``ValueError`` and a ``TypeError`` (as NumPy's ``AxisError`` is both a ``ValueError`` and an
    ``IndexError``), so callers catching either builtin keep working.
    """


class StageSelectionError(InvalidArgumentError):
    """``out_indices`` / ``out_features`` break transformers' ``BackboneConfigMixin`` rules; the message is
    transformers' own where transformers has one (long lists are shortened)."""


class DatasetError(ExplorerError, ValueError):
    """A scan's source is missing, empty, holds no readable image, or is of a kind the scan cannot read."""


class CacheError(ExplorerError, OSError):
    """A scan's cache folder cannot be written (permissions, a full disk) or is not a scan folder."""


class WriteError(ExplorerError, OSError):
    """A file cannot be written: the folder is not writable, the disk is full, or a symbolic link (or a folder)
    is in the file's place; explorer never writes through a link."""


class ClusterError(ExplorerError, RuntimeError):
    """A Ray cluster cannot be joined (a malformed or unreachable address), or a scan on it failed past Ray's own
    retries (a lost cluster, an error in a shard); the message gives Ray's reason in one line."""


class CAMError(ExplorerError, ValueError):
    """A class-activation map cannot be made as asked: an unknown method, a target the head (or the stage) does
    not have, a method that needs a head on a headless backbone, a stage the target does not depend on."""


class GradientError(ExplorerError, RuntimeError):
    """A gradient method on a model that cannot give gradients (weights made under ``torch.inference_mode()``)."""


class AttentionError(ExplorerError, ValueError):
    """Attention weights cannot be read as asked: the model has no attention blocks with a class token (a CNN,
    Swin's windowed attention), or the block named is not one of them."""


class FeatureVisError(ExplorerError, ValueError):
    """A feature visualisation cannot be made as asked: the model is in train mode, a class target on a backbone
    without a head, a layer the forward pass never runs."""

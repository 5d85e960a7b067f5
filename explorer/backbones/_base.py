"""``Backbone`` and ``Stage``: the one interface every source (timm, transformers, local files, default) fills in.

A Backbone answers questions before anything runs (``stage_names``, ``channels``, ``reductions``) and returns
NCHW feature maps of the selected stages. Stage selection follows transformers' ``out_indices`` /
``out_features`` rules (:mod:`explorer.stages`); setting either re-selects. The forward pass stops after the last
selected stage.

Example::

    >>> bb = load_backbone("resnet18", out_indices=(1, 2), pretrained=False)
    >>> bb.out_features, bb.channels, bb.reductions
    (['layer1', 'layer2'], [64, 128], [4, 8])
    >>> bb(torch.randn(1, 3, 224, 224)).shapes
    {'layer1': (1, 64, 56, 56), 'layer2': (1, 128, 28, 28)}
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..hooks import FeatureMaps, LayerLayout, capture
from ..images import ImageInput, Preprocess, preprocess
from ..stages import OutFeaturesT, OutIndicesT, select_stages

__all__ = ["Backbone", "Stage", "WEIGHT_ORIGINS", "resolve_device"]

_log = logging.getLogger(__name__)

WEIGHT_ORIGINS = ("hub", "cache", "file", "package", "random")
"""Where a backbone's weights came from; ``Backbone.weights`` is one of these."""


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

    def output_shape(self, input_size: tuple[int, int]) -> tuple[int, int, int]:
        """``(C, H, W)`` of this stage's map for an input of ``(height, width)``."""
        height, width = input_size
        return (self.channels, -(-height // self.reduction), -(-width // self.reduction))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is cuda when available, then mps, then cpu; anything else goes to ``torch.device``."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Backbone:
    """A vision backbone with selectable stages, returning NCHW feature maps.

    Built by :func:`explorer.load_backbone`; sources subclass it only where their forward pass differs.

    Attributes:
        model: the underlying ``nn.Module``, in eval mode.
        spec: the spec it was loaded from (``"resnet18"``, ``"hf:/path"``, ``"default"``).
        weights: where the weights came from, one of :data:`WEIGHT_ORIGINS`.
        preprocess: the checkpoint's input configuration (size, mean, std, interpolation, crop).
        all_stages: every stage, in network order.
    """

    def __init__(
        self,
        model: nn.Module,
        stages: Sequence[Stage],
        *,
        spec: str,
        weights: str,
        preprocess: Preprocess,
        device: str | torch.device = "auto",
        out_features: OutFeaturesT | None = None,
        out_indices: OutIndicesT | None = None,
    ) -> None:
        if weights not in WEIGHT_ORIGINS:
            raise ValueError(f"weights must be one of {WEIGHT_ORIGINS}, got {weights!r}")
        self.spec = spec
        self.weights = weights
        self.preprocess = preprocess
        self.all_stages = list(stages)
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.to(resolve_device(device))
        self._out_features, self._out_indices = select_stages(self.stage_names, out_features, out_indices)
        self._on_select()

    # -- what is known before anything runs ---------------------------------------------------------------
    @property
    def stage_names(self) -> list[str]:
        """Every stage name, in network order."""
        return [stage.name for stage in self.all_stages]

    @property
    def out_features(self) -> list[str]:
        """Names of the selected stages; setting it re-selects (transformers' rules)."""
        return list(self._out_features)

    @out_features.setter
    def out_features(self, out_features: OutFeaturesT | None) -> None:
        self._select(out_features, None)

    @property
    def out_indices(self) -> list[int]:
        """Indices of the selected stages, as given (negative ones kept); setting it re-selects."""
        return list(self._out_indices)

    @out_indices.setter
    def out_indices(self, out_indices: OutIndicesT | None) -> None:
        self._select(None, out_indices)

    def _select(self, out_features: OutFeaturesT | None, out_indices: OutIndicesT | None) -> None:
        """Apply a selection, or raise and keep the previous one."""
        previous = self._out_features, self._out_indices
        self._out_features, self._out_indices = select_stages(self.stage_names, out_features, out_indices)
        try:
            self._on_select()
        except Exception:
            self._out_features, self._out_indices = previous
            raise

    @property
    def stages(self) -> list[Stage]:
        """The selected stages."""
        by_name = {stage.name: stage for stage in self.all_stages}
        return [by_name[name] for name in self._out_features]

    @property
    def channels(self) -> list[int]:
        """Channels of each selected stage."""
        return [stage.channels for stage in self.stages]

    @property
    def reductions(self) -> list[int]:
        """Stride of each selected stage relative to the input."""
        return [stage.reduction for stage in self.stages]

    @property
    def device(self) -> torch.device:
        """The device the model and its feature maps live on."""
        return self._device

    precision: torch.dtype | None = None
    """Run the forward pass under autocast with this dtype (``torch.float16``, ``torch.bfloat16``; for GPUs);
    None runs in the weights' own dtype. The weights are never converted, so switching back is exact."""

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type of the model's parameters."""
        return next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Backbone:
        """Move the model (``device="auto"`` allowed) or change its precision; returns ``self``.

        Example::

            >>> bb.to("cuda", torch.float16).dtype
            torch.float16
        """
        if device is not None:
            self._device = resolve_device(device)
            self.model.to(self._device)
        if dtype is not None:
            self.model.to(dtype)
        return self

    def stage_table(self, input_size: tuple[int, int] | None = None) -> list[dict]:
        """One row per stage: name, index, channels, reduction, output shape, module, selected.

        Example::

            >>> bb.stage_table()[1]
            {'index': 1, 'name': 'layer1', 'channels': 64, 'reduction': 4, 'shape': (64, 56, 56), ...}
        """
        size = input_size or self.preprocess.input_size
        selected = set(self._out_features)
        return [
            {
                "index": stage.index,
                "name": stage.name,
                "channels": stage.channels,
                "reduction": stage.reduction,
                "shape": stage.output_shape(size),
                "module": stage.module,
                "selected": stage.name in selected,
            }
            for stage in self.all_stages
        ]

    # -- running -------------------------------------------------------------------------------------------
    def __call__(self, pixel_values: torch.Tensor) -> FeatureMaps:
        """Feature maps of the selected stages for a ``(B, 3, H, W)`` batch, every tensor NCHW on ``device``."""
        return self.capture(pixel_values, self.out_features)

    def extract(self, images: Sequence[ImageInput] | ImageInput) -> FeatureMaps:
        """Feature maps from images (paths, bytes, PIL images, arrays), preprocessed as the checkpoint expects.

        Example::

            >>> bb.extract(["cat.jpg"]).shapes
            {'layer1': (1, 64, 56, 56), 'layer2': (1, 128, 28, 28)}
        """
        return self(self.pixel_values(images))

    def pixel_values(self, images: Sequence[ImageInput] | ImageInput) -> torch.Tensor:
        """The normalised ``(B, 3, H, W)`` batch this backbone's ``extract`` would run on."""
        return preprocess(images, self.preprocess, device=self.device, dtype=self.dtype)

    def capture(self, pixel_values: torch.Tensor, layers: Sequence[str]) -> FeatureMaps:
        """Feature maps of stages (by stage name) and of any named modules (see :func:`explorer.list_layers`).

        One forward pass serves them all; it stops after the last of them where the source allows (timm, local
        and default models). Runs under ``torch.inference_mode()``, and autocast when :attr:`precision` is set.

        Example::

            >>> bb.capture(x, layers=["layer1", "layer2.0.conv1"]).shapes
            {'layer1': (1, 64, 56, 56), 'layer2.0.conv1': (1, 128, 28, 28)}
        """
        if isinstance(layers, str):
            layers = [layers]
        pixel_values = self._prepare(pixel_values)
        precision = self.precision
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=precision or torch.float32, enabled=precision is not None),
        ):
            return self._forward(pixel_values, list(dict.fromkeys(layers)))

    # -- for sources to override ---------------------------------------------------------------------------
    def _capture_options(self, pixel_values: torch.Tensor) -> dict:
        layouts = {s.module: LayerLayout(s.channels, s.channels_last, s.reduction) for s in self.all_stages}
        return {"layouts": layouts, "input_size": tuple(pixel_values.shape[-2:])}

    def _prepare(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            raise TypeError(
                "pixel_values must be a (B, 3, H, W) tensor; for images use bb.extract(images) instead."
            )
        return pixel_values.to(self.device, self.dtype)

    def _forward(self, pixel_values: torch.Tensor, layers: list[str]) -> FeatureMaps:
        """Hooks on the modules behind ``layers``; the pass stops once the last of them has run."""
        by_name = {stage.name: stage for stage in self.all_stages}
        modules = {name: by_name[name].module if name in by_name else name for name in layers}
        with capture(self.model, list(modules.values()), **self._capture_options(pixel_values)) as raw:
            self.model(pixel_values)
        return FeatureMaps((name, raw[module]) for name, module in modules.items())

    def _on_select(self) -> None:
        """Called after every (re-)selection; sources that hold their own selection sync it here."""

    def __repr__(self) -> str:
        rows = "\n".join(
            f"  {'*' if row['selected'] else ' '} {row['index']:>2} {row['name']:<24} {row['channels']:>5} ch  "
            f"/{row['reduction']:<3} {row['shape']}"
            for row in self.stage_table()
        )
        return (
            f"Backbone({self.spec!r}, weights={self.weights!r}, device={str(self.device)!r}, "
            f"input={self.preprocess.input_size})\n{rows}"
        )

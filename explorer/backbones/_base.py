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

import functools
import logging
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from .._args import closest, shown
from ..errors import ExplorerError, InvalidArgumentError, LayerNotFoundError, StageSelectionError
from ..hooks import FeatureMaps, capture, tap, to_nchw
from ..images import ImageInput
from ..preprocessing import Preprocess, preprocess
from ..stages import OutFeaturesT, OutIndicesT, select_stages
from ._attention import AttentionReader
from ._checkpoint import nonfinite_note
from ._device import eval_mode, resolve_device
from ._parts import WEIGHT_ORIGINS, AttentionWeights, Head, Stage, WeightOrigin
from ._shapes import StageShapes

__all__ = ["AttentionWeights", "Backbone", "Head", "Stage", "WEIGHT_ORIGINS", "resolve_device"]

_log = logging.getLogger(__name__)


def _select_stages(stage_names, out_features, out_indices) -> tuple[list[str], list[int]]:
    """transformers' selection rules (:func:`~explorer.stages.select_stages`), and an empty one refused: transformers
    accepts it, and every forward pass then fails."""
    selected = select_stages(stage_names, out_features, out_indices)
    if not selected[0]:
        given = "out_indices" if out_indices is not None and not len(out_indices) else "out_features"
        raise StageSelectionError(
            f"{given} must select at least one stage of stage_names {list(stage_names)}, got []. Pass None for "
            "the last stage."
        )
    return selected


class Backbone(StageShapes, AttentionReader):
    """A vision backbone with selectable stages, returning NCHW feature maps.

    Built by :func:`explorer.load_backbone`; sources subclass it only where their forward pass differs.

    Attributes:
        model: the underlying ``nn.Module``. Every forward pass runs it in eval mode and then gives it back its
            own mode, so a model handed in by the caller is left as it was found (models the sources build are
            in eval mode already).
        spec: the spec it was loaded from (``"resnet18"``, ``"hf:/path"``, ``"default"``).
        weights_origin: where the weights came from, one of :data:`WEIGHT_ORIGINS` (``"random"``: random
            init). A string, not the weights: the tensors are ``model.state_dict()``.
        weights: the same string as :attr:`weights_origin` (the name DESIGN's public API gives it).
        weights_note: what the user should know about the weights, else empty: tensors cast from another
            float type, NaN or inf values (which are also warned about when the backbone is built).
        preprocess: the checkpoint's input configuration (size, mean, std, interpolation, crop).
        all_stages: every stage, in network order.
    """

    def __init__(
        self,
        model: nn.Module,
        stages: Sequence[Stage],
        *,
        spec: str,
        weights: WeightOrigin,
        preprocess: Preprocess,
        device: str | torch.device = "auto",
        out_features: OutFeaturesT | None = None,
        out_indices: OutIndicesT | None = None,
        weights_note: str = "",
    ) -> None:
        if weights not in WEIGHT_ORIGINS:
            raise ValueError(f"weights must be one of {WEIGHT_ORIGINS}, got {weights!r}")
        self.spec = spec
        self.weights_origin: WeightOrigin = weights
        nonfinite = nonfinite_note(model)
        if nonfinite:
            warnings.warn(f"{spec}: {nonfinite}", RuntimeWarning, stacklevel=3)
        self.weights_note = "; ".join(note for note in (weights_note, nonfinite) if note)
        self.preprocess = preprocess
        self.all_stages = list(stages)
        self.model = model
        self._shapes: dict[tuple[int, int], dict[str, tuple[int, int, int]]] = {}
        self.to(resolve_device(device))
        self._out_features, self._out_indices = _select_stages(self.stage_names, out_features, out_indices)
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
        self._out_features, self._out_indices = _select_stages(self.stage_names, out_features, out_indices)
        try:
            self._on_select()
        except Exception:
            self._out_features, self._out_indices = previous
            raise

    @property
    def stages(self) -> list[Stage]:
        """The selected stages."""
        return [self.stage(name) for name in self._out_features]

    def stage(self, name: str) -> Stage:
        """The stage called ``name``, selected or not: the one lookup by name every module uses.

        Raises:
            LayerNotFoundError: no stage has that name; the message gives the closest names.

        Example::

            >>> load_backbone("resnet18", pretrained=False).stage("layer2").reduction
            8
        """
        for stage in self.all_stages:
            if stage.name == name:
                return stage
        raise LayerNotFoundError(
            f"No stage named {shown(name)}.{closest(name, self.stage_names)} Stages: {', '.join(self.stage_names)}."
        )

    def module_name(self, name: str) -> str:
        """The module path behind ``name``: a stage's module, or ``name`` itself for a layer (what
        :meth:`capture` takes).

        Example::

            >>> bb.module_name("blocks.1"), bb.module_name("blocks.1.0.conv_pw")   # a stage, a layer
            ('blocks.1', 'blocks.1.0.conv_pw')
        """
        return self.stage(name).module if name in self.stage_names else name

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

            >>> load_backbone("resnet18", pretrained=False, device="cpu").to("cpu", torch.float64).dtype
            torch.float64
        """
        head = self.head
        networks = [self.model] + (
            [head.network] if head is not None and head.network is not self.model else []
        )
        if device is not None:
            self._device = resolve_device(device)
            for network in networks:
                network.to(self._device)
        if dtype is not None:
            if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
                raise InvalidArgumentError(
                    f"dtype={shown(dtype)}; pass a floating torch dtype (torch.float16)."
                )
            for network in networks:
                network.to(dtype)
        return self

    # -- running -------------------------------------------------------------------------------------------
    def __call__(self, pixel_values: torch.Tensor) -> FeatureMaps:
        """Feature maps of the selected stages for a ``(B, 3, H, W)`` batch, every tensor NCHW on ``device``."""
        return self.capture(pixel_values, self.out_features)

    def extract(self, images: Sequence[ImageInput] | ImageInput) -> FeatureMaps:
        """Feature maps from images (paths, bytes, PIL images, arrays), preprocessed as the checkpoint expects.

        Example::

            >>> bb.extract([cat, photos["coffee"]]).shapes       # two PIL images (or paths, bytes, arrays)
            {'blocks.0': (2, 16, 112, 112), 'blocks.1': (2, 24, 56, 56), 'blocks.2': (2, 40, 28, 28), ...}
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

            >>> bb.capture(torch.randn(1, 3, 224, 224), layers=["blocks.1", "blocks.2.0.conv_pw"]).shapes
            {'blocks.1': (1, 24, 56, 56), 'blocks.2.0.conv_pw': (1, 144, 56, 56)}
        """
        if isinstance(layers, str):
            layers = [layers]
        if not isinstance(layers, (list, tuple)) or not all(isinstance(name, str) for name in layers):
            raise InvalidArgumentError(
                f"layers={shown(layers)}; pass a list of stage or layer names (explorer.list_layers(bb))."
            )
        pixel_values = self._prepare(pixel_values)
        precision = self.precision
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=precision or torch.float32, enabled=precision is not None),
            eval_mode(self.model),
        ):
            try:
                return self._forward(pixel_values, list(dict.fromkeys(layers)), self.model)
            except (AssertionError, RuntimeError, ValueError) as err:
                refused = self._size_error(err, pixel_values)
                if refused is None:
                    raise
                raise refused from err

    def _size_error(self, err: Exception, pixel_values: torch.Tensor) -> InvalidArgumentError | None:
        """What to do instead, when a model built for one size said in its own words that it refuses this one
        (timm's asserts, a position-embedding shape mismatch, transformers' ValueError); else None."""
        size = tuple(pixel_values.shape[-2:])
        about_size = any(word in str(err).lower() for word in ("size", "match", "shape"))
        if size == self.preprocess.input_size or isinstance(err, ExplorerError) or not about_size:
            return None
        return self._size_refused(size, err)

    # -- the head, and what explaining a stage needs to know ------------------------------------------------
    @functools.cached_property
    def head(self) -> Head | None:
        """The classifier head the checkpoint came with; None for a headless backbone.

        Example::

            >>> load_backbone("resnet18", pretrained=False).head.class_names[:1]
            ('tench, Tinca tinca',)
        """
        return self._head()

    @property
    def class_names(self) -> list[str]:
        """The head's class names by index (``config.id2label``, timm's ImageNet names); empty without a head.

        Example::

            >>> load_backbone("resnet18", pretrained=False).class_names[281]
            'tabby, tabby cat'
        """
        head = self.head
        return list(head.class_names) if head is not None else []

    @property
    def reads_class_token_only(self) -> bool:
        """The head reads only the class token after the last stage (a ViT pooled by its class token), so that
        stage's patch tokens get no gradient from it; a class-activation map then explains an earlier stage."""
        return False

    @property
    def weights(self) -> WeightOrigin:
        """Where the weights came from (:attr:`weights_origin`, one of :data:`WEIGHT_ORIGINS`), not the weights."""
        return self.weights_origin

    def out_of_order(self, module: str) -> str:
        """Why the raw output of ``module`` (a name from :func:`explorer.list_layers`) holds its locations in
        an order other than the image's although its shape is a grid (Hiera's unrolled tokens, window-major
        tokens); empty when it is in image order.

        The one place a source says which modules these are: class-activation maps refuse such a stage, and
        :meth:`capture` flags such layers in ``FeatureMaps.unaligned`` (stage maps are put back in image order
        by the source, so they are never flagged).

        Example::

            >>> load_backbone("hiera_tiny_224", pretrained=False).out_of_order("blocks.0")
            "tokens in Hiera's unrolled order, not in image order"

        Raises:
            InvalidArgumentError: ``module`` is not a string.
        """
        if not isinstance(module, str):
            raise InvalidArgumentError(
                f"module={shown(module)}; pass a module name (a string) from explorer.list_layers(bb)."
            )
        return self._out_of_order(module)

    def _out_of_order(self, module: str) -> str:
        return ""  # each source says which of its modules these are

    def stage_maps(self, pixel_values: torch.Tensor, names: Sequence[str]) -> FeatureMaps:
        """The maps of stages ``names`` exactly as :meth:`capture` gives them (after a stage's own norm), but
        in the caller's grad mode and precision, so gradients flow back through them (what a headless
        class-activation map scores).

        Example::

            >>> x = torch.randn(1, 3, 224, 224, requires_grad=True)
            >>> with torch.enable_grad():
            ...     bb.stage_maps(x, ["blocks.4"])["blocks.4"].sum().backward()
            >>> x.grad.abs().sum() > 0
            tensor(True)
        """
        listed = isinstance(names, (list, tuple)) and all(isinstance(name, str) for name in names)
        if not listed or not names or any(name not in self.stage_names for name in names):
            raise InvalidArgumentError(
                f"names={shown(names)}; pass a list of stage names from {', '.join(self.stage_names)}."
            )
        pixel_values = self._prepare(pixel_values)
        with eval_mode(self.model):
            return self._stage_maps(pixel_values, list(dict.fromkeys(names)))

    # -- for sources to override ---------------------------------------------------------------------------
    def _head(self) -> Head | None:
        """The source's classifier head (:attr:`head`); None: headless."""
        return None

    def _stage_maps(self, pixel_values: torch.Tensor, names: list[str]) -> FeatureMaps:
        """:meth:`stage_maps` for a source whose stage maps are module outputs: hooks that keep gradients."""
        hw = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
        layouts = self._layouts(names, hw)
        modules = {self.stage(name).module: name for name in names}

        def keep(module: str, output: object) -> torch.Tensor:
            return to_nchw(output, hw, layouts[modules[module]])

        with tap(self.model, list(modules), stop_early=True, keep=keep) as kept:
            self.model(pixel_values)
        return FeatureMaps((name, kept[self.stage(name).module]) for name in names)

    def _prepare(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            raise InvalidArgumentError(
                "pixel_values must be a (B, 3, H, W) tensor; for images use bb.extract(images) instead."
            )
        return pixel_values.to(self.device, self.dtype)

    def _forward(self, pixel_values: torch.Tensor, layers: list[str], model: nn.Module) -> FeatureMaps:
        """Hooks on the modules behind ``layers``; the pass stops once the last of them has run.

        ``model`` is :attr:`model`, or its meta-device copy when only shapes are wanted.
        """
        modules = {name: self.module_name(name) for name in layers}
        with capture(
            model, list(modules.values()), **self._capture_options(pixel_values, model, layers)
        ) as raw:
            model(pixel_values)
        unaligned = {
            name: raw.unaligned[module] for name, module in modules.items() if module in raw.unaligned
        }
        maps = FeatureMaps(((name, raw[module]) for name, module in modules.items()), unaligned=unaligned)
        return self._flag_reordered(maps)

    def _flag_reordered(self, maps: FeatureMaps) -> FeatureMaps:
        """``maps`` with the layers that :meth:`out_of_order` names flagged: no grid of the image."""
        stages = set(self.stage_names)  # stage maps are put back in image order
        for name in maps:
            reason = "" if name in stages else self.out_of_order(name)
            if reason:
                maps.unaligned.setdefault(name, reason)
        return maps

    def _on_select(self) -> None:
        """Called after every (re-)selection; sources that hold their own selection sync it here."""

    def __repr__(self) -> str:
        """What is known without running the model: spec, weights, device, input size and the selected stages
        (index, name, channels, reduction). :meth:`stage_table` has every stage with its output shape.

        Example::

            >>> load_backbone("resnet18", pretrained=False, out_indices=[1, 2], device="cpu")
            Backbone('resnet18', weights='random', device='cpu', input=(224, 224))
              1 layer1    64 ch /4
              2 layer2   128 ch /8
        """
        width = max(len(stage.name) for stage in self.stages)
        rows = "".join(
            f"\n  {stage.index:>2} {stage.name:<{width}} {stage.channels:>5} ch /{stage.reduction}"
            for stage in self.stages
        )
        return (
            f"Backbone({self.spec!r}, weights={self.weights_origin!r}, device={str(self.device)!r}, input={self.preprocess.input_size})"
            f"{rows}"
        )

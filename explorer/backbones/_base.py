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

import copy
import functools
import itertools
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .._args import shown, whole
from ..errors import AttentionError, ExplorerError, InvalidArgumentError, StageSelectionError
from ..hooks import FeatureMaps, LayerLayout, capture, find_layouts, resolve_layers, tap, to_nchw
from ..images import MAX_INPUT_SIDE, ImageInput, Preprocess, preprocess
from ..stages import OutFeaturesT, OutIndicesT, select_stages
from ._checkpoint import nonfinite_note

__all__ = ["AttentionWeights", "Backbone", "Head", "Stage", "WEIGHT_ORIGINS", "resolve_device"]

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


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with ``model`` in eval mode, then give every submodule back its own training flag.

    As torchvision's feature extractor does: the caller's model is left as it was found.
    """
    flags = [(module, module.training) for module in model.modules()]
    if not any(training for _, training in flags):
        yield
        return
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device: shapes without memory."""
    memo = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = (
            nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
        )
    return copy.deepcopy(model, memo)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is cuda when available, then mps, then cpu; anything else goes to ``torch.device``.

    Raises:
        InvalidArgumentError: not a device name (``"bogus"``), or a device this machine does not have
            (``"cuda"`` without a GPU, ``"cuda:3"`` with two).
    """
    if not isinstance(device, (str, torch.device)):
        raise InvalidArgumentError(
            f'device={shown(device)} ({type(device).__name__}); pass "auto", "cpu", "cuda", "cuda:1" or "mps".'
        )
    if str(device) != "auto":
        return _available(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _available(device: str | torch.device) -> torch.device:
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidArgumentError(
            f'device={shown(device)} is not a device. Pass "auto", "cpu", "cuda", "cuda:1" or "mps".'
        ) from None
    if resolved.type in ("cpu", "meta"):
        return resolved
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        count = int(mps is not None and mps.is_available())
    else:  # xpu and other backends: torch's own module says
        module = getattr(torch, resolved.type, None)
        count = module.device_count() if module is not None and hasattr(module, "device_count") else 0
    if (resolved.index or 0) >= count:
        have = f"{count} {resolved.type} device(s)" if count else f"no {resolved.type} device"
        raise InvalidArgumentError(
            f'device={str(device)!r}: this machine has {have}. Pass device="auto" (cuda, then mps, then cpu) '
            'or device="cpu".'
        )
    return resolved


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


class Backbone:
    """A vision backbone with selectable stages, returning NCHW feature maps.

    Built by :func:`explorer.load_backbone`; sources subclass it only where their forward pass differs.

    Attributes:
        model: the underlying ``nn.Module``. Every forward pass runs it in eval mode and then gives it back its
            own mode, so a model handed in by the caller is left as it was found (models the sources build are
            in eval mode already).
        spec: the spec it was loaded from (``"resnet18"``, ``"hf:/path"``, ``"default"``).
        weights: where the weights came from, one of :data:`WEIGHT_ORIGINS`.
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
        weights: str,
        preprocess: Preprocess,
        device: str | torch.device = "auto",
        out_features: OutFeaturesT | None = None,
        out_indices: OutIndicesT | None = None,
        weights_note: str = "",
    ) -> None:
        if weights not in WEIGHT_ORIGINS:
            raise ValueError(f"weights must be one of {WEIGHT_ORIGINS}, got {weights!r}")
        self.spec = spec
        self.weights = weights
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

    def output_shapes(self, input_size: tuple[int, int] | None = None) -> dict[str, tuple[int, int, int]]:
        """``(C, H, W)`` of every stage's map for a ``(height, width)`` input, exactly as the forward gives it.

        The model runs on the meta device (shapes only: no arithmetic, no memory), once per size; a model that
        cannot run there runs once on zeros. The input size defaults to the checkpoint's.

        Raises:
            InvalidArgumentError: the model does not accept inputs of this size (a ViT built for 224x224;
                timm ViTs accept any size when loaded with ``dynamic_img_size=True``).

        Example::

            >>> explorer.load_backbone("inception_v3", pretrained=False).output_shapes((299, 299))["Mixed_5d"]
            (288, 35, 35)
        """
        size = input_size if input_size is not None else self.preprocess.input_size
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise InvalidArgumentError(f"input_size={shown(input_size)}; pass (height, width).")
        size = tuple(whole("input_size", v, minimum=1, maximum=MAX_INPUT_SIDE) for v in size)
        if size not in self._shapes:
            self._shapes[size] = self._probe_shapes(size)
        return dict(self._shapes[size])

    def _probe_shapes(self, size: tuple[int, int]) -> dict[str, tuple[int, int, int]]:
        names = self._servable_stages()
        try:
            with torch.inference_mode():
                maps = self._forward(torch.zeros(1, 3, *size, device="meta"), names, _meta_copy(self.model))
        except Exception as err:  # models that read tensor values (or mix devices) cannot run on meta
            _log.debug("meta-device shapes failed for %s (%s); running on zeros", self.spec, err)
            zeros = torch.zeros(1, 3, *size, device=self.device, dtype=self.dtype)
            try:
                with torch.inference_mode(), eval_mode(self.model):
                    maps = self._forward(zeros, names, self.model)
            except Exception as err:  # the model refuses the size: its own assert, a reshape, a mask
                raise self._size_refused(size, err) from err
        shapes = {name: tuple(int(v) for v in fmap.shape[1:]) for name, fmap in maps.items()}
        height, width = size
        for (
            stage
        ) in self.all_stages:  # stages the model cannot output (MaskFormer-Swin's stem): the stride rule
            shapes.setdefault(
                stage.name, (stage.channels, -(-height // stage.reduction), -(-width // stage.reduction))
            )
        return {stage.name: shapes[stage.name] for stage in self.all_stages}

    def _servable_stages(self) -> list[str]:
        """The stages a forward pass can output (all, unless a source says otherwise)."""
        return self.stage_names

    def _size_refused(self, size: tuple[int, int], err: Exception) -> InvalidArgumentError:
        height, width = size
        return InvalidArgumentError(
            f"{self.spec} does not accept a {height}x{width} input ({type(err).__name__}: {err}); it was built for "
            f"{self.preprocess.input_size[0]}x{self.preprocess.input_size[1]}. Resize to that, or, for a timm "
            f'ViT, load it with dynamic_img_size=True: load_backbone("{self.spec}", dynamic_img_size=True).'
        )

    def stage_table(self, input_size: tuple[int, int] | None = None) -> list[dict]:
        """One row per stage: name, index, channels, reduction, output shape, module, selected.

        Shapes are those the forward pass gives (see :meth:`output_shapes`).

        Example::

            >>> bb.stage_table()[1]
            {'index': 1, 'name': 'layer1', 'channels': 64, 'reduction': 4, 'shape': (64, 56, 56), ...}
        """
        shapes = self.output_shapes(input_size)
        selected = set(self._out_features)
        return [
            {
                "index": stage.index,
                "name": stage.name,
                "channels": stage.channels,
                "reduction": stage.reduction,
                "shape": shapes[stage.name],
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

    def attention_blocks(self) -> list[str]:
        """The stages whose class-token attention :meth:`attention_weights` can read, in network order; empty
        for a model without such attention (a CNN; Swin's windows hold no class token).

        Example::

            >>> load_backbone("vit_tiny_patch16_224", pretrained=False).attention_blocks()[:2]
            ['blocks.0', 'blocks.1']
        """
        return []

    def attention_weights(self, pixel_values: torch.Tensor, blocks: Sequence[str]) -> AttentionWeights:
        """The real softmax weights of ``blocks`` (names from :meth:`attention_blocks`) for a batch.

        The source reads them where the model computes them (timm with its fused attention switched off,
        transformers with its eager attention), never re-derived from queries and keys; the model is left as
        it was found.

        Raises:
            AttentionError: the model has no such attention, or a name is not one of its blocks.

        Example::

            >>> bb.attention_weights(x, ["blocks.11"]).weights["blocks.11"].shape   # vit_tiny, one image
            torch.Size([1, 3, 197, 197])
        """
        known = self.attention_blocks()
        if isinstance(blocks, str) or not isinstance(blocks, (list, tuple)):
            raise AttentionError(
                f"blocks={shown(blocks)}; pass a list of block names, e.g. {known[-1:] or ['blocks.11']}."
            )
        unknown = [name for name in blocks if not isinstance(name, str) or name not in known]
        if not blocks or unknown:
            raise AttentionError(
                f"{self.spec} has no attention weights to read at {shown(unknown) if unknown else 'no block'}. "
                + (
                    f"Blocks with attention: {', '.join(known)}."
                    if known
                    else "It has no attention blocks with a class token; use explorer.similarity instead."
                )
            )
        pixel_values = self._prepare(pixel_values)
        with torch.inference_mode(), eval_mode(self.model):
            try:
                return self._attention(pixel_values, list(dict.fromkeys(blocks)))
            except (AssertionError, RuntimeError, ValueError) as err:
                refused = self._size_error(err, pixel_values)
                if refused is None:
                    raise
                raise refused from err

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

    def out_of_order(self, module: str) -> str:
        """Why the raw output of ``module`` (a name from :func:`explorer.list_layers`) holds its locations in
        an order other than the image's although its shape is a grid (Hiera's unrolled tokens); empty when it
        is in image order.

        Example::

            >>> load_backbone("hiera_tiny_224", pretrained=False).out_of_order("blocks.0")
            "tokens in Hiera's unrolled order, not in image order"
        """
        return ""

    def stage_maps(self, pixel_values: torch.Tensor, names: Sequence[str]) -> FeatureMaps:
        """The maps of stages ``names`` exactly as :meth:`capture` gives them (after a stage's own norm), but
        in the caller's grad mode and precision, so gradients flow back through them (what a headless
        class-activation map scores).

        Example::

            >>> with torch.enable_grad():
            ...     bb.stage_maps(x.requires_grad_(), ["layer4"])["layer4"].sum().backward()
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
        by_name = {stage.name: stage for stage in self.all_stages}
        hw = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
        layouts = self._layouts(names, hw)
        modules = {by_name[name].module: name for name in names}

        def keep(module: str, output: object) -> torch.Tensor:
            return to_nchw(output, hw, layouts[modules[module]])

        with tap(self.model, list(modules), stop_early=True, keep=keep) as kept:
            self.model(pixel_values)
        return FeatureMaps((name, kept[by_name[name].module]) for name in names)

    def _attention(self, pixel_values: torch.Tensor, blocks: list[str]) -> AttentionWeights:
        """:meth:`attention_weights` for a source whose :meth:`attention_blocks` is not empty."""
        raise NotImplementedError

    @property
    def prefix_tokens(self) -> int | None:
        """Class, register and distillation tokens before a token output's patch tokens, as the model declares
        them (timm's ``num_prefix_tokens``); None where the source does not say (the layout probe finds them)."""
        return None

    def layout(self, name: str, input_size: tuple[int, int] | None = None) -> LayerLayout:
        """How the output of a stage or any layer is laid out, for a ``(height, width)`` input.

        A stage's is known from its source; any other layer's is found by :func:`explorer.hooks.find_layouts`
        (shapes at two input sizes, on a meta-device copy), once per layer and size.

        Example::

            >>> bb.layout("stages.0.blocks.0.norm")          # timm ConvNeXt: channels-last inside the block
            LayerLayout(channels=96, channels_last=True, reduction=4, prefix_tokens=None, unaligned=None)
        """
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(
                f"name={shown(name)}; pass a stage name ({', '.join(self.stage_names)}) or a layer name from "
                "explorer.list_layers(bb)."
            )
        if input_size is None:
            input_size = self.preprocess.input_size
        elif (
            isinstance(input_size, (str, bytes))
            or not isinstance(input_size, Sequence)
            or len(input_size) != 2
        ):
            raise InvalidArgumentError(
                f"input_size={shown(input_size)}; pass (height, width), e.g. (224, 224)."
            )
        size = tuple(whole("input_size", side, minimum=1, maximum=MAX_INPUT_SIDE) for side in input_size)
        return self._layouts([name], size)[name]

    def _layouts(self, names: Sequence[str], size: tuple[int, int]) -> dict[str, LayerLayout]:
        stages = {stage.name: stage for stage in self.all_stages}
        size = (int(size[0]), int(size[1]))
        cache = self.__dict__.setdefault("_layout_cache", {})
        missing = [n for n in names if n not in stages and (size, n) not in cache]
        if missing:
            resolve_layers(self.model, missing)
            try:
                meta = _meta_copy(self.model)
                found = find_layouts(
                    lambda at: meta(torch.zeros(1, 3, *at, device="meta")),
                    meta,
                    missing,
                    size,
                    self.prefix_tokens,
                )
            except Exception as err:  # models that read tensor values cannot run on meta: zeros, for real
                _log.debug("meta-device layouts failed for %s (%s); running on zeros", self.spec, err)

                def run(at: tuple[int, int]) -> None:
                    with torch.inference_mode(), eval_mode(self.model):
                        self.model(torch.zeros(1, 3, *at, device=self.device, dtype=self.dtype))

                found = find_layouts(run, self.model, missing, size, self.prefix_tokens, second=False)
            cache.update(((size, name), layout) for name, layout in found.items())
        return {
            name: LayerLayout(
                stages[name].channels, stages[name].channels_last, stages[name].reduction, self.prefix_tokens
            )
            if name in stages
            else cache[(size, name)]
            for name in names
        }

    def _capture_options(self, pixel_values: torch.Tensor, model: nn.Module, layers: Sequence[str]) -> dict:
        """:func:`~explorer.capture` options for the stages and layers ``layers`` (stage or module names)."""
        stages = {stage.name: stage for stage in self.all_stages}
        batch, _, height, width = pixel_values.shape
        found = self._layouts(layers, (height, width))
        layouts = {stages[n].module if n in stages else n: layout for n, layout in found.items()}
        return {"layouts": layouts, "input_size": (height, width), "batch_size": batch}

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
        by_name = {stage.name: stage for stage in self.all_stages}
        modules = {name: by_name[name].module if name in by_name else name for name in layers}
        with capture(
            model, list(modules.values()), **self._capture_options(pixel_values, model, layers)
        ) as raw:
            model(pixel_values)
        unaligned = {
            name: raw.unaligned[module] for name, module in modules.items() if module in raw.unaligned
        }
        maps = FeatureMaps(((name, raw[module]) for name, module in modules.items()), unaligned=unaligned)
        return self._flag_reordered(maps)

    def _reordered(self) -> dict[str, str]:
        """Modules whose outputs, and their submodules', hold tokens in an order other than the image's, with the
        reason (Hiera's unrolled mask units, window-major tokens); sources that know such models name them."""
        return {}

    def _flag_reordered(self, maps: FeatureMaps) -> FeatureMaps:
        """``maps`` with the layers inside :meth:`_reordered` modules flagged: no grid of the image."""
        stages = {stage.name for stage in self.all_stages}  # stage maps are put back in image order
        for prefix, reason in self._reordered().items():
            for name in maps:
                if name not in stages and (name == prefix or name.startswith(prefix + ".")):
                    maps.unaligned.setdefault(name, reason)
        return maps

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

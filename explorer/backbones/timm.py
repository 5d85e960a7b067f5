"""timm backbones: registry names, ``hf-hub:`` repos, and timm checkpoint folders and files.

Stages are the model's ``feature_info`` modules, named by their module path as transformers' ``TimmBackbone``
names them (``act1``, ``layer1``, ... for resnets). Stage maps come from the model's own ``forward_intermediates``
(timm's layout rule: Hiera's unrolled tokens put back in image order, prefix tokens dropped, channels-last stages
permuted, HRNet's and Twins' stages that are no plain submodule), stopping after the last selected stage; models
without it, and any other layer, are read with forward hooks. Preprocessing is timm's own eval
transform of the model's ``pretrained_cfg`` (:class:`TimmPreprocess`).

Example::

    >>> bb = load_timm("convnext_tiny", pretrained=False, out_indices=[0, 1])
    >>> bb.stage_names
    ['stages.0', 'stages.1', 'stages.2', 'stages.3']
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import timm
import torch
from torch import nn

from .._args import closest, shown
from ..errors import (
    AttentionError,
    CaptureError,
    CheckpointError,
    InvalidArgumentError,
    UnknownBackboneError,
    WeightsUnavailableError,
)
from ..hooks import FeatureMaps, LayerLayout, capture, to_nchw, token_grid
from ._base import AttentionWeights, Backbone, Head, Stage
from ._checkpoint import find_weights_file, folder_config, load_weights, read_state_dict
from ._hub import ALTERNATIVES, hub_file
from ._timm_preprocess import TimmPreprocess

__all__ = [
    "load_timm",
    "load_timm_hub",
    "load_timm_folder",
    "build_timm",
    "timm_backbone",
    "TimmBackbone",
    "TimmPreprocess",
]

_log = logging.getLogger(__name__)


def _check_name(name: str) -> None:
    if timm.is_model(name):
        return
    hint = closest(name.split(".")[0], timm.list_models(), n=6, what="timm names")
    raise UnknownBackboneError(
        f'Unknown model "{name}".{hint} See explorer.list_backbones() for suggestions; other specs: '
        '"hf:<repo or folder>", "hf-hub:<timm repo>", a checkpoint path, or "default".'
    )


# what model constructors raise on arguments they cannot use
_BUILD_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError, AssertionError, RuntimeError)


def build_timm(arch: str, **kwargs) -> nn.Module:
    """A timm model with random weights, in eval mode; ``kwargs`` go to ``timm.create_model``.

    Raises:
        UnknownBackboneError: ``arch`` is not in timm's registry (the message lists the closest names).
        InvalidArgumentError: timm cannot build ``arch`` with these keyword arguments.
    """
    _check_name(arch)
    try:
        return timm.create_model(arch, pretrained=False, **kwargs).eval()
    except _BUILD_ERRORS as err:
        raise InvalidArgumentError(
            f"timm cannot build {arch} with {shown(kwargs)}: {type(err).__name__}: {err}. Check the keyword "
            "arguments against timm.create_model's and the model's own."
        ) from err


def _preprocess(model: nn.Module) -> TimmPreprocess:
    """timm's data config of ``model`` (its ``pretrained_cfg``), at the size it was built for."""
    try:
        config = timm.data.resolve_data_config({}, model=model)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"The pretrained_cfg of {type(model).__name__} gives no usable preprocessing ({err}). Fix "
            "pretrained_cfg in the checkpoint's config.json (input_size, mean, std, crop_pct)."
        ) from err
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(built, (tuple, list)) and len(built) == 2:  # built with img_size=: its cfg still says 224
        config["input_size"] = (config["input_size"][0], *(int(v) for v in built))
    return TimmPreprocess(config)


def _stages(model: nn.Module) -> list[Stage]:
    info = getattr(model, "feature_info", None)
    if not info:
        raise UnknownBackboneError(
            f"{type(model).__name__} declares no feature_info, so it has no stages to select. "
            "Use Backbone.capture(x, layers=...) with names from explorer.list_layers() instead."
        )
    channels_last = getattr(model, "output_fmt", "NCHW") == "NHWC"
    seen: dict[str, int] = {}
    stages = []
    for index, item in enumerate(info):
        module = item["module"]
        seen[module] = seen.get(module, 0) + 1
        # a module feeding several stages (CoaT's parallel blocks) names the later ones by their position
        name = module if seen[module] == 1 else f"{module}[{seen[module] - 1}]"
        stages.append(Stage(name, index, int(item["num_chs"]), int(item["reduction"]), module, channels_last))
    return stages


def _is_attention(module: nn.Module) -> bool:
    """A timm attention module that computes its softmax explicitly once ``fused_attn`` is off, and passes it
    through ``attn_drop`` (``Attention``, ``EvaAttention``, Swin's ``WindowAttention``)."""
    return hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Module)


@contextmanager
def unfused_attention(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Switch timm's fused attention (``F.scaled_dot_product_attention``) off on ``modules`` for the block, so
    their softmax weights exist; every module gets its own flag back afterwards."""
    flags = [(module, module.fused_attn) for module in modules]
    try:
        for module, _ in flags:
            module.fused_attn = False
        yield
    finally:
        for module, fused in flags:
            module.fused_attn = fused


def _prefix_names(model: nn.Module) -> tuple[str, ...]:
    """The prefix tokens of a timm ViT in token order: class, then distillation (DeiT) or registers."""
    names = ["class"] if getattr(model, "cls_token", None) is not None else []
    if getattr(model, "dist_token", None) is not None:
        names.append("distillation")
    names += [f"register {i}" for i in range(int(getattr(model, "num_reg_tokens", 0) or 0))]
    count = int(getattr(model, "num_prefix_tokens", len(names)))
    return tuple(names) if len(names) == count else tuple(f"prefix {i}" for i in range(count))


@functools.lru_cache(maxsize=8)
def _imagenet_names(subset: str) -> tuple[str, ...]:
    info = timm.data.ImageNetInfo(subset)
    return tuple(info.index_to_description(i) for i in range(info.num_classes()))


def class_names(model: nn.Module, count: int) -> tuple[str, ...]:
    """The names of a timm head's ``count`` classes: timm's offline ImageNet names when the head is an ImageNet
    one (``infer_imagenet_subset``), else ``class N``.

    Example::

        >>> class_names(timm.create_model("resnet18"), 1000)[281]
        'tabby, tabby cat'
    """
    subset = timm.data.infer_imagenet_subset(model)
    names = _imagenet_names(subset) if subset else ()
    return names if len(names) == count else tuple(f"class {i}" for i in range(count))


def timm_backbone(model: nn.Module, *, spec: str, weights: str, **options) -> TimmBackbone:
    """Wrap an already built timm model; ``options`` are ``device``, ``out_indices``, ``out_features``.

    A model handed in is left in the mode it was found in (each pass runs it in eval mode, then restores it).
    """
    return TimmBackbone(
        model, _stages(model), spec=spec, weights=weights, preprocess=_preprocess(model), **options
    )


class TimmBackbone(Backbone):
    """A timm model: stage maps from its own ``forward_intermediates``, other layers from hooks (module docs).

    Token outputs of any layer drop exactly the model's ``num_prefix_tokens`` (class, register, distillation
    tokens); the layout of any other layer is probed (:meth:`~explorer.Backbone.layout`).
    """

    @property
    def prefix_tokens(self) -> int | None:
        """The model's ``num_prefix_tokens`` (class, register, distillation tokens); None where it has none."""
        count = getattr(self.model, "num_prefix_tokens", None)
        return int(count) if isinstance(count, int) else None

    def _head(self) -> Head | None:
        """The model itself when it keeps its classifier (``num_classes > 0``), with timm's class names."""
        model = self.model
        count = int(getattr(model, "num_classes", 0) or 0)
        if not count or not hasattr(model, "get_classifier"):
            return None
        classifier = model.get_classifier()  # DeiT's distilled models: (head, head_dist)
        if not isinstance(classifier, nn.Module):
            classifier = nn.ModuleList(classifier)
        return Head(model, class_names(model, count), classifier)

    @property
    def reads_class_token_only(self) -> bool:
        """timm ViTs pooled by their class token (``global_pool="token"``)."""
        return getattr(self.model, "global_pool", None) == "token"

    def _out_of_order(self, module: str) -> str:
        """Hiera's blocks hold their tokens unrolled until its last stage (its ``reroll`` puts them back for the
        stage maps only)."""
        in_blocks = module == "blocks" or module.startswith("blocks.")
        if hasattr(self.model, "reroll") and in_blocks and module != self.all_stages[-1].module:
            return "tokens in Hiera's unrolled order, not in image order"
        return ""

    def _stage_maps(self, pixel_values: torch.Tensor, names: list[str]) -> FeatureMaps:
        if getattr(self.model, "forward_intermediates", None) is None:
            return super()._stage_maps(pixel_values, names)
        return self._forward(pixel_values, names, self.model)  # timm's own intermediates keep gradients

    def _forward(self, pixel_values: torch.Tensor, layers: list[str], model: nn.Module) -> FeatureMaps:
        stages = self.stage_names
        wanted = sorted(
            (self.stage(name) for name in layers if name in stages), key=lambda stage: stage.index
        )
        extra = [name for name in layers if name not in stages]
        intermediates = getattr(model, "forward_intermediates", None)
        if intermediates is None or not wanted:
            return super()._forward(pixel_values, layers, model)
        indices = [stage.index for stage in wanted]
        if not extra:
            found = intermediates(pixel_values, indices=indices, intermediates_only=True, stop_early=True)
            raw = FeatureMaps()
        else:
            options = self._capture_options(pixel_values, model, extra)
            with capture(model, extra, stop_early=False, **options) as raw:
                final, found = intermediates(pixel_values, indices=indices, stop_early=False)
                if len(raw) < len(extra):  # a head layer: run the head as forward() would
                    model.forward_head(final)
                if len(raw) < len(extra):  # a container that forward_intermediates walks through (``stages``)
                    model(pixel_values)  # forward() calls it; layers already seen keep their first output
        hw = tuple(pixel_values.shape[-2:])
        maps = {stage.name: to_nchw(fmap, hw, stage.feature_layout()) for stage, fmap in zip(wanted, found)}
        maps.update(raw)
        return self._flag_reordered(FeatureMaps(((n, maps[n]) for n in layers), unaligned=raw.unaligned))

    def _attention_modules(self) -> dict[str, str]:
        """Per stage with one attention module (a ViT block), that module's path; only for class-token ViTs.
        Found once per backbone (a walk over every module, read by each attention call three times)."""
        if "_attention_paths" not in self.__dict__:
            self.__dict__["_attention_paths"] = self._find_attention_modules()
        return self.__dict__["_attention_paths"]

    def _find_attention_modules(self) -> dict[str, str]:
        if getattr(self.model, "cls_token", None) is None:
            return {}
        modules = dict(self.model.named_modules())
        found = {}
        for stage in self.all_stages:
            block = modules.get(stage.module)  # None for stages that are no plain submodule (HRNet, Twins)
            paths = [
                f"{stage.module}.{name}" if name else stage.module
                for name, module in (block.named_modules() if block is not None else [])
                if _is_attention(module)
            ]
            if len(paths) == 1:
                found[stage.name] = paths[0]
        return found

    def attention_blocks(self) -> list[str]:
        return list(self._attention_modules())

    def _attention(self, pixel_values: torch.Tensor, blocks: list[str]) -> AttentionWeights:
        """The output of each block's ``attn_drop`` (the softmax, dropout being off in eval mode), with fused
        attention off; the pass stops after the last block asked for."""
        paths = self._attention_modules()
        layers = {f"{paths[name]}.attn_drop": name for name in blocks}
        # (B, heads, N, N): kept as it is, flagged as no map of the image (nothing to check per block)
        softmax = LayerLayout(unaligned="softmax weights (batch, heads, tokens, tokens)")
        raw_layout = dict.fromkeys(layers, softmax)
        with unfused_attention([self.model.get_submodule(paths[name]) for name in blocks]):
            # no copies: nothing changes the softmax in place after attn_drop (``attn @ v`` reads it)
            with capture(self.model, list(layers), layouts=raw_layout, copy=False) as raw:
                self.model(pixel_values)
        weights = {name: raw[layer] for layer, name in layers.items()}
        prefix = _prefix_names(self.model)
        patch = self.stage(blocks[0]).reduction
        height, width = pixel_values.shape[-2:]
        for name, found in weights.items():
            try:
                if found.ndim != 4 or found.shape[-2] != found.shape[-1]:
                    raise CaptureError("not token-to-token attention")
                _, grid_h, grid_w = token_grid(found.shape[-1], (height, width), patch, len(prefix))
            except CaptureError:
                raise AttentionError(
                    f"{self.spec}: the attention at {name} is {tuple(found.shape)}, not over the {len(prefix)} prefix "
                    "and the patch tokens (XCiT attends over channels). Use explorer.similarity to compare "
                    "locations instead."
                ) from None
        return AttentionWeights(weights, prefix, (grid_h, grid_w))


def load_timm(
    name: str,
    *,
    pretrained: bool,
    device: str | torch.device = "auto",
    out_indices=None,
    out_features=None,
    **kwargs,
) -> Backbone:
    """A timm registry model (``"resnet18"``, ``"convnext_tiny.fb_in22k"``); ``kwargs`` go to ``create_model``.

    Raises:
        UnknownBackboneError: not a timm name.
        WeightsUnavailableError: ``pretrained=True`` and neither the cache nor the hub has the weights.
    """
    _check_name(name)
    options = dict(device=device, out_indices=out_indices, out_features=out_features)
    if not pretrained:
        return timm_backbone(build_timm(name, **kwargs), spec=name, weights="random", **options)
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        raise WeightsUnavailableError(f"timm has no pretrained weights on the hub for {name}. {ALTERNATIVES}")
    path, origin = hub_file(hub_id, getattr(cfg, "hf_hub_filename", None) or "model.safetensors")
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": path}, **kwargs).eval()
    return timm_backbone(model, spec=name, weights=origin, **options)


def load_timm_folder(
    folder: str | Path,
    *,
    pretrained: bool,
    spec: str | None = None,
    weights_file: str | Path | None = None,
    weights_origin: str = "file",
    device: str | torch.device = "auto",
    out_indices=None,
    out_features=None,
    **kwargs,
) -> Backbone:
    """A timm model from a folder with timm's ``config.json`` (as ``push_to_hub`` writes it), weights beside it.

    Args:
        folder: the folder; a hub snapshot folder works too.
        pretrained: load the weights file (``model.safetensors``, else ``pytorch_model.bin``) or random init.
        weights_file: a weights path other than the folder's own.
        weights_origin: what ``bb.weights`` reports when weights are loaded.
    """
    folder = Path(folder)
    config = folder_config(folder)
    arch = config.get("architecture")
    if not isinstance(arch, str):
        raise CheckpointError(
            f"{folder / 'config.json'} names no timm architecture; a timm folder's config.json has "
            '"architecture" (as timm\'s push_to_hub writes it). For bare weights pass arch="<timm name>".'
        )
    sections = {key: config.get(key, {}) for key in ("pretrained_cfg", "model_args")}
    wrong = [
        f"{key} is {type(value).__name__}" for key, value in sections.items() if not isinstance(value, dict)
    ]
    if wrong:
        raise CheckpointError(
            f"{folder / 'config.json'}: {'; '.join(wrong)}, not an object of settings. Fix the file, or save "
            "the model again with timm's push_to_hub / save_for_timm."
        )
    pretrained_cfg = {**sections["pretrained_cfg"], "architecture": arch}
    model_kwargs = {k: config[k] for k in ("num_classes", "in_chans") if k in config}
    model_kwargs.update(sections["model_args"])
    try:
        model = build_timm(arch, pretrained_cfg=pretrained_cfg, **{**model_kwargs, **kwargs})
    except InvalidArgumentError as err:
        raise CheckpointError(
            f"{folder / 'config.json'} does not build a model: {err} (model_args, num_classes, in_chans and "
            "pretrained_cfg come from the file)"
        ) from err
    origin, note = "random", ""
    if pretrained:
        path = Path(weights_file) if weights_file else find_weights_file(folder)
        note = load_weights(model, read_state_dict(path, model), str(path))
        origin = weights_origin
    options = dict(device=device, out_indices=out_indices, out_features=out_features, weights_note=note)
    return timm_backbone(model, spec=spec or str(folder), weights=origin, **options)


def load_timm_hub(repo_id: str, *, pretrained: bool, **options) -> Backbone:
    """A timm model from a hub repo (``"hf-hub:timm/resnet18.a1_in1k"`` without the prefix), cache first."""
    config_path, _ = hub_file(repo_id, "config.json")
    weights_file, origin = hub_file(repo_id, "model.safetensors") if pretrained else (None, "random")
    return load_timm_folder(
        Path(config_path).parent,
        pretrained=pretrained,
        spec=f"hf-hub:{repo_id}",
        weights_file=weights_file,
        weights_origin=origin,
        **options,
    )

"""timm backbones: registry names, ``hf-hub:`` repos, and timm checkpoint folders and files.

Stages are the model's ``feature_info`` modules, named by their module path as transformers' ``TimmBackbone``
names them (``act1``, ``layer1``, ... for resnets). Preprocessing comes from the model's ``pretrained_cfg``.

Example::

    >>> bb = load_timm("convnext_tiny", pretrained=False, out_indices=[0, 1])
    >>> bb.stage_names
    ['stages.0', 'stages.1', 'stages.2', 'stages.3']
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import timm
import torch
from torch import nn

from ..errors import CheckpointError, UnknownBackboneError, WeightsUnavailableError
from ..images import Preprocess
from ._base import Backbone, Stage
from ._checkpoint import find_weights_file, folder_config, load_weights, read_state_dict
from ._hub import ALTERNATIVES, hub_file

__all__ = [
    "load_timm",
    "load_timm_hub",
    "load_timm_folder",
    "build_timm",
    "timm_backbone",
]

_log = logging.getLogger(__name__)


def _check_name(name: str) -> None:
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=6, cutoff=0.6)
    hint = f" Closest timm names: {', '.join(close)}." if close else ""
    raise UnknownBackboneError(
        f'Unknown model "{name}".{hint} See explorer.list_backbones() for suggestions; other specs: '
        '"hf:<repo or folder>", "hf-hub:<timm repo>", a checkpoint path, or "default".'
    )


def build_timm(arch: str, **kwargs) -> nn.Module:
    """A timm model with random weights; ``kwargs`` go to ``timm.create_model``.

    Raises:
        UnknownBackboneError: ``arch`` is not in timm's registry (the message lists the closest names).
    """
    _check_name(arch)
    return timm.create_model(arch, pretrained=False, **kwargs)


def _preprocess(model: nn.Module) -> Preprocess:
    config = timm.data.resolve_data_config({}, model=model)
    _, height, width = config["input_size"]
    return Preprocess(
        input_size=(height, width),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        interpolation=config.get("interpolation", "bicubic"),
        crop_pct=float(config.get("crop_pct", 0.875)),
        crop_mode=config.get("crop_mode", "center"),
    )


def _stages(model: nn.Module) -> list[Stage]:
    info = getattr(model, "feature_info", None)
    if not info:
        raise UnknownBackboneError(
            f"{type(model).__name__} declares no feature_info, so it has no stages to select. "
            "Use Backbone.capture(x, layers=...) with names from explorer.list_layers() instead."
        )
    channels_last = getattr(model, "output_fmt", "NCHW") == "NHWC"
    return [
        Stage(
            name=item["module"],
            index=index,
            channels=int(item["num_chs"]),
            reduction=int(item["reduction"]),
            module=item["module"],
            channels_last=channels_last,
        )
        for index, item in enumerate(info)
    ]


def timm_backbone(model: nn.Module, *, spec: str, weights: str, **options) -> Backbone:
    """Wrap an already built timm model; ``options`` are ``device``, ``out_indices``, ``out_features``."""
    return Backbone(
        model, _stages(model), spec=spec, weights=weights, preprocess=_preprocess(model), **options
    )


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
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": path}, **kwargs)
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
    pretrained_cfg = {**config.get("pretrained_cfg", {}), "architecture": arch}
    model_kwargs = {k: config[k] for k in ("num_classes", "in_chans") if k in config}
    model_kwargs.update(config.get("model_args", {}))
    model = build_timm(arch, pretrained_cfg=pretrained_cfg, **{**model_kwargs, **kwargs})
    origin = "random"
    if pretrained:
        path = Path(weights_file) if weights_file else find_weights_file(folder)
        load_weights(model, read_state_dict(path), str(path))
        origin = weights_origin
    options = dict(device=device, out_indices=out_indices, out_features=out_features)
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

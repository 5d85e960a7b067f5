"""transformers backbones: ``AutoBackbone`` checkpoints, and the backbone inside task models (MaskFormer, DETR).

``hf:<folder>`` reads a ``save_pretrained`` folder; ``hf:<repo id>`` reads the hub (cache first). When the
config is a backbone config the model is built with ``AutoBackbone``; otherwise the class named in
``config.architectures`` is built and the first ``BackboneMixin`` module inside it is used. Stage names are the
model's own ``stage_names`` (``stem``, ``stage1``, ...); maps come from the model's own ``feature_maps`` output,
so they match transformers exactly (Swin's per-stage norms included). transformers backbones run every stage.

Example::

    >>> bb = load_hf("/tmp/swin-tiny", pretrained=True, out_indices=(1,))
    >>> bb(torch.randn(1, 3, 224, 224)).shapes
    {'stage1': (1, 96, 56, 56)}
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, MissingDependencyError, UnknownBackboneError, WeightsUnavailableError
from ..hooks import FeatureMaps, LayerLayout, to_nchw
from ..images import Preprocess
from ._base import Backbone, Stage
from ._hub import ALTERNATIVES, hub_file

__all__ = ["HFBackbone", "load_hf", "find_backbone", "hf_preprocess"]

_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise MissingDependencyError(
            'hf: specs need transformers. Install the extra: pip install "explorer[hf]" '
            "(or pip install transformers)."
        ) from err
    return transformers


def find_backbone(model: nn.Module) -> tuple[str, nn.Module]:
    """The first module (and its path) inside ``model`` that is a transformers backbone."""
    from transformers.backbone_utils import BackboneMixin

    for name, module in model.named_modules():
        if isinstance(module, BackboneMixin):
            return name, module
    raise UnknownBackboneError(
        f"{type(model).__name__} contains no transformers backbone (no BackboneMixin module). "
        "Use a backbone checkpoint, or Backbone.capture(x, layers=...) on any of its layers."
    )


def _size(value, default: int) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return (int(value["height"]), int(value["width"]))
        if "shortest_edge" in value:
            return (int(value["shortest_edge"]),) * 2
    return (default, default)


def hf_preprocess(processor: dict, config) -> Preprocess:
    """Preprocessing from a ``preprocessor_config.json`` dict (may be empty) and the model config."""
    image_size = getattr(config, "image_size", 224)
    default = image_size if isinstance(image_size, int) else 224
    mean = tuple(processor.get("image_mean", (0.485, 0.456, 0.406)))
    std = tuple(processor.get("image_std", (0.229, 0.224, 0.225)))
    interpolation = _PIL_RESAMPLE.get(processor.get("resample", 3), "bicubic")
    size = processor.get("size")
    resize = _size(size, default)
    if processor.get("do_center_crop") and processor.get("crop_size"):
        crop = _size(processor["crop_size"], default)
        return Preprocess(crop, mean, std, interpolation, crop_pct=crop[0] / resize[0], crop_mode="center")
    if "crop_pct" in processor and isinstance(size, dict) and "shortest_edge" in size:
        return Preprocess(resize, mean, std, interpolation, crop_pct=float(processor["crop_pct"]), crop_mode="center")
    return Preprocess(resize, mean, std, interpolation, crop_pct=1.0, crop_mode="squash")


def _stage_modules(model: nn.Module, count: int) -> list[str]:
    """Best-effort module paths of the stages: a stem child, then a ModuleList of ``count - 1`` stages."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count - 1 and "encoder" in name:
            stem = next((n for n, _ in model.named_children() if "embed" in n), "")
            return [stem] + [f"{name}.{i}" for i in range(count - 1)]
    return [""] * count


class HFBackbone(Backbone):
    """A transformers backbone: selection is synced to the model, maps come from its ``feature_maps``."""

    def _on_select(self) -> None:
        self.model.out_features = list(self._out_features)

    def _run(self, pixel_values: torch.Tensor) -> object:
        return self.model(pixel_values)

    def _forward_stages(self, pixel_values: torch.Tensor) -> FeatureMaps:
        output = self.model(pixel_values)
        hw = tuple(pixel_values.shape[-2:])
        return FeatureMaps(
            (stage.name, to_nchw(fmap, hw, LayerLayout(stage.channels, False, stage.reduction)))
            for stage, fmap in zip(self.stages, output.feature_maps)
        )


def _resolve_folder(spec: str, pretrained: bool) -> tuple[Path, str]:
    """A local folder for ``spec`` (a folder, or a hub repo fetched into the cache) and the weights' origin."""
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return folder, "file"
    if folder.exists() or spec.startswith((".", "/", "~")):
        raise CheckpointError(f"hf:{spec} is not a folder. Pass a save_pretrained folder or a hub repo id.")
    config_path, origin = hub_file(spec, "config.json")
    try:
        hub_file(spec, "preprocessor_config.json")  # optional; lands beside config.json in the snapshot
    except WeightsUnavailableError:
        pass
    if pretrained:
        origin = hub_file(spec, "model.safetensors")[1]
    return Path(config_path).parent, origin


def load_hf(
    spec: str,
    *,
    pretrained: bool,
    device: str | torch.device = "auto",
    out_indices=None,
    out_features=None,
    **kwargs,
) -> HFBackbone:
    """A transformers backbone from a ``save_pretrained`` folder or a hub repo id (without ``hf:``).

    Raises:
        MissingDependencyError: transformers is not installed (names the ``hf`` extra).
        WeightsUnavailableError: a hub repo neither cached nor reachable.
        CheckpointError: ``pretrained=True`` but the folder holds no weights.
        UnknownBackboneError: the model contains no backbone.
    """
    transformers = _transformers()
    folder, origin = _resolve_folder(spec, pretrained)
    config = transformers.AutoConfig.from_pretrained(folder, **kwargs)
    if pretrained and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise CheckpointError(f"{folder} holds a config but no weights. {ALTERNATIVES}")
    from transformers.backbone_utils import BackboneConfigMixin

    if isinstance(config, BackboneConfigMixin):
        auto = transformers.AutoBackbone
        model = auto.from_pretrained(folder) if pretrained else auto.from_config(config)
    else:
        architectures = getattr(config, "architectures", None) or []
        cls = getattr(transformers, architectures[0], None) if architectures else None
        cls = cls or transformers.AutoModel
        if pretrained:
            model = cls.from_pretrained(folder)
        elif cls is transformers.AutoModel:
            model = cls.from_config(config)
        else:
            model = cls(config)
    _, backbone = find_backbone(model)
    backbone.eval()
    processor_file = folder / "preprocessor_config.json"
    processor = json.loads(processor_file.read_text()) if processor_file.is_file() else {}
    preprocess = hf_preprocess(processor, config)
    names = list(backbone.stage_names)
    backbone.out_features = names
    height, width = preprocess.input_size
    with torch.inference_mode():
        probe = backbone(torch.zeros(1, 3, height, width)).feature_maps
    modules = _stage_modules(backbone, len(names))
    stages = [
        Stage(name, i, int(fmap.shape[1]), max(1, round(height / fmap.shape[-2])), modules[i])
        for i, (name, fmap) in enumerate(zip(names, probe))
    ]
    return HFBackbone(
        backbone,
        stages,
        spec=f"hf:{spec}",
        weights=origin if pretrained else "random",
        preprocess=preprocess,
        device=device,
        out_indices=out_indices,
        out_features=out_features,
    )

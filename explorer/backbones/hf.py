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
from ..hooks import FeatureMaps, LayerLayout, capture, to_nchw
from ..images import Preprocess
from ._base import Backbone, Stage
from ._checkpoint import find_weights_file, load_weights, read_state_dict
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
        return Preprocess(
            resize, mean, std, interpolation, crop_pct=float(processor["crop_pct"]), crop_mode="center"
        )
    return Preprocess(resize, mean, std, interpolation, crop_pct=1.0, crop_mode="squash")


def _stage_modules(model: nn.Module, count: int) -> list[str]:
    """Best-effort module paths of the stages: a stem child, then a ModuleList of ``count - 1`` stages."""
    names = [name for name, _ in model.named_modules()]
    stem = next((n for n in names if "embed" in n.rsplit(".", 1)[-1]), "")
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count - 1 and "encoder" in name:
            return [stem] + [f"{name}.{i}" for i in range(count - 1)]
    return [""] * count


class HFBackbone(Backbone):
    """A transformers backbone; maps come from its own ``feature_maps`` output.

    The model keeps the ``out_features`` it was built with (``served``: every stage for checkpoints loaded
    here, the task's stages for a backbone inside a task model); selection picks among them.
    """

    def __init__(self, model: nn.Module, stages, *, served: list[str], **options) -> None:
        self.served = list(served)
        super().__init__(model, stages, **options)

    def _on_select(self) -> None:
        refused = [name for name in self._out_features if name not in self.served]
        if refused:
            raise ValueError(
                f"This {type(self.model).__name__} was built to output {self.served} only, so {refused} cannot "
                "be selected. Select among those, or load the backbone checkpoint itself rather than a task model."
            )

    def _forward(self, pixel_values: torch.Tensor, layers: list[str]) -> FeatureMaps:
        """Stages from the model's own ``feature_maps``, other layers from hooks, in one full pass."""
        stages = {stage.name: stage for stage in self.all_stages}
        refused = [name for name in layers if name in stages and name not in self.served]
        if refused:
            raise ValueError(f"This {type(self.model).__name__} outputs {self.served} only, not {refused}.")
        extra = [name for name in layers if name not in stages]
        raw = {}
        if extra:
            with capture(
                self.model, extra, stop_early=False, input_size=tuple(pixel_values.shape[-2:])
            ) as raw:
                output = self.model(pixel_values)
        else:
            output = self.model(pixel_values)
        by_name = dict(zip(self.served, output.feature_maps))
        hw = tuple(pixel_values.shape[-2:])

        def stage_map(stage: Stage) -> torch.Tensor:
            return to_nchw(by_name[stage.name], hw, LayerLayout(stage.channels, False, stage.reduction))

        return FeatureMaps(
            (name, stage_map(stages[name]) if name in stages else raw[name]) for name in layers
        )


def _probe_stages(backbone: nn.Module, input_size: tuple[int, int]) -> list[Stage]:
    """Channels and reductions of every stage, from one forward pass on zeros with all hidden states."""
    names = list(backbone.stage_names)
    height, width = input_size
    with torch.inference_mode():
        output = backbone(torch.zeros(1, 3, height, width), output_hidden_states=True)
    hidden = getattr(output, "reshaped_hidden_states", None) or output.hidden_states
    channels = list(getattr(backbone, "num_features", None) or [None] * len(names))
    modules = _stage_modules(backbone, len(names))
    stages = []
    for index, (name, state) in enumerate(zip(names, hidden)):
        fmap = to_nchw(state, (height, width), LayerLayout(channels[index]))
        reduction = max(1, round(height / fmap.shape[-2]))
        stages.append(Stage(name, index, int(fmap.shape[1]), reduction, modules[index]))
    return stages


def cls_for_config(transformers, config) -> type:
    """The model class to build: the backbone class for backbone configs, else ``config.architectures[0]``.

    ``AutoBackbone.from_pretrained`` is avoided: it asks the hub whether the repo exists, even for a folder.
    """
    from transformers.backbone_utils import BackboneConfigMixin

    if isinstance(config, BackboneConfigMixin):
        return transformers.AutoBackbone._model_mapping[type(config)]
    architectures = getattr(config, "architectures", None) or []
    found = getattr(transformers, architectures[0], None) if architectures else None
    return found or transformers.AutoModel._model_mapping[type(config)]


def _from_pretrained(transformers, cls: type, folder: Path, config, pretrained: bool) -> nn.Module:
    if not pretrained:
        return cls(config)
    # the per-stage norms of stages the checkpoint did not output start as identity: not worth a load report
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        return cls.from_pretrained(str(folder), config=config, trust_remote_code=False)
    finally:
        transformers.logging.set_verbosity(verbosity)


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
        try:
            origin = hub_file(spec, "model.safetensors")[1]
        except WeightsUnavailableError:
            origin = hub_file(spec, "pytorch_model.bin")[1]  # older repos; transformers reads it weights-only
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
    config = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=False, **kwargs)
    if pretrained and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise CheckpointError(f"{folder} holds a config but no weights. {ALTERNATIVES}")
    from transformers.backbone_utils import BackboneConfigMixin

    cls = cls_for_config(transformers, config)
    if config.model_type == "timm_backbone":
        # its from_pretrained reads timm's registry, not the folder: build it, then load the folder's weights
        model = cls(config)
        if pretrained:
            weights_file = find_weights_file(folder)
            load_weights(model, read_state_dict(weights_file), str(weights_file))
    else:
        if isinstance(config, BackboneConfigMixin):
            config.out_features = list(config.stage_names)  # output every stage, so any selection works later
        model = _from_pretrained(transformers, cls, folder, config, pretrained)
    _, backbone = find_backbone(model)
    backbone.eval()
    processor_file = folder / "preprocessor_config.json"
    processor = json.loads(processor_file.read_text()) if processor_file.is_file() else {}
    preprocess = hf_preprocess(processor, config)
    stages = _probe_stages(backbone, preprocess.input_size)
    served = list(backbone.out_features)
    return HFBackbone(
        backbone,
        stages,
        served=served,
        spec=f"hf:{spec}",
        weights=origin if pretrained else "random",
        preprocess=preprocess,
        device=device,
        out_indices=out_indices,
        out_features=out_features,
    )

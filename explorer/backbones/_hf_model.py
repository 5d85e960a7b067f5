"""Building a transformers model from a folder: its config, the model class it names, the backbone inside it,
and the stages that backbone has (names, channels, reductions, module paths). The half of ``hf:`` loading that
knows transformers' model classes; :mod:`explorer.backbones.hf` puts a Backbone on top.

Example::

    >>> import transformers
    >>> config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
    >>> backbone = transformers.ResNetBackbone(config).eval()
    >>> [(s.name, s.channels, s.reduction) for s in probe_stages(backbone, (64, 64))]
    [('stem', 8, 4), ('stage1', 8, 4), ('stage2', 16, 8)]
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .._args import shown
from ..errors import CheckpointError, MissingDependencyError, UnknownBackboneError
from ..hooks import LayerLayout, to_nchw
from ._checkpoint import find_weights_file, load_weights, read_state_dict
from ._parts import Stage

__all__ = [
    "BUILD_ERRORS",
    "build_timm_backbone",
    "cls_for_config",
    "feature_info_stages",
    "find_backbone",
    "from_pretrained",
    "import_transformers",
    "is_timm_features",
    "probe_stages",
    "read_config",
    "stage_modules",
    "timm_features",
]


def import_transformers():
    try:
        import transformers
    except ImportError as err:
        raise MissingDependencyError(
            'hf: specs need transformers. Install the extra: pip install "explorer[hf]" '
            "(or pip install transformers)."
        ) from err
    return transformers


# what model code raises on a config or file it cannot use (an ExplorerError passes through unchanged)
BUILD_ERRORS = (
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    AttributeError,
    AssertionError,
    RuntimeError,
    OSError,
)


def is_timm_features(module: nn.Module) -> bool:
    """A timm ``features_only`` network (what transformers' timm-backed conv encoders hold, e.g. DETR's)."""
    info = getattr(module, "feature_info", None)
    return callable(getattr(info, "module_name", None)) and callable(getattr(info, "channels", None))


def timm_features(backbone: nn.Module) -> nn.Module:
    """The timm ``features_only`` network inside transformers' ``TimmBackbone``, found by what it is (its
    ``feature_info``) rather than by transformers' private attribute name."""
    found = next((module for module in backbone.children() if is_timm_features(module)), None)
    if found is None:
        raise UnknownBackboneError(f"{type(backbone).__name__} holds no timm feature network.")
    return found


def find_backbone(model: nn.Module) -> tuple[str, nn.Module]:
    """The first module (and its path) inside ``model`` that is a transformers backbone.

    A ``BackboneMixin`` module, else the timm ``features_only`` network of a timm-backed encoder (DETR with
    ``use_timm_backbone=True``, the layout of ``facebook/detr-resnet-50``).
    """
    from transformers.backbone_utils import BackboneMixin

    modules = list(model.named_modules())
    for name, module in modules:
        if isinstance(module, BackboneMixin):
            return name, module
    for name, module in modules:
        if is_timm_features(module):
            return name, module
    raise UnknownBackboneError(
        f"{type(model).__name__} contains no transformers backbone (no BackboneMixin module, no timm feature "
        "network). Load a backbone checkpoint instead (an AutoBackbone folder or a timm name)."
    )


def stage_modules(model: nn.Module, count: int) -> list[str]:
    """Best-effort module paths of the stages: a stem child, then a ModuleList of ``count - 1`` stages."""
    names = [name for name, _ in model.named_modules()]
    stem = next((n for n in names if "embed" in n.rsplit(".", 1)[-1]), "")
    lists = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and ("encoder" in name or name.endswith(".layers"))  # BEiT: .layers
    ]
    for name, module in lists:
        if len(module) == count - 1:
            return [stem] + [f"{name}.{i}" for i in range(count - 1)]
    for name, module in lists:  # no stem stage (PVT-v2: stage1 to stage4)
        if len(module) == count:
            return [f"{name}.{i}" for i in range(count)]
    return [""] * count


def probe_stages(backbone: nn.Module, input_size: tuple[int, int]) -> list[Stage]:
    """Channels and reductions of every stage, from one forward pass on zeros with all hidden states."""
    names = list(backbone.stage_names)
    height, width = input_size
    try:
        with torch.inference_mode():
            output = backbone(torch.zeros(1, 3, height, width), output_hidden_states=True)
    except BUILD_ERRORS as err:  # a config whose fields disagree (hidden_sizes shorter than depths)
        raise CheckpointError(
            f"The {type(backbone).__name__} built from this config.json fails on its first forward pass "
            f"({type(err).__name__}: {err}). Check the config's sizes and depths, or save it again."
        ) from err
    hidden = getattr(output, "reshaped_hidden_states", None) or output.hidden_states
    # the maps the model outputs are the truth (windowed ViTs hold their hidden states per window); hidden
    # states tell the stages it does not output
    outputs = dict(zip(backbone.out_features, output.feature_maps))
    channels = list(getattr(backbone, "num_features", None) or [None] * len(names))
    modules = stage_modules(backbone, len(names))
    stages = []
    for index, (name, state) in enumerate(zip(names, hidden)):
        if (
            name in outputs
        ):  # NCHW (BackboneOutput's rule), or ViTPose's tokens; num_features can be off by one
            fmap = to_nchw(outputs[name], (height, width))
        else:
            fmap = to_nchw(state, (height, width), LayerLayout(channels[index]))
        reduction = max(1, round(height / fmap.shape[-2]))
        stages.append(Stage(name, index, int(fmap.shape[1]), reduction, modules[index]))
    return stages


def cls_for_config(transformers, config) -> type:
    """The model class to build: the backbone class for backbone configs, else ``config.architectures[0]``.

    ``AutoBackbone.from_pretrained`` is avoided: it asks the hub whether the repo exists, even for a folder.
    """
    from transformers.backbone_utils import BackboneConfigMixin
    from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES, MODEL_MAPPING_NAMES

    if isinstance(config, BackboneConfigMixin) and config.model_type in MODEL_FOR_BACKBONE_MAPPING_NAMES:
        return getattr(transformers, MODEL_FOR_BACKBONE_MAPPING_NAMES[config.model_type])
    architectures = getattr(config, "architectures", None) or []
    name = architectures[0] if isinstance(architectures, (list, tuple)) and architectures else None
    found = getattr(transformers, name, None) if isinstance(name, str) else None
    if isinstance(found, type) and issubclass(found, transformers.PreTrainedModel):
        return found  # only a model class: any other top-level name (pipeline, AutoConfig) is never called
    found = MODEL_MAPPING_NAMES.get(config.model_type)
    found = found[0] if isinstance(found, (list, tuple)) else found
    if isinstance(found, str) and isinstance(getattr(transformers, found, None), type):
        return getattr(transformers, found)
    raise UnknownBackboneError(
        f"config.json names architectures={shown(architectures)}, which is no transformers model class, and "
        f"transformers has no model for model_type {config.model_type!r}. Fix architectures in config.json "
        '(for example ["ResNetBackbone"]), or load the backbone checkpoint itself.'
    )


def from_pretrained(transformers, cls: type, folder: Path, config, pretrained: bool) -> nn.Module:
    """Build ``cls`` from ``config`` (and the folder's weights); what a broken config or file makes the model
    code raise becomes a :class:`CheckpointError` that keeps transformers' message."""
    # the per-stage norms of stages the checkpoint did not output start as identity: not worth a load report
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        if not pretrained:
            return cls(config)
        return cls.from_pretrained(str(folder), config=config, trust_remote_code=False)
    except BUILD_ERRORS as err:
        raise CheckpointError(
            f"{folder} does not build a {cls.__name__}: {type(err).__name__}: {err}. Check config.json (and the "
            "weights beside it), or save the model again with save_pretrained."
        ) from err
    finally:
        transformers.logging.set_verbosity(verbosity)


def read_config(transformers, folder: Path, kwargs: dict):
    """The folder's ``config.json`` through ``AutoConfig``, or a :class:`CheckpointError` saying what is wrong."""
    from huggingface_hub.errors import StrictDataclassError  # transformers' configs validate their fields

    try:
        return transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=False, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StrictDataclassError) as err:
        reason = " ".join(str(err).split())
        raise CheckpointError(
            f"{folder / 'config.json'} is not a usable transformers config ({type(err).__name__}: "
            f"{reason[:600]}). It needs valid JSON with a model_type that transformers knows (resnet, convnext, "
            "swin, ...); save the model again with save_pretrained."
        ) from err


def feature_info_stages(info, every: bool) -> list[Stage]:
    """Stages of a timm feature network from its ``feature_info``: every stage of the architecture, or only
    those it outputs."""
    items = info.info if every else [info.info[i] for i in info.out_indices]
    return [
        Stage(item["module"], index, int(item["num_chs"]), int(item["reduction"]), item["module"])
        for index, item in enumerate(items)
    ]


def build_timm_backbone(
    cls: type, config, folder: Path, pretrained: bool
) -> tuple[nn.Module, list[int], str | None]:
    """transformers' ``TimmBackbone`` built to output every stage its checkpoint has weights for.

    Its ``from_pretrained`` reads timm's registry, not the folder, so it is built here and the folder's weights
    loaded. timm's feature network drops the modules after the last stage it outputs, so a checkpoint saved with
    ``out_indices=[1, 2]`` has weights up to stage 2 only, one saved with ``out_indices=[-1]`` for every stage:
    the stages served are those whose weights the file holds, whatever the saved selection; random weights serve
    every stage.

    Returns:
        The model, the saved ``out_indices``, and why later stages cannot be served (None when all can).
    """
    saved = list(config.out_indices)
    config.out_indices = list(
        range(len(cls(config).stage_names))
    )  # BackboneMixin: every stage of the network
    model = cls(config)
    if not pretrained:
        return model, saved, None
    weights_file = find_weights_file(folder)
    state = read_state_dict(weights_file, model)
    count = len(config.out_indices)
    while count > 1 and not set(model.state_dict()) <= set(state):  # the last stage the file has weights for
        count -= 1
        config.out_indices = list(range(count))
        model = cls(config)
    load_weights(model, state, str(weights_file))
    every = len(model.stage_names)
    why = (
        f"The checkpoint holds weights up to {model.out_features[-1]} only (it was saved with "
        f"out_indices={saved}); load it with pretrained=False for random weights at every stage."
    )
    return model, saved, why if count < every else None

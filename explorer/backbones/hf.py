"""transformers backbones: ``AutoBackbone`` checkpoints, and the backbone inside task models (MaskFormer, DETR).

``hf:<folder>`` reads a ``save_pretrained`` folder; ``hf:<repo id>`` reads the hub (cache first). When the
config is a backbone config the model is built with its backbone class; otherwise the class named in
``config.architectures`` is built and the first ``BackboneMixin`` module inside it is used. A
``*ForImageClassification`` folder keeps its head (:attr:`~explorer.Backbone.head`, class names from
``config.id2label``): the classification model is built too, and the backbone runs its very modules. Stage names are the
model's own ``stage_names`` (``stem``, ``stage1``, ...); maps come from the model's own ``feature_maps`` output,
so they match transformers exactly (Swin's per-stage norms included). transformers backbones run every stage.

Example::

    >>> bb = load_hf("/tmp/swin-tiny", pretrained=True, out_indices=(1,))
    >>> bb(torch.randn(1, 3, 224, 224)).shapes
    {'stage1': (1, 96, 56, 56)}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from .._args import real, shown, whole
from ..errors import (
    CheckpointError,
    InvalidArgumentError,
    MissingDependencyError,
    StageSelectionError,
    UnknownBackboneError,
    WeightsUnavailableError,
)
from ..hooks import FeatureMaps, LayerLayout, capture, to_nchw, token_grid
from ..images import MAX_INPUT_SIDE, Preprocess
from ._base import AttentionWeights, Backbone, Head, Stage
from ._checkpoint import find_weights_file, load_weights, read_state_dict
from ._hub import ALTERNATIVES, hub_file
from .timm import geometric_part

__all__ = ["HFBackbone", "HFPreprocess", "load_hf", "find_backbone"]

_log = logging.getLogger(__name__)


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise MissingDependencyError(
            'hf: specs need transformers. Install the extra: pip install "explorer[hf]" '
            "(or pip install transformers)."
        ) from err
    return transformers


def _is_timm_features(module: nn.Module) -> bool:
    """A timm ``features_only`` network (what transformers' timm-backed conv encoders hold, e.g. DETR's)."""
    info = getattr(module, "feature_info", None)
    return callable(getattr(info, "module_name", None)) and callable(getattr(info, "channels", None))


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
        if _is_timm_features(module):
            return name, module
    raise UnknownBackboneError(
        f"{type(model).__name__} contains no transformers backbone (no BackboneMixin module, no timm feature "
        "network). Load a backbone checkpoint instead (an AutoBackbone folder or a timm name)."
    )


def _stage_modules(model: nn.Module, count: int) -> list[str]:
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


class HFBackbone(Backbone):
    """A transformers backbone; maps come from its own ``feature_maps`` output.

    The model keeps the ``out_features`` it was built with (``served``: every stage it can output for
    checkpoints loaded here, the task's stages for a backbone inside a task model); selection picks among them,
    and ``why_served`` says why the others cannot be had.
    """

    def __init__(
        self,
        model: nn.Module,
        stages,
        *,
        served: list[str],
        why_served: str = "Select among those, or load the backbone checkpoint itself rather than a task model.",
        classifier: Head | None = None,
        **options,
    ) -> None:
        self.served = list(served)
        self.why_served = why_served
        self._classifier = classifier
        super().__init__(model, stages, **options)

    def _head(self) -> Head | None:
        """The ``*ForImageClassification`` model of the folder, sharing the backbone's modules; else None."""
        return self._classifier

    def out_of_order(self, module: str) -> str:
        """Hiera's encoder runs on unrolled tokens until its last stage (its ``reroll`` puts them back for the
        stage maps only); a windowed ViT's encoder (LW-DETR, RF-DETR) on tokens window by window."""

        def inside(prefix: str) -> bool:
            return module == prefix or module.startswith(prefix + ".")

        rerolled = [name for name, part in self.model.named_modules() if hasattr(part, "reroll")]
        if module != self.all_stages[-1].module and any(inside(name) for name in rerolled):
            return "tokens in Hiera's unrolled order, not in image order"
        config = getattr(self.model, "config", None)
        windows = int(getattr(config, "num_windows", 1) or 1)
        if windows > 1 and hasattr(self.model, "encoder") and inside("encoder"):
            return "tokens window by window, not in image order"
        return ""

    def _stage_maps(self, pixel_values: torch.Tensor, names: list[str]) -> FeatureMaps:
        return self._forward(pixel_values, names, self.model)  # the model's own feature_maps keep gradients

    def _servable_stages(self) -> list[str]:
        return [name for name in self.stage_names if name in self.served]

    def _on_select(self) -> None:
        refused = [name for name in self._out_features if name not in self.served]
        if refused:
            raise StageSelectionError(
                f"This {type(self.model).__name__} outputs {self.served} only; {refused} cannot be selected. "
                + self.why_served
            )

    def _forward(self, pixel_values: torch.Tensor, layers: list[str], model: nn.Module) -> FeatureMaps:
        """Stages from the model's own ``feature_maps``, other layers from hooks, in one full pass."""
        stages = {stage.name: stage for stage in self.all_stages}
        refused = [name for name in layers if name in stages and name not in self.served]
        if refused:
            raise StageSelectionError(
                f"This {type(self.model).__name__} outputs {self.served} only, not {refused}. {self.why_served}"
            )
        extra = [name for name in layers if name not in stages]
        raw = FeatureMaps()
        if extra:
            options = self._capture_options(pixel_values, model, extra)
            with capture(model, extra, stop_early=False, **options) as raw:
                output = model(pixel_values)
        else:
            output = model(pixel_values)
        by_name = dict(zip(self.served, getattr(output, "feature_maps", output)))  # timm feature nets: a list
        hw = tuple(pixel_values.shape[-2:])

        def stage_map(stage: Stage) -> torch.Tensor:
            return to_nchw(by_name[stage.name], hw, LayerLayout(stage.channels, False, stage.reduction))

        maps = FeatureMaps(
            ((name, stage_map(stages[name]) if name in stages else raw[name]) for name in layers),
            unaligned=raw.unaligned,
        )
        return self._flag_reordered(maps)

    def attention_blocks(self) -> list[str]:
        """ViT backbones with a class token (DINOv2, with or without registers): ``stage<i>`` is encoder layer
        ``i - 1``, whose attention transformers returns with ``output_attentions``."""
        embeddings = getattr(self.model, "embeddings", None)
        layers = getattr(getattr(self.model, "config", None), "num_hidden_layers", None)
        if getattr(embeddings, "cls_token", None) is None or layers != len(self.all_stages) - 1:
            return []
        return self.stage_names[1:]

    def _attention(self, pixel_values: torch.Tensor, blocks: list[str]) -> AttentionWeights:
        """transformers' eager attention for one full pass (SDPA returns no weights), then the model's own
        implementation back."""
        model = self.model
        previous = model.config._attn_implementation
        try:
            model.set_attn_implementation("eager")
            attentions = model(pixel_values, output_attentions=True).attentions
        finally:
            model.set_attn_implementation(previous)
        index = {name: position for position, name in enumerate(self.stage_names[1:])}
        weights = {name: attentions[index[name]] for name in blocks}
        registers = int(getattr(model.config, "num_register_tokens", 0) or 0)
        prefix = ("class", *(f"register {i}" for i in range(registers)))
        tokens = attentions[0].shape[-1]
        patch = self.all_stages[1].reduction
        _, height, width = token_grid(tokens, tuple(pixel_values.shape[-2:]), patch, len(prefix))
        return AttentionWeights(weights, prefix, (height, width))


def _probe_stages(backbone: nn.Module, input_size: tuple[int, int]) -> list[Stage]:
    """Channels and reductions of every stage, from one forward pass on zeros with all hidden states."""
    names = list(backbone.stage_names)
    height, width = input_size
    try:
        with torch.inference_mode():
            output = backbone(torch.zeros(1, 3, height, width), output_hidden_states=True)
    except _BUILD_ERRORS as err:  # a config whose fields disagree (hidden_sizes shorter than depths)
        raise CheckpointError(
            f"The {type(backbone).__name__} built from this config.json fails on its first forward pass "
            f"({type(err).__name__}: {err}). Check the config's sizes and depths, or save it again."
        ) from err
    hidden = getattr(output, "reshaped_hidden_states", None) or output.hidden_states
    # the maps the model outputs are the truth (windowed ViTs hold their hidden states per window); hidden
    # states tell the stages it does not output
    outputs = dict(zip(backbone.out_features, output.feature_maps))
    channels = list(getattr(backbone, "num_features", None) or [None] * len(names))
    modules = _stage_modules(backbone, len(names))
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


def _from_pretrained(transformers, cls: type, folder: Path, config, pretrained: bool) -> nn.Module:
    """Build ``cls`` from ``config`` (and the folder's weights); what a broken config or file makes the model
    code raise becomes a :class:`CheckpointError` that keeps transformers' message."""
    # the per-stage norms of stages the checkpoint did not output start as identity: not worth a load report
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        if not pretrained:
            return cls(config)
        return cls.from_pretrained(str(folder), config=config, trust_remote_code=False)
    except _BUILD_ERRORS as err:
        raise CheckpointError(
            f"{folder} does not build a {cls.__name__}: {type(err).__name__}: {err}. Check config.json (and the "
            "weights beside it), or save the model again with save_pretrained."
        ) from err
    finally:
        transformers.logging.set_verbosity(verbosity)


# what model code raises on a config or file it cannot use (an ExplorerError passes through unchanged)
_BUILD_ERRORS = (
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    AttributeError,
    AssertionError,
    RuntimeError,
    OSError,
)


def _read_config(transformers, folder: Path, kwargs: dict):
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


class HFPreprocess(Preprocess):
    """transformers' own image processor: :meth:`pixel_values` is exactly its ``pixel_values``.

    Aspect ratio, padding and variable sizes are the processor's (DETR keeps the aspect ratio, so images of other
    shapes give maps of other shapes). :meth:`view` runs the same processor with rescaling, normalisation and
    channel flipping switched off: the image the model got, before those steps.

    Args:
        processor: an image processor (``AutoImageProcessor.from_pretrained(folder)``).

    Raises:
        CheckpointError: a setting explorer cannot honour: a size outside 1..``MAX_INPUT_SIDE``, a zero or
            non-finite ``image_std``, a processor that needs more than images (ViTPose's boxes); the message
            names it.

    Example::

        >>> pre = HFPreprocess(transformers.DetrImageProcessor())
        >>> pre.pixel_values([Image.new("RGB", (640, 480))]).shape
        torch.Size([1, 3, 800, 1066])
    """

    def __init__(self, processor) -> None:
        self.processor = processor
        name = type(processor).__name__
        hint = f" Sides run from 1 to {MAX_INPUT_SIDE} pixels."
        try:
            for key in ("size", "crop_size"):
                sides = _sides(getattr(processor, key, None))
                for side in sides:
                    if side is not None:
                        whole(f"{name}.{key}", side, minimum=1, maximum=MAX_INPUT_SIDE, hint=hint)
            std = getattr(processor, "image_std", None)
            if getattr(processor, "do_normalize", False) and std is not None:
                std = [std] if isinstance(std, (int, float)) else std
                values = [real(f"{name}.image_std", v, hint="pass finite numbers.") for v in std]
                if not all(values):
                    raise InvalidArgumentError(
                        f"{name}.image_std={values}: a zero standard deviation divides by zero."
                    )
        except (TypeError, ValueError) as err:  # InvalidArgumentError
            raise CheckpointError(str(err)) from err
        self.settings = {"source": "transformers", "class": name, **json.loads(processor.to_json_string())}
        self.input_size = tuple(int(v) for v in self.pixel_values([Image.new("RGB", (512, 512))]).shape[-2:])
        wide = tuple(int(v) for v in self.pixel_values([Image.new("RGB", (512, 256))]).shape[-2:])
        self.fixed_size = wide == self.input_size

    def _run(self, images: Sequence[Image.Image], **options) -> torch.Tensor:
        name = type(self.processor).__name__
        if "boxes" in _required(
            self.processor
        ):  # a top-down pose processor (ViTPose): the whole image is the box
            options["boxes"] = [[[0.0, 0.0, float(image.width), float(image.height)]] for image in images]
        try:
            values = self.processor(images=list(images), return_tensors="pt", **options)["pixel_values"]
        except _BUILD_ERRORS as err:
            raise CheckpointError(
                f"{name} cannot preprocess plain images ({type(err).__name__}: {err}). Explorer runs whole "
                "images through the folder's own processor; save the model with an image processor that takes "
                "images alone (preprocessor_config.json), or load its backbone checkpoint."
            ) from err
        if not isinstance(values, torch.Tensor) or values.ndim != 4 or values.shape[:2] != (len(images), 3):
            raise CheckpointError(
                f"{name} gives pixel_values of shape {tuple(getattr(values, 'shape', ()))}, not one RGB image "
                "per input (B, 3, H, W); explorer cannot show maps of patches or crops."
            )
        return values

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self._run(images).float()

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        processor = self.processor
        timm_transform = getattr(processor, "val_transforms", None)
        if timm_transform is not None:
            steps = list(timm_transform.transforms)
            return type(timm_transform)(steps[len(geometric_part(timm_transform).transforms) + 1 :])(pixels)
        pixels = pixels * 255
        if getattr(processor, "do_rescale", False):
            pixels = pixels * processor.rescale_factor
        if getattr(processor, "do_normalize", False):
            mean = torch.as_tensor(processor.image_mean, dtype=pixels.dtype, device=pixels.device)
            std = torch.as_tensor(processor.image_std, dtype=pixels.dtype, device=pixels.device)
            pixels = (pixels - mean.reshape(-1, 1, 1)) / std.reshape(-1, 1, 1)
        if getattr(processor, "do_flip_channel_order", False):  # MobileViT's BGR
            pixels = pixels.flip(-3)
        return pixels

    def view(self, image: Image.Image) -> Image.Image:
        timm_transform = getattr(self.processor, "val_transforms", None)  # timm-wrapper folders: timm's own
        if timm_transform is not None:
            return geometric_part(timm_transform)(image)
        off = {"do_normalize": False}
        if getattr(self.processor, "do_flip_channel_order", None) is not None:  # MobileViT's BGR
            off["do_flip_channel_order"] = False
        try:
            values = self._run([image], do_rescale=False, **off)[0]
        except (
            CheckpointError
        ):  # a processor whose later steps need floats (EfficientNet's): undo its rescale
            values = self._run([image], **off)[0]
            if getattr(self.processor, "do_rescale", False):
                offset = 1.0 if getattr(self.processor, "rescale_offset", False) else 0.0
                values = (values + offset) / self.processor.rescale_factor
        pixels = values.float().round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()
        return Image.fromarray(pixels.numpy())


def _sides(value: object) -> list:
    """The sides in pixels of a processor's ``size`` or ``crop_size`` (a number, a list, a dict, a SizeDict)."""
    if hasattr(value, "__dataclass_fields__"):  # transformers' SizeDict
        value = vars(value)
    if isinstance(value, dict):
        return [value.get(key) for key in ("height", "width", "shortest_edge", "longest_edge")]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _required(processor) -> set[str]:
    """The arguments besides the images that ``processor.preprocess`` cannot do without."""
    import inspect

    parameters = inspect.signature(processor.preprocess).parameters.values()
    return {
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    } - {"self", "images"}


def _read_preprocess(transformers, folder: Path, config) -> HFPreprocess:
    """The folder's image processor (``AutoImageProcessor``, fast or slow as transformers picks); without a
    ``preprocessor_config.json``, a resize to the config's ``image_size`` (the size the model was built for) with
    ImageNet statistics, else the model type's processor with its defaults."""
    processor_file = folder / "preprocessor_config.json"
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        try:  # transformers knows where a folder keeps it (timm-wrapper folders: in config.json)
            processor = transformers.AutoImageProcessor.from_pretrained(str(folder), trust_remote_code=False)
        except OSError:
            if processor_file.is_file():
                raise
            processor = _default_processor(transformers, config)
        return HFPreprocess(processor)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:  # CheckpointError too
        reason = " ".join(str(err).split())
        source = processor_file if processor_file.is_file() else f"The default image processor of {folder}"
        raise CheckpointError(
            f"{source} gives no usable preprocessing ({type(err).__name__}: {reason[:600]}). Fix it, or "
            "delete it to use the defaults of the model type's image processor."
        ) from err
    finally:
        transformers.logging.set_verbosity(verbosity)


def _default_processor(transformers, config):
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

    # a task model (ViTPose) builds its backbone for the backbone config's size
    size = getattr(config, "image_size", None) or getattr(
        getattr(config, "backbone_config", None), "image_size", None
    )
    classes = IMAGE_PROCESSOR_MAPPING[type(config)] if type(config) in IMAGE_PROCESSOR_MAPPING else None
    found = classes.get("torchvision") or classes.get("pil") if isinstance(classes, dict) else None
    if found is not None and size is None:
        _log.info("no preprocessor_config.json: %s with its defaults", found.__name__)
        return found()
    size = size or 224  # the size the model was built for
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[-1]))
    _log.info(
        "no preprocessor_config.json and no processor for %s: resize to %dx%d",
        config.model_type,
        height,
        width,
    )
    return transformers.ViTImageProcessor(
        size={"height": height, "width": width},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
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
    config = _read_config(transformers, folder, kwargs)
    if pretrained and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise CheckpointError(f"{folder} holds a config but no weights. {ALTERNATIVES}")
    from transformers.backbone_utils import BackboneConfigMixin

    cls = cls_for_config(transformers, config)
    saved = (
        list(getattr(config, "out_features", None) or []) if isinstance(config, BackboneConfigMixin) else []
    )
    why = {}
    if config.model_type == "timm_backbone":
        model, saved_indices, why_served = _timm_backbone(cls, config, folder, pretrained)
        every = model._backbone.feature_info.info
        saved = [every[i]["module"] for i in saved_indices]
        why = {"why_served": why_served} if why_served else {}
    else:
        if isinstance(config, BackboneConfigMixin):
            config.out_features = list(config.stage_names)  # output every stage, so any selection works later
        try:
            model = _from_pretrained(transformers, cls, folder, config, pretrained)
        except ValueError as err:
            if "stem" not in str(err) or not isinstance(config, BackboneConfigMixin):
                raise
            # MaskFormerSwinBackbone refuses "stem" in out_features: serve every other stage
            config.out_features = list(config.stage_names)[1:]
            model = _from_pretrained(transformers, cls, folder, config, pretrained)
            why["why_served"] = (
                f"{cls.__name__} cannot output its stem (transformers refuses it); select a stage."
            )
    _, backbone = find_backbone(model)
    backbone.eval()
    classifier = None
    task_cls = _classifier_class(transformers, config)
    if task_cls is not None and isinstance(config, BackboneConfigMixin):
        classifier = _classification_head(transformers, task_cls, backbone, folder, config, pretrained)
    preprocess = _read_preprocess(transformers, folder, config)
    if _is_timm_features(backbone):  # a task model's timm encoder: the stages it outputs
        stages = _feature_info_stages(backbone.feature_info, every=False)
        served = [stage.name for stage in stages]
    elif config.model_type == "timm_backbone":  # every stage of the architecture, served or not
        stages = _feature_info_stages(backbone._backbone.feature_info, every=True)
        served = list(backbone.out_features)
    else:
        stages = _probe_stages(backbone, preprocess.input_size)
        served = list(backbone.out_features)
    if out_indices is None and out_features is None:
        out_features = [name for name in saved if name in served] or served  # what transformers selects
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
        classifier=classifier,
        **why,
    )


def _classifier_class(transformers, config) -> type | None:
    """The image-classification class ``config.architectures`` names (``ResNetForImageClassification``), if any."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    known = set()
    for names in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.values():
        known.update(names if isinstance(names, (list, tuple)) else [names])
    architectures = getattr(config, "architectures", None) or []
    name = next((a for a in architectures if isinstance(a, str) and a in known), None)
    return getattr(transformers, name, None) if name else None


def _classification_head(
    transformers, task_cls: type, backbone: nn.Module, folder: Path, config, pretrained: bool
) -> Head | None:
    """The folder's classification model as the backbone's head: built (with the folder's weights), and the
    backbone's top-level modules replaced by the classification model's own where they are the same layers, so
    the stages a CAM taps run inside the head and the maps are the head's. None (with a log line) when the two
    share no stage module."""
    task = _from_pretrained(transformers, task_cls, folder, config, pretrained).eval()
    base = task.base_model
    shared = []
    for name, mine in list(backbone.named_children()):
        # the same child (ResNet's embedder, encoder), or the whole base model (Swin's backbone holds a SwinModel)
        theirs = base if type(base) is type(mine) else getattr(base, name, None)
        if isinstance(theirs, nn.Module) and type(theirs) is type(mine) and _same_tensors(mine, theirs):
            setattr(backbone, name, theirs)
            shared.append(name)
    if not shared:
        _log.info(
            "%s shares no module with %s: loaded without its head", task_cls.__name__, type(backbone).__name__
        )
        return None
    labels = dict(getattr(config, "id2label", None) or {})
    count = int(config.num_labels)
    names = tuple(str(labels.get(i, labels.get(str(i), f"class {i}"))) for i in range(count))
    classifier = getattr(task, "classifier", None)
    if not isinstance(classifier, nn.Module):  # the layers beside the base model
        classifier = nn.ModuleList(child for child in task.children() if child is not base)
    return Head(task, names, classifier, read_logits=_logits)


def _same_tensors(mine: nn.Module, theirs: nn.Module) -> bool:
    """``theirs`` holds every parameter and buffer of ``mine``, by name and shape (and perhaps a pooler more)."""
    have = {key: tuple(value.shape) for key, value in theirs.state_dict().items()}
    return all(have.get(key) == tuple(value.shape) for key, value in mine.state_dict().items())


def _logits(output) -> torch.Tensor:
    """A classification output's ``logits`` (PP-LCNet's classifier returns them as its first field)."""
    logits = getattr(output, "logits", None)
    return output[0] if logits is None else logits


def _feature_info_stages(info, every: bool) -> list[Stage]:
    """Stages of a timm feature network from its ``feature_info``: every stage of the architecture, or only
    those it outputs."""
    items = info.info if every else [info.info[i] for i in info.out_indices]
    return [
        Stage(item["module"], index, int(item["num_chs"]), int(item["reduction"]), item["module"])
        for index, item in enumerate(items)
    ]


def _timm_backbone(
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
    config.out_indices = list(range(len(cls(config)._backbone.feature_info.info)))
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
    every = len(model._backbone.feature_info.info)
    why = (
        f"The checkpoint holds weights up to {model.out_features[-1]} only (it was saved with "
        f"out_indices={saved}); load it with pretrained=False for random weights at every stage."
    )
    return model, saved, why if count < every else None

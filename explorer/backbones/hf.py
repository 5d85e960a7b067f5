"""transformers backbones: ``AutoBackbone`` checkpoints, and the backbone inside task models (MaskFormer, DETR).

``hf:<folder>`` reads a ``save_pretrained`` folder; ``hf:<repo id>`` reads the hub (cache first). When the
config is a backbone config the model is built with its backbone class; otherwise the class named in
``config.architectures`` is built and the first ``BackboneMixin`` module inside it is used. A
``*ForImageClassification`` folder keeps its head (:attr:`~explorer.Backbone.head`, class names from
``config.id2label``): the classification model is built too, and the backbone runs its very modules. Stage names are the
model's own ``stage_names`` (``stem``, ``stage1``, ...); maps come from the model's own ``feature_maps`` output,
so they match transformers exactly (Swin's per-stage norms included). transformers backbones run every stage.

Example::

    >>> import tempfile, transformers
    >>> folder = tempfile.mkdtemp()
    >>> config = transformers.SwinConfig(embed_dim=8, depths=[1, 1], num_heads=[1, 1], out_indices=[1, 2])
    >>> transformers.SwinBackbone(config).save_pretrained(folder)
    >>> bb = load_hf(folder, pretrained=True, out_indices=(1,), device="cpu")
    >>> bb.stage_names, bb(torch.randn(1, 3, 224, 224)).shapes
    (['stem', 'stage1', 'stage2'], {'stage1': (1, 8, 56, 56)})
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..errors import (
    CheckpointError,
    StageSelectionError,
    WeightsUnavailableError,
)
from ..hooks import FeatureMaps, capture, to_nchw, token_grid
from ._base import AttentionWeights, Backbone, Head, Stage
from ._hf_head import classification_head, classifier_class
from ._hf_model import (
    build_timm_backbone,
    cls_for_config,
    feature_info_stages,
    find_backbone,
    from_pretrained,
    import_transformers,
    is_timm_features,
    probe_stages,
    read_config,
    timm_features,
)
from ._hf_processor import HFPreprocess
from ._hub import ALTERNATIVES, hub_file

__all__ = ["HFBackbone", "HFPreprocess", "load_hf", "find_backbone"]

_log = logging.getLogger(__name__)


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

    def _out_of_order(self, module: str) -> str:
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
        stages = self.stage_names
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
            return to_nchw(by_name[stage.name], hw, stage.feature_layout())

        maps = FeatureMaps(
            ((name, stage_map(self.stage(name)) if name in stages else raw[name]) for name in layers),
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
        # transformers has no public getter for the implementation in use; its docs read this attribute. Read
        # it tolerantly (None when a version drops it: the model is then left on eager, which is still correct)
        previous = getattr(model.config, "_attn_implementation", None)
        try:
            model.set_attn_implementation("eager")
            attentions = model(pixel_values, output_attentions=True).attentions
        finally:
            if previous is not None:
                model.set_attn_implementation(previous)
        index = {name: position for position, name in enumerate(self.stage_names[1:])}
        weights = {name: attentions[index[name]] for name in blocks}
        registers = int(getattr(model.config, "num_register_tokens", 0) or 0)
        prefix = ("class", *(f"register {i}" for i in range(registers)))
        tokens = attentions[0].shape[-1]
        patch = self.all_stages[1].reduction
        _, height, width = token_grid(tokens, tuple(pixel_values.shape[-2:]), patch, len(prefix))
        return AttentionWeights(weights, prefix, (height, width))


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
    transformers = import_transformers()
    folder, origin = _resolve_folder(spec, pretrained)
    config = read_config(transformers, folder, kwargs)
    if pretrained and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise CheckpointError(f"{folder} holds a config but no weights. {ALTERNATIVES}")
    from transformers.backbone_utils import BackboneConfigMixin

    cls = cls_for_config(transformers, config)
    saved = (
        list(getattr(config, "out_features", None) or []) if isinstance(config, BackboneConfigMixin) else []
    )
    why = {}
    if config.model_type == "timm_backbone":
        model, saved_indices, why_served = build_timm_backbone(cls, config, folder, pretrained)
        saved = [model.stage_names[i] for i in saved_indices]
        why = {"why_served": why_served} if why_served else {}
    else:
        if isinstance(config, BackboneConfigMixin):
            config.out_features = list(config.stage_names)  # output every stage, so any selection works later
        try:
            model = from_pretrained(transformers, cls, folder, config, pretrained)
        except ValueError as err:
            if "stem" not in str(err) or not isinstance(config, BackboneConfigMixin):
                raise
            # MaskFormerSwinBackbone refuses "stem" in out_features: serve every other stage
            config.out_features = list(config.stage_names)[1:]
            model = from_pretrained(transformers, cls, folder, config, pretrained)
            why["why_served"] = (
                f"{cls.__name__} cannot output its stem (transformers refuses it); select a stage."
            )
    _, backbone = find_backbone(model)
    backbone.eval()
    classifier = None
    task_cls = classifier_class(transformers, config)
    if task_cls is not None and isinstance(config, BackboneConfigMixin):
        classifier = classification_head(transformers, task_cls, backbone, folder, config, pretrained)
    preprocess = _read_preprocess(transformers, folder, config)
    if is_timm_features(backbone):  # a task model's timm encoder: the stages it outputs
        stages = feature_info_stages(backbone.feature_info, every=False)
        served = [stage.name for stage in stages]
    elif config.model_type == "timm_backbone":  # every stage of the architecture, served or not
        stages = feature_info_stages(timm_features(backbone).feature_info, every=True)
        served = list(backbone.out_features)
    else:
        stages = probe_stages(backbone, preprocess.input_size)
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

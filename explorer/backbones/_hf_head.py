"""A transformers classification folder's head: the ``*ForImageClassification`` model built beside the backbone,
sharing its very modules, so that a class-activation map's hooks on a stage fire inside the head.

Example::

    >>> import tempfile, transformers
    >>> folder = tempfile.mkdtemp()
    >>> config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
    ...                                    id2label={0: "cat", 1: "dog"})
    >>> transformers.ResNetForImageClassification(config).save_pretrained(folder)
    >>> head = load_backbone(f"hf:{folder}", pretrained=True, device="cpu").head
    >>> type(head.network).__name__, head.class_names
    ('ResNetForImageClassification', ('cat', 'dog'))
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ._hf_model import from_pretrained
from ._parts import Head

__all__ = ["classification_head", "classifier_class"]

_log = logging.getLogger(__name__)


def classifier_class(transformers, config) -> type | None:
    """The image-classification class ``config.architectures`` names (``ResNetForImageClassification``), if any."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    known = set()
    for names in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.values():
        known.update(names if isinstance(names, (list, tuple)) else [names])
    architectures = getattr(config, "architectures", None) or []
    name = next((a for a in architectures if isinstance(a, str) and a in known), None)
    return getattr(transformers, name, None) if name else None


def classification_head(
    transformers, task_cls: type, backbone: nn.Module, folder: Path, config, pretrained: bool
) -> Head | None:
    """The folder's classification model as the backbone's head: built (with the folder's weights), and the
    backbone's top-level modules replaced by the classification model's own where they are the same layers, so
    the stages a CAM taps run inside the head and the maps are the head's. None (with a log line) when the two
    share no stage module."""
    task = from_pretrained(transformers, task_cls, folder, config, pretrained).eval()
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

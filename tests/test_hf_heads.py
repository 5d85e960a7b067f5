"""Folders are what they say: a transformers ``*ForImageClassification`` folder keeps its head.

Every image-classification type that transformers also has a backbone class for (from its public auto mappings)
is built tiny with random weights and ``id2label`` names, saved with ``save_pretrained`` and loaded with
explorer. The oracle is the saved model itself, read back by transformers: explorer's head gives its logits,
``cam(..., target=3)`` explains class 3 (named from ``id2label``), and on CNN stages the map equals grad-cam's
own on the oracle model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import explorer

transformers = pytest.importorskip("transformers")
gc_cam = pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from test_oracle_hf import TINY  # noqa: E402
from transformers.models.auto.modeling_auto import (  # noqa: E402
    MODEL_FOR_BACKBONE_MAPPING_NAMES,
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
)

from explorer.cam_gradcam import release  # noqa: E402

EXTRA_TINY = {  # types whose default config is already small
    "pp_lcnet": {},
    "textnet": {},
}
NEEDS = {"dinat": "natten"}  # a package transformers needs to build the type
LABELS = {i: f"label {i}" for i in range(5)}

# every classification type with a backbone class, from transformers' public auto mappings
TYPES = sorted(set(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES) & set(MODEL_FOR_BACKBONE_MAPPING_NAMES))


def test_the_sweep_covers_every_type_but_those_needing_another_package():
    covered = [t for t in TYPES if t in TINY or t in EXTRA_TINY]
    assert sorted(set(TYPES) - set(covered)) == sorted(NEEDS)
    assert len(covered) >= 15, covered


def _folder(model_type: str, tmp_path):
    settings = {**TINY.get(model_type, {}), **EXTRA_TINY.get(model_type, {})}
    config = transformers.AutoConfig.for_model(
        model_type,
        **settings,
        num_labels=len(LABELS),
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    torch.manual_seed(0)
    cls = getattr(transformers, MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES[model_type])
    cls(config).eval().save_pretrained(tmp_path)
    return cls.from_pretrained(str(tmp_path)).eval()


def _size(bb) -> tuple[int, int]:
    config = bb.head.network.config
    size = getattr(config, "image_size", None) or 64
    size = size if isinstance(size, (list, tuple)) else (size, size)
    return (64, 64) if max(size) > 224 else (int(size[0]), int(size[-1]))


@pytest.mark.parametrize("model_type", [t for t in TYPES if t in TINY or t in EXTRA_TINY])
def test_a_classification_folder_keeps_its_head_and_cam_explains_the_class(model_type, tmp_path):
    oracle = _folder(model_type, tmp_path)
    bb = explorer.load_backbone(f"hf:{tmp_path}", device="cpu")
    assert bb.head is not None and type(bb.head.network).__name__ == type(oracle).__name__
    assert bb.class_names == [LABELS[i] for i in range(len(LABELS))]
    torch.manual_seed(1)
    x = torch.randn(2, 3, *_size(bb))
    with torch.no_grad():
        output = oracle(x)
        expected = output.logits if "logits" in output else output[0]  # PP-LCNet's logits come first
        torch.testing.assert_close(bb.head.logits(x), expected, rtol=1e-4, atol=1e-5)
    results = explorer.cam(bb, x, target=3)
    probabilities = expected.softmax(-1)
    for b, result in enumerate(results):
        assert result.target == 3 and result.target_name == "label 3"
        assert len(result.top5) == len(LABELS)
        for index, name, probability in result.top5:
            assert name == LABELS[index]
            assert probability == pytest.approx(float(probabilities[b, index]), rel=1e-4, abs=1e-6)
    by_name = explorer.cam(bb, x, target="label 3")
    assert all(torch.equal(a.map, b.map) for a, b in zip(results, by_name))
    # on a CNN stage (a plain NCHW module output), grad-cam itself on the oracle model draws the same map
    path = bb.all_stages[bb.stage_names.index(results[0].stage)].module
    modules = dict(oracle.named_modules())
    layer = modules[min((n for n in modules if n == path or n.endswith(f".{path}")), key=len)]
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        oracle(x)
    handle.remove()
    if (
        isinstance(seen[0], torch.Tensor)
        and seen[0].ndim == 4
        and tuple(seen[0].shape[-2:]) == tuple(results[0].stage_map.shape)
    ):
        explainer = gc_cam.GradCAM(model=_Logits(oracle), target_layers=[layer])
        try:
            hand = explainer(x, targets=[ClassifierOutputTarget(3)] * 2)
        finally:
            release(explainer)
        for result, reference in zip(results, hand):
            np.testing.assert_allclose(result.map.numpy(), reference, atol=1e-5)


class _Logits(torch.nn.Module):
    """grad-cam wants a model that returns the scores: transformers' output without the wrapper."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.model(x)
        return output.logits if "logits" in output else output[0]


def test_a_headless_backbone_folder_stays_headless(tmp_path):
    config = transformers.AutoConfig.for_model("resnet", **TINY["resnet"])
    transformers.ResNetBackbone(config).save_pretrained(tmp_path)
    bb = explorer.load_backbone(f"hf:{tmp_path}", device="cpu")
    assert bb.head is None and bb.class_names == []
    assert explorer.cam(bb, torch.randn(1, 3, 64, 64), target=3)[0].target_name == "stage4 channel 3"

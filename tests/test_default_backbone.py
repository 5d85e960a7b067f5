"""The built-in default: real ImageNet weights from the package, offline."""

from __future__ import annotations

import torch

import explorer


def test_default_weights_come_from_the_package(default_backbone):
    assert default_backbone.spec == "default"
    assert default_backbone.weights == "package"  # HF_HOME is an empty folder in tests: no cache
    assert default_backbone.stage_names == ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"]


def _probabilities(backbone, image):
    with torch.inference_mode():
        return backbone.model(backbone.pixel_values(image)).softmax(-1)[0]


def test_default_is_really_pretrained(default_backbone, samples):
    """chelsea is a domestic cat, coffee an espresso; random weights give ~1/1000 to each class.

    With the checkpoint's own preprocessing (TF's: bicubic, crop 0.875, mean/std 0.5) this ported TF model
    splits chelsea between tiger cat (282, 0.39), Egyptian cat (285, 0.36) and tabby (281, 0.17).
    """
    cat = _probabilities(default_backbone, samples["chelsea"])
    assert 285 in cat.topk(3).indices.tolist()
    assert cat[285] > 0.3
    assert cat[281:286].sum() > 0.8  # the domestic-cat classes together
    coffee = _probabilities(default_backbone, samples["coffee"])
    assert coffee.argmax().item() == 967 and coffee[967] > 0.5


def test_random_default_is_labelled(samples):
    bb = explorer.load_backbone("default", pretrained=False, device="cpu")
    assert bb.weights == "random"
    assert _probabilities(bb, samples["coffee"])[967] < 0.05


def test_default_feature_maps(default_backbone, samples):
    maps = default_backbone.extract([samples["chelsea"], samples["coffee"]])
    assert maps.shapes == {
        "blocks.0": (2, 16, 112, 112),
        "blocks.1": (2, 24, 56, 56),
        "blocks.2": (2, 40, 28, 28),
        "blocks.4": (2, 112, 14, 14),
        "blocks.6": (2, 320, 7, 7),
    }

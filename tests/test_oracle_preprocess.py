"""explorer's preprocessing against the oracles: transformers' ``AutoImageProcessor`` for every processor type a
supported backbone uses, and timm's ``resolve_data_config`` + ``create_transform`` for timm models; on square,
wide, tall, tiny and large images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import explorer
from explorer.backbones.hf import hf_preprocess
from explorer.images import preprocess

transformers = pytest.importorskip("transformers")


def _image(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width * 7919 + height)
    base = explorer.sample_images(["chelsea"])["chelsea"].resize((width, height), Image.Resampling.BILINEAR)
    noise = rng.integers(-20, 20, size=(height, width, 3))
    return Image.fromarray(np.clip(np.asarray(base, dtype=np.int64) + noise, 0, 255).astype(np.uint8))


IMAGES = {"square": (300, 300), "wide": (451, 300), "tall": (200, 641), "tiny": (5, 7), "large": (1999, 1201)}

# processor types of the supported transformers backbones (ResNet, ConvNeXt and DINOv3-ConvNeXt use ConvNeXt's;
# BiT, DINOv2 and Hiera use BiT's; ViT-style ones, Swin, BEiT and ViTDet, ViT's), with their size variants
PROCESSORS = {
    "convnext-224": lambda: transformers.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875),
    "convnext-384": lambda: transformers.ConvNextImageProcessor(size={"shortest_edge": 384}),
    "bit": lambda: transformers.BitImageProcessor(),
    "dinov2": lambda: transformers.BitImageProcessor(
        size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, resample=3
    ),
    "vit": lambda: transformers.ViTImageProcessor(),
    "vit-nonsquare": lambda: transformers.ViTImageProcessor(size={"height": 64, "width": 48}, resample=3),
    "beit": lambda: transformers.BeitImageProcessor(),
}


@pytest.mark.parametrize("image_name", sorted(IMAGES))
@pytest.mark.parametrize("processor_name", sorted(PROCESSORS))
def test_matches_auto_image_processor(processor_name, image_name, tmp_path):
    PROCESSORS[processor_name]().save_pretrained(tmp_path)
    oracle = transformers.AutoImageProcessor.from_pretrained(str(tmp_path))
    image = _image(*IMAGES[image_name])
    expected = oracle(image, return_tensors="pt")["pixel_values"]
    config = hf_preprocess(json.loads((tmp_path / "preprocessor_config.json").read_text()), None)
    got = preprocess([image], config)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


# distinct data configs of real timm checkpoints, plus overlays for the remaining crop rules
TIMM = {
    "resnet18.a1_in1k": {},
    "convnext_atto.d2_in1k": {},
    "vit_tiny_patch16_224.augreg_in21k_ft_in1k": {},
    "deit_tiny_patch16_224.fb_in1k": {},
    "inception_v3.tv_in1k": {},
    "tf_efficientnet_lite0.in1k": {},
    "mobilenetv3_small_050.lamb_in1k": {},
    "resnet18.squash": {"input_size": (3, 160, 160), "crop_pct": 0.9, "crop_mode": "squash"},
    "resnet18.nonsquare": {"input_size": (3, 128, 192), "crop_pct": 0.875, "interpolation": "bilinear"},
    "resnet18.full": {"input_size": (3, 96, 96), "crop_pct": 1.0, "interpolation": "bicubic"},
}


@pytest.mark.parametrize("image_name", sorted(IMAGES))
@pytest.mark.parametrize("spec", sorted(TIMM))
def test_matches_timm_transform(spec, image_name):
    name = (
        spec.split(".")[0] if "." in spec and spec.split(".")[1] in ("squash", "nonsquare", "full") else spec
    )
    overlay = TIMM[spec]
    kwargs = {"pretrained_cfg_overlay": overlay} if overlay else {}
    with torch.device("meta"):  # only the configuration matters here
        model = timm.create_model(name, pretrained=False, **kwargs)
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    image = _image(*IMAGES[image_name])
    expected = transform(image)[None]
    from explorer.backbones.timm import _preprocess

    got = preprocess([image], _preprocess(model))
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

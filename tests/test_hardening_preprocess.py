"""Preprocess under hostile input (issue 19): each source's Preprocess refuses what it cannot use with an
ImageError naming the fix, before the source's library sees it; valid input gives the library's own result."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from PIL import Image

from explorer.backbones.timm import TimmPreprocess
from explorer.errors import ImageError

SOURCES = ("timm", "transformers")


@functools.cache
def _preprocess(source: str):
    """The source's Preprocess; the transformers one skips (that case alone) without transformers."""
    if source == "timm":
        return TimmPreprocess({"input_size": (3, 32, 32), "crop_pct": 1.0})
    transformers = pytest.importorskip("transformers")
    from explorer.backbones.hf import HFPreprocess

    return HFPreprocess(transformers.DetrImageProcessor(size={"shortest_edge": 32, "longest_edge": 64}))


RGB = Image.new("RGB", (40, 30), (200, 10, 10))

BAD_IMAGE_LISTS = {
    "a list holding an object": [RGB, object()],
    "a greyscale image": [Image.new("L", (40, 30))],
    "an RGBA image": [Image.new("RGBA", (40, 30))],
    "a path string": ["cat.jpg"],
    "a tensor": [torch.zeros(3, 8, 8)],
    "a 1x500 strip": [Image.new("RGB", (500, 1))],
    "a generator": (image for image in [RGB]),
}
BAD_PIXELS = {
    "an int tensor": torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
    "a 3-D tensor": torch.zeros(3, 8, 8),
    "four channels": torch.zeros(1, 4, 8, 8),
    "an empty batch": torch.zeros(0, 3, 8, 8),
    "a zero-width map": torch.zeros(1, 3, 8, 0),
    "a NaN": torch.full((1, 3, 8, 8), math.nan),
    "an inf": torch.full((1, 3, 8, 8), math.inf),
    "a list": [[[[0.5]]]],
}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("case", BAD_IMAGE_LISTS)
def test_pixel_values_refuses_what_is_no_list_of_rgb_images(source, case):
    with pytest.raises(ImageError, match="load_image|MAX_ASPECT"):
        _preprocess(source).pixel_values(BAD_IMAGE_LISTS[case])


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(
    "case", ["a list holding an object", "a greyscale image", "a tensor", "a 1x500 strip"]
)
def test_view_refuses_what_is_no_rgb_image(source, case):
    with pytest.raises(ImageError, match="load_image|MAX_ASPECT"):
        _preprocess(source).view(BAD_IMAGE_LISTS[case][-1])


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("case", BAD_PIXELS)
def test_normalize_refuses_what_is_no_float_batch(source, case):
    with pytest.raises(ImageError, match=r"\(B, 3, H, W\)"):
        _preprocess(source).normalize(BAD_PIXELS[case])


@pytest.mark.parametrize("source", SOURCES)
def test_valid_input_gives_the_sources_own_result(source):
    """The checks change nothing: pixel_values equals normalize(view) of the same image, a single image is a
    batch of one, and normalize keeps gradients (feature visualisation needs them)."""
    pre = _preprocess(source)
    batch = pre.pixel_values([RGB])
    assert torch.equal(pre.pixel_values(RGB), batch)
    view = torch.from_numpy(np.array(pre.view(RGB))).permute(2, 0, 1)[None].float() / 255
    assert view.shape == batch.shape
    pixels = view.clone().requires_grad_()
    out = pre.normalize(pixels)
    torch.testing.assert_close(out, batch, rtol=0, atol=1e-5)
    out.sum().backward()
    assert pixels.grad is not None and bool(pixels.grad.abs().sum() > 0)

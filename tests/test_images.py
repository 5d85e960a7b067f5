"""Image input: every form becomes an upright RGB image; preprocessing follows the checkpoint."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import explorer
from explorer.backbones.timm import TimmPreprocess
from explorer.images import load_image, model_view, preprocess


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_every_input_form_gives_the_same_rgb_pixels(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    image = Image.fromarray(array)
    png = _encode(image, "PNG")
    (tmp_path / "a.png").write_bytes(png)
    forms = [array, image, png, bytearray(png), memoryview(png), tmp_path / "a.png", str(tmp_path / "a.png")]
    forms.append(torch.from_numpy(array).permute(2, 0, 1))
    for form in forms:
        loaded = load_image(form)
        assert loaded.mode == "RGB" and loaded.size == (20, 12)
        assert np.array_equal(np.asarray(loaded), array), type(form)


def test_exif_orientation_is_applied():
    # a 40x20 image, left half red, stored with orientation 6 (rotate 90 degrees clockwise to display)
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg = _encode(Image.fromarray(array), "JPEG", exif=exif, quality=95)
    upright = np.asarray(load_image(jpeg))
    assert upright.shape == (40, 20, 3)
    assert upright[5, 10, 0] > 200 and upright[35, 10, 0] < 60  # red is now on top


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "F"])
def test_any_mode_becomes_rgb(mode):
    image = Image.new("RGB", (8, 6), (200, 100, 50)).convert(mode if mode not in ("I;16", "F") else "L")
    if mode == "I;16":
        image = Image.fromarray(np.full((6, 8), 65535, dtype=np.uint16))
    if mode == "F":
        image = Image.fromarray(np.full((6, 8), 0.5, dtype=np.float32))
    rgb = load_image(image)
    assert rgb.mode == "RGB" and rgb.size == (8, 6)
    if mode == "I;16":
        assert np.asarray(rgb).min() == 255  # full 16-bit white stays white
    if mode == "F":
        assert np.asarray(rgb)[0, 0, 0] == 128


def test_transparent_png_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(load_image(_encode(rgba, "PNG"))).min() == 255


def test_model_view_and_preprocess_follow_the_config():
    image = Image.fromarray(np.zeros((300, 400, 3), dtype=np.uint8))
    config = TimmPreprocess(
        {"input_size": (3, 224, 224), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.875}
    )
    assert model_view(image, config).size == (224, 224)
    batch = preprocess([image, image], config)
    assert batch.shape == (2, 3, 224, 224)
    assert torch.allclose(batch, torch.full_like(batch, -1.0))  # black -> (0 - 0.5) / 0.5
    squash = TimmPreprocess({"input_size": (3, 100, 200), "crop_pct": 1.0, "crop_mode": "squash"})
    assert model_view(image, squash).size == (200, 100)


def test_samples_ship_offline():
    samples = explorer.sample_images()
    assert list(samples)[:2] == ["chelsea", "coffee"]
    assert all(image.mode == "RGB" for image in samples.values())

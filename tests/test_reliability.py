"""Reliability and security (issue 7, library part): bad input gets a clear error, untrusted files run no code,
nothing leaks.

Every refusal is checked for its exception class and for a message that names the fix. The property tests feed
random and damaged bytes to the image and checkpoint readers; their example counts are in ``settings``.
"""

from __future__ import annotations

import gc
import io
import json
import os
import pathlib
import re
import socket
import struct
import sys
import tempfile
import time
import tracemalloc
import weakref
import zlib

import numpy as np
import pytest
import timm
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import EpsImagePlugin, Image, ImageFile
from safetensors.torch import save_file
from torch import nn

import explorer
import explorer.images
from explorer.backbones import Backbone, Stage, _hub
from explorer.backbones._checkpoint import read_state_dict
from explorer.backbones.timm import TimmPreprocess
from explorer.errors import (
    CaptureError,
    CheckpointError,
    ImageError,
    LayerNotFoundError,
    MissingDependencyError,
    UnknownBackboneError,
    UnsafeCheckpointError,
    WeightsUnavailableError,
)
from explorer.hooks import capture
from explorer.images import MAX_SIDE, load_image

PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""Examples per property test; the whole file stays well under a minute on two cores."""

# What an ImageError's message offers as the fix, one of these for every refusal.
IMAGE_FIXES = (
    "Use a JPEG, PNG",
    "Re-save or re-export",
    "explorer.images.MAX_PIXELS",
    "Upload or pass a JPEG",
)
IMAGE_FIXES += ("Check the path, or upload",)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand: any header, whatever the pixel data (16-bit RGB, or a bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _animated(fmt: str, colours: list[tuple[int, int, int]], **kwargs) -> bytes:
    frames = [Image.new("RGB", (8, 8), colour) for colour in colours]
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **kwargs)


def _refused(source, match: str, **kwargs) -> str:
    with pytest.raises(ImageError) as info:
        load_image(source, **kwargs)
    message = str(info.value)
    assert re.search(match, message), message
    assert any(fix in message for fix in IMAGE_FIXES), message
    return message


# -- images: refused with a clear error ----------------------------------------------------------------------


def test_truncated_jpeg_and_png_are_damaged():
    array = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for fmt in ("JPEG", "PNG"):
        data = _encode(Image.fromarray(array), fmt)
        _refused(data[: len(data) // 2], r"^The uploaded file is damaged and cannot be decoded")
    png = _encode(Image.fromarray(array), "PNG")
    _refused(png[:30], r"not an image the explorer reads \(30 bytes")  # cut inside the header


def test_zero_bytes_text_and_pdf_named_jpg(tmp_path):
    _refused(b"", r"^The uploaded file is empty \(0 bytes\)")
    text = tmp_path / "holiday.jpg"
    text.write_text("these are my holiday notes, not a photo\n")
    _refused(text, rf"^{re.escape(str(text))} is not an image the explorer reads")
    pdf = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    _refused(pdf, r"is a PDF document", name="scan.jpg")
    _refused(tmp_path / "missing.jpg", r"No image file at")  # and the fix: "Check the path, or upload"


def test_eps_is_refused_without_running_ghostscript(monkeypatch):
    calls = []
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: calls.append(args))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n0 0 moveto 8 8 lineto stroke\n%%EOF\n"
    assert (
        Image.open(io.BytesIO(eps)).format == "EPS"
    )  # PIL alone would open it, and run Ghostscript to load it
    _refused(eps, r"not an image the explorer reads", name="logo.jpg")
    assert calls == []


class _Decoded(Exception):
    """Raised by a patched decoder: the image got past every size check and was about to be decoded."""


def _no_decoding(monkeypatch):
    def refuse(self, *args, **kwargs):
        raise _Decoded

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(Image.Image, "load", refuse)


BOMB = _png(20_000, 20_000, 1, 0, b"\x00" * 64)  # 400 megapixels declared in 100 bytes


def test_decompression_bomb_is_refused_from_its_header(monkeypatch):
    pil_limit = Image.MAX_IMAGE_PIXELS
    _no_decoding(monkeypatch)
    tracemalloc.start()
    try:
        message = _refused(BOMB, r"declares 20000x20000 = 400,000,000 pixels, over the limit of 100,000,000")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 5_000_000  # Python allocations while refusing: the header only, never the pixels
    assert "it was not decoded" in message and "explorer.images.MAX_PIXELS = <pixels>" in message
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # PIL's own limit is only borrowed while reading


def test_the_limit_is_max_pixels_both_ways(monkeypatch):
    small = _encode(Image.new("RGB", (40, 40)), "PNG")
    monkeypatch.setattr(explorer.images, "MAX_PIXELS", 1_000)
    _refused(small, r"40x40 = 1,600 pixels, over the limit of 1,000")
    monkeypatch.setattr(explorer.images, "MAX_PIXELS", 2_000)
    assert load_image(small).size == (40, 40)
    # raised above PIL's own limit (179 megapixels), the bomb now passes every check and reaches decoding
    monkeypatch.setattr(explorer.images, "MAX_PIXELS", 500_000_000)
    _no_decoding(monkeypatch)
    with pytest.raises(_Decoded):
        load_image(BOMB)


# -- images: odd but legitimate input works --------------------------------------------------------------------


def test_huge_photo_is_downscaled_to_max_side():
    array = np.full((4000, 6000, 3), 90, dtype=np.uint8)  # a 24-megapixel gradient
    array[..., 0] = np.linspace(0, 255, 6000).astype(np.uint8)
    array[..., 1] = np.linspace(0, 255, 4000).astype(np.uint8)[:, None]
    image = load_image(_encode(Image.fromarray(array), "JPEG", quality=75))
    assert image.mode == "RGB" and image.size == (MAX_SIDE, round(4000 * MAX_SIDE / 6000))
    corner = np.asarray(image)[-1, -1]
    assert corner[0] > 240 and corner[1] > 240  # the far corner of the gradient is still there


def test_tiny_image_end_to_end():
    bb = explorer.load_backbone("resnet18", out_indices=[1, 4], pretrained=False, device="cpu")
    tiny = _encode(Image.new("RGB", (4, 4), (200, 30, 30)), "PNG")
    pixels = bb.pixel_values(tiny)
    settings = bb.preprocess.settings
    expected = (torch.tensor([200, 30, 30]) / 255 - torch.tensor(settings["mean"])) / torch.tensor(
        settings["std"]
    )
    assert pixels.shape == (1, 3, 224, 224)
    assert torch.allclose(pixels[0, :, 100, 100], expected, atol=0.02)
    maps = bb.extract(tiny)
    assert maps.shapes == {"layer1": (1, 64, 56, 56), "layer4": (1, 512, 7, 7)}
    assert all(torch.isfinite(fmap).all() for fmap in maps.values())


def test_the_aspect_ratio_limit_is_exact():
    config = TimmPreprocess({"input_size": (3, 32, 32)})
    at_limit = np.zeros((1, explorer.images.MAX_ASPECT), np.uint8)
    assert explorer.images.preprocess([at_limit], config).shape == (1, 3, 32, 32)
    just_over = np.zeros((1, explorer.images.MAX_ASPECT + 1), np.uint8)
    with pytest.raises(explorer.ImageError, match="MAX_ASPECT"):
        explorer.images.preprocess([just_over], config)


@pytest.mark.parametrize("shape", [(4096, 1), (1, 4096)])
def test_extreme_aspect_ratio_is_refused_before_the_resize(shape):
    # timm's own resize would make a 1-pixel strip 256x1048576 before the crop (2.8 s, 1 GB here)
    ramp = np.linspace(0, 255, max(shape)).astype(np.uint8).reshape(shape)
    config = TimmPreprocess({"input_size": (3, 224, 224)})
    with pytest.raises(explorer.ImageError, match="MAX_ASPECT"):
        explorer.images.model_view(load_image(ramp), config)
    with pytest.raises(explorer.ImageError, match="Crop it"):
        explorer.images.preprocess([ramp], config)


@pytest.mark.parametrize(
    ("fmt", "kwargs"), [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True})], ids=["gif", "apng", "webp"]
)
def test_animated_image_gives_its_first_frame_and_frame_count(fmt, kwargs):
    image = load_image(_animated(fmt, [(255, 0, 0), (0, 255, 0), (0, 0, 255)], **kwargs))
    assert image.info["frames"] == 3
    assert tuple(np.asarray(image)[4, 4]) == (255, 0, 0)
    assert load_image(_encode(Image.new("RGB", (8, 8)), fmt)).info["frames"] == 1


def _palette(transparent: bool) -> bytes:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 1)
    return _encode(image, "PNG", **({"transparency": 0} if transparent else {}))


ENCODED_MODES = {
    # name: (encoded file, pixel (row, col), expected RGB)
    "png-16-bit-grey": (
        _encode(Image.fromarray(np.full((6, 8), 32896, dtype=np.uint16)), "PNG"),
        (3, 3),
        (128,) * 3,
    ),
    "png-16-bit-grey-white": (
        _encode(Image.fromarray(np.full((6, 8), 65535, dtype=np.uint16)), "PNG"),
        (0, 0),
        (255,) * 3,
    ),
    "png-48-bit-rgb": (
        _png(2, 1, 16, 2, b"\x00" + bytes.fromhex("ffff800000001234abcd00ff")),
        (0, 1),
        (0x12, 0xAB, 0),
    ),
    "jpeg-cmyk": (
        _encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95),
        (4, 4),
        (255, 0, 0),
    ),
    "png-palette": (_palette(transparent=False), (0, 0), (0, 0, 255)),
    "png-palette-transparent": (_palette(transparent=True), (4, 4), (255, 255, 255)),
    "png-rgba-half": (_encode(Image.new("RGBA", (8, 8), (0, 0, 0, 128)), "PNG"), (4, 4), (127, 127, 127)),
    "png-grey-alpha": (_encode(Image.new("LA", (8, 8), (0, 0)), "PNG"), (4, 4), (255, 255, 255)),
    "png-grey": (_encode(Image.new("L", (8, 8), 77), "PNG"), (4, 4), (77, 77, 77)),
    "jpeg-grey": (_encode(Image.new("L", (8, 8), 77), "JPEG", quality=95), (4, 4), (77, 77, 77)),
    "png-1-bit": (_encode(Image.new("1", (8, 8), 1), "PNG"), (4, 4), (255, 255, 255)),
    "tiff-rgb": (_encode(Image.new("RGB", (8, 8), (10, 20, 30)), "TIFF"), (4, 4), (10, 20, 30)),
    "bmp-rgb": (_encode(Image.new("RGB", (8, 8), (10, 20, 30)), "BMP"), (4, 4), (10, 20, 30)),
}


@pytest.mark.parametrize("name", list(ENCODED_MODES))
def test_encoded_files_of_any_mode_become_rgb(name):
    data, (row, col), expected = ENCODED_MODES[name]
    image = load_image(data)
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image)[row, col].astype(int) - expected).max() <= 2, np.asarray(image)[row, col]


@pytest.mark.parametrize(
    ("orientation", "red_at"), [(2, "top-right"), (3, "bottom-right"), (8, "bottom-left")]
)
def test_exif_rotated_jpeg_is_shown_upright(orientation, red_at):
    # 40x20 stored, red in the top-left quadrant (orientation 6 is in test_images.py)
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:10, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright = np.asarray(load_image(_encode(Image.fromarray(array), "JPEG", exif=exif, quality=95)))
    height, width = upright.shape[:2]
    assert (height, width) == ((40, 20) if orientation == 8 else (20, 40))
    row = height // 4 if red_at.startswith("top") else 3 * height // 4
    col = width // 4 if red_at.endswith("left") else 3 * width // 4
    assert upright[row, col, 0] > 200 and upright[height - 1 - row, width - 1 - col, 0] < 60


# -- images: property tests --------------------------------------------------------------------------------------


def _read_or_refuse(data: bytes) -> None:
    """The property: an RGB image within MAX_SIDE, or an ImageError that names a fix; nothing else."""
    try:
        image = load_image(data)
    except ImageError as err:
        assert any(fix in str(err) for fix in IMAGE_FIXES), str(err)
        return
    assert image.mode == "RGB" and max(image.size) <= MAX_SIDE


class _SmallLimit:
    """A lower MAX_PIXELS while property examples run, so a damaged header cannot make one example slow."""

    def __enter__(self):
        self.saved, explorer.images.MAX_PIXELS = explorer.images.MAX_PIXELS, 4_000_000

    def __exit__(self, *exc):
        explorer.images.MAX_PIXELS = self.saved


_RNG = np.random.default_rng(7)
_PHOTO = Image.fromarray(_RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8))
SEEDS = {
    "png": _encode(_PHOTO, "PNG"),
    "jpeg": _encode(_PHOTO, "JPEG", quality=80, exif=Image.Exif()),
    "gif": _animated("GIF", [(255, 0, 0), (0, 255, 0), (0, 0, 255)]),
    "apng": _animated("PNG", [(255, 0, 0), (0, 255, 0)]),
    "webp": _encode(_PHOTO, "WEBP"),
    "bmp": _encode(_PHOTO, "BMP"),
    "tiff": _encode(_PHOTO, "TIFF"),
    "tiff-lzw": _encode(_PHOTO, "TIFF", compression="tiff_lzw"),
    "ico": _encode(_PHOTO, "ICO"),
    "png-16-bit": ENCODED_MODES["png-16-bit-grey"][0],
    "jpeg-cmyk": ENCODED_MODES["jpeg-cmyk"][0],
}
MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"GIF89a", b"GIF87a"]
MAGIC += [b"BM", b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"\x00\x00\x01\x00", b"%PDF-1.4"]


@st.composite
def damaged(draw, seeds: dict[str, bytes]) -> bytes:
    """A valid file with a few bytes overwritten, cut or inserted."""
    data = bytearray(seeds[draw(st.sampled_from(sorted(seeds)))])
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        edit = draw(st.sampled_from(["overwrite", "overwrite", "cut", "insert"]))
        if edit == "overwrite":
            data[at] = draw(st.integers(0, 255))
        elif edit == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about corrupt EXIF and odd tags
@PROPERTY
@given(data=st.binary(max_size=4096))
def test_property_random_bytes(data):
    with _SmallLimit():
        _read_or_refuse(data)


@pytest.mark.filterwarnings("ignore::UserWarning")
@PROPERTY
@given(magic=st.sampled_from(MAGIC), rest=st.binary(max_size=2048))
def test_property_random_bytes_after_an_image_signature(magic, rest):
    with _SmallLimit():
        _read_or_refuse(magic + rest)


@pytest.mark.filterwarnings("ignore::UserWarning")
@PROPERTY
@given(data=damaged(SEEDS))
def test_property_damaged_images(data):
    # a longer fuzzing run (1.6 million damaged files) found IndexError and struct.error (GIF frame count),
    # TypeError and OverflowError (TIFF) and NotImplementedError (DDS) escaping before the fix
    with _SmallLimit():
        _read_or_refuse(data)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["gif", "apng", "webp", "tiff", "ico", "png", "png-16-bit", "jpeg-cmyk"])
def test_every_cut_and_every_overwritten_byte(name):
    # exhaustive where the property test samples: an animated GIF cut inside its second frame, or a TIFF with
    # one tag byte set to 0xFF, raised IndexError, struct.error or TypeError before the fix
    data = SEEDS[name]
    variants = [data[:cut] for cut in range(len(data))]
    variants += [
        data[:at] + bytes([value]) + data[at + 1 :] for at in range(len(data)) for value in (0, 127, 255)
    ]
    with _SmallLimit():
        for variant in variants:
            _read_or_refuse(variant)


# -- checkpoints ---------------------------------------------------------------------------------------------------


class _Touch:
    """Unpickling it would create a file: proof that code ran."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


class _System:
    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", [_Touch, _System])
@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path, payload, zipped):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pth"
    state = {"state_dict": {"conv1.weight": torch.zeros(64, 3, 7, 7)}, "extra": payload(marker)}
    torch.save(state, path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(UnsafeCheckpointError) as info:
        explorer.load_backbone(path, arch="resnet18", device="cpu")
    message = str(info.value)
    assert not marker.exists()
    assert "would run code" in message and "nothing in it was executed" in message
    assert "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')" in message
    assert re.search(r"GLOBAL (getattr|posix\.system)", message)  # what it would have called
    assert "\x1b[" not in message  # no terminal escapes from torch's own message
    torch.load(path, weights_only=False)  # the control: an unsafe load really runs the payload
    assert marker.exists()


@pytest.fixture(scope="module")
def resnet18_files(tmp_path_factory) -> dict[str, pathlib.Path]:
    """resnet18's weights as bare ``.safetensors`` and ``.pth`` files (read-only)."""
    folder = tmp_path_factory.mktemp("resnet18")
    state = timm.create_model("resnet18").state_dict()
    save_file(state, str(folder / "resnet18.safetensors"))
    torch.save(state, folder / "resnet18.pth")
    return {suffix: folder / f"resnet18{suffix}" for suffix in (".safetensors", ".pth")}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("cut", ["half", "header", "empty"])
def test_truncated_checkpoint_is_a_checkpoint_error(tmp_path, resnet18_files, suffix, cut):
    data = resnet18_files[suffix].read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes({"half": data[: len(data) // 2], "header": data[:40], "empty": b""}[cut])
    with pytest.raises(CheckpointError) as info:
        explorer.load_backbone(path, arch="resnet18", device="cpu")
    assert type(info.value) is CheckpointError
    assert "truncated or corrupt" in str(info.value) and "again" in str(info.value)


@pytest.mark.parametrize(
    "content",
    [b"<!DOCTYPE html><html><body>404 Not Found</body></html>", b"hello", bytes(range(256))],
    ids=["html-page", "text", "binary"],
)
def test_a_pth_that_is_not_a_checkpoint_is_not_called_unsafe(tmp_path, content):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        explorer.load_backbone(path, arch="resnet18", device="cpu")
    assert type(info.value) is CheckpointError  # corrupt, not UnsafeCheckpointError
    assert "not a checkpoint at all" in str(info.value) and "Download or export it again" in str(info.value)


def _short_list(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" ... ({len(keys)} in all)" if len(keys) > 5 else "")


@pytest.mark.parametrize(
    ("source", "arch", "kwargs"),
    [
        ("resnet18", "resnet34", {}),
        ("convnext_atto", "resnet18", {}),
        ("resnet18", "resnet18", {"num_classes": 10}),
    ],
    ids=["resnet18-as-resnet34", "convnext-as-resnet18", "other-head"],
)
def test_weights_for_another_architecture_list_the_keys(tmp_path, source, arch, kwargs):
    state = timm.create_model(source).state_dict()
    model = timm.create_model(arch, **kwargs)
    if not any(key.startswith("fc.") for key in state):
        model.reset_classifier(0)  # a checkpoint without a classifier is loaded as a headless backbone
    expected = model.state_dict()
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as info:
        explorer.load_backbone(path, arch=arch, device="cpu", **kwargs)
    message = str(info.value)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in read_state_dict(path) if k not in expected]  # in the file's order
    assert f"missing keys: {_short_list(missing) or 'none'};" in message
    assert f"unexpected keys: {_short_list(unexpected) or 'none'};" in message
    if kwargs:
        assert "fc.weight (1000, 512) vs (10, 512)" in message
    assert "Check that arch= names the architecture" in message


def test_wrong_arch_name_lists_close_names(resnet18_files):
    path = resnet18_files[".safetensors"]
    with pytest.raises(
        UnknownBackboneError, match=r'Unknown model "resnet-18"\. Closest timm names: resnet18, '
    ):
        explorer.load_backbone(path, arch="resnet-18", device="cpu")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_bare_weights_without_arch_name_arch(resnet18_files, suffix):
    path = resnet18_files[suffix]
    with pytest.raises(CheckpointError, match=re.escape(f'load_backbone("{path}", arch="resnet18")')):
        explorer.load_backbone(path, device="cpu")


@st.composite
def _damaged_checkpoint(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from(sorted(CHECKPOINT_SEEDS)))
    return suffix, draw(damaged({suffix: CHECKPOINT_SEEDS[suffix]}))


def _checkpoint_seeds() -> dict[str, bytes]:
    state = {
        "conv.weight": torch.randn(4, 3, 3, 3),
        "bn.running_mean": torch.zeros(4),
        "count": torch.tensor(3),
    }
    zipped, legacy = io.BytesIO(), io.BytesIO()
    torch.save(state, zipped)
    torch.save({"state_dict": state}, legacy, _use_new_zipfile_serialization=False)
    from safetensors.torch import save

    return {".pth": zipped.getvalue(), ".pt": legacy.getvalue(), ".safetensors": save(state)}


CHECKPOINT_SEEDS = _checkpoint_seeds()


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch warns about unusual pickle protocols
@settings(max_examples=300, deadline=None)
@given(case=_damaged_checkpoint())
def test_property_damaged_checkpoints_raise_only_checkpoint_errors(case):
    # found AssertionError, struct.error, TypeError, AttributeError and KeyError escaping torch.load before the fix
    suffix, data = case
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / f"model{suffix}"
        path.write_bytes(data)
        try:
            state = read_state_dict(path)
        except CheckpointError as err:
            assert "safetensors" in str(err) or "again" in str(err), str(err)
            return
        assert all(isinstance(tensor, torch.Tensor) for tensor in state.values())


# -- specs and the hub ---------------------------------------------------------------------------------------------


def test_unknown_model_lists_the_closest_names():
    with pytest.raises(UnknownBackboneError) as info:
        explorer.load_backbone("convnxt_tiny", pretrained=False)
    message = str(info.value)
    assert "Closest timm names: convnext_tiny, convnextv2_tiny" in message
    assert "explorer.list_backbones()" in message and '"hf:<repo or folder>"' in message


@pytest.fixture(scope="module")
def resnet_folder(tmp_path_factory):
    """A tiny transformers ResNet backbone saved with save_pretrained: stages stem, stage1, stage2."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny-resnet")
    config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], out_features=["stage1", "stage2"]
    )
    transformers.ResNetBackbone(config).save_pretrained(folder)
    return folder


def test_transformers_folder_without_transformers_names_the_extra(monkeypatch, resnet_folder):
    # hf:<repo> is in test_hf_backbones.py; a save_pretrained folder given as a plain path goes another way
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "explorer\[hf\]"'):
        explorer.load_backbone(str(resnet_folder))


@pytest.fixture
def loopback_only(monkeypatch):
    """Every connection and name lookup must stay on this machine; anything else is recorded and refused."""
    elsewhere = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            elsewhere.append(address)
            raise OSError(f"test refused a connection to {address}")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", "::1", "localhost"):
            elsewhere.append(host)
            raise socket.gaierror(f"test refused a name lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    assert elsewhere == []


def _point_hub_at(monkeypatch, endpoint: str) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )


def _loopback_server(mode: str) -> tuple[int, list[socket.socket]]:
    """A port on 127.0.0.1 that refuses, accepts and never answers, or never completes a connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    if mode == "refused":
        server.close()
        return port, []
    server.listen(0 if mode == "black-hole" else 8)
    held = [server]
    if mode == "black-hole":  # fill the backlog: further connections hang in SYN-SENT
        for _ in range(3):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            held.append(client)
        time.sleep(0.1)
    return port, held


HUB_SPECS = ["resnet18", "hf-hub:timm/resnet18.a1_in1k", "hf:microsoft/resnet-50"]


@pytest.mark.timeout(120)  # a hang guard: each spec is refused within the hub client's own short timeouts
@pytest.mark.parametrize("mode", ["offline", "refused", "silent", "black-hole"])
def test_pretrained_with_the_hub_unreachable_fails_fast(monkeypatch, loopback_only, mode):
    pytest.importorskip("transformers")
    held = []
    if mode != "offline":
        port, held = _loopback_server(mode)
        _point_hub_at(monkeypatch, f"http://127.0.0.1:{port}")
    _hub._answers.cache_clear()
    try:
        for spec in HUB_SPECS:
            with pytest.raises(WeightsUnavailableError) as info:
                explorer.load_backbone(spec, pretrained=True, device="cpu")
            message = str(info.value)
            why = (
                "HF_HUB_OFFLINE is set"
                if mode == "offline"
                else f"the hub (http://127.0.0.1:{port}) does not answer"
            )
            assert why in message, message
            assert '"default"' in message and "local checkpoint" in message and "pretrained=False" in message
        if mode == "silent":  # the library asked the configured endpoint, not another
            held[0].settimeout(1.0)
            held[0].accept()[0].close()
    finally:
        _hub._answers.cache_clear()
        for sock in held:
            sock.close()


# -- stage selection (the rules themselves are in test_stages.py) ---------------------------------------------------


def test_out_of_range_index_at_load_gives_the_transformers_message(resnet_folder):
    transformers = pytest.importorskip("transformers")
    with pytest.raises(ValueError) as theirs:
        transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], out_indices=[9])
    with pytest.raises(ValueError) as ours:
        explorer.load_backbone(f"hf:{resnet_folder}", out_indices=[9], device="cpu")
    assert str(ours.value) == str(theirs.value)
    names = "['act1', 'layer1', 'layer2', 'layer3', 'layer4']"
    with pytest.raises(ValueError, match=re.escape(f"valid indices for stage_names {names}, got [9]")):
        explorer.load_backbone("resnet18", out_indices=[9], pretrained=False, device="cpu")


def test_refused_reselection_keeps_the_previous_selection():
    bb = explorer.load_backbone("resnet18", out_indices=[1, 3], pretrained=False, device="cpu")
    x = torch.randn(1, 3, 32, 32)
    for refused in ([1, 1], [3, 1], [9], [-1, 4], (2, 2)):
        with pytest.raises(ValueError, match="out_indices must"):
            bb.out_indices = refused
        assert (
            bb.out_indices == [1, 3] and bb.out_features == ["layer1", "layer3"] and bb.channels == [64, 256]
        )
    assert list(bb(x)) == ["layer1", "layer3"]


def test_refused_reselection_on_a_task_model_backbone_keeps_the_previous_selection(tmp_path):
    transformers = pytest.importorskip("transformers")
    backbone = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], out_features=["stage2", "stage3"]
    )
    config = transformers.UperNetConfig(
        backbone_config=backbone, hidden_size=8, use_auxiliary_head=False, pool_scales=[1, 2]
    )
    transformers.UperNetForSemanticSegmentation(config).save_pretrained(tmp_path)
    bb = explorer.load_backbone(f"hf:{tmp_path}", pretrained=False, out_features=["stage2"], device="cpu")
    with pytest.raises(ValueError, match="outputs .* only"):
        bb.out_indices = [0]
    assert bb.out_features == ["stage2"]
    assert list(bb(torch.randn(1, 3, 64, 64))) == ["stage2"]


# -- resources: hooks, out of memory, freeing models ------------------------------------------------------------


def _hooks_left(model: nn.Module) -> dict[str, int]:
    """Every non-empty hook dictionary of every module, and torch's global module hooks."""
    left = {
        f"{name or 'model'}.{attr}": len(value)
        for name, module in model.named_modules()
        for attr, value in vars(module).items()
        if "hooks" in attr and isinstance(value, dict) and value
    }
    from torch.nn.modules import module as torch_module

    for attr in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_forward_hooks_with_kwargs"):
        if getattr(torch_module, attr, None):
            left[attr] = len(getattr(torch_module, attr))
    return left


class _Flaky(nn.Module):
    """Fails on some calls: an error, or the user pressing stop (KeyboardInterrupt)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls % 7 == 0:
            raise RuntimeError("flaky layer")
        if self.calls % 31 == 0:
            raise KeyboardInterrupt
        return x * 2


class _FiveD(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, None]


@pytest.fixture
def one_thread():
    """Tiny tensors: with two threads, thread hand-offs dominate (10x slower on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_no_hook_is_left_after_a_thousand_captures(one_thread):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), _Flaky(), nn.Conv2d(4, 4, 3, padding=1), _FiveD()
    ).eval()
    stages = [Stage("conv", 0, 4, 1, "0"), Stage("flaky", 1, 4, 1, "1"), Stage("conv2", 2, 4, 1, "2")]
    bb = Backbone(
        model,
        stages,
        spec="tiny",
        weights="random",
        preprocess=TimmPreprocess({"input_size": (3, 8, 8)}),
        device="cpu",
        out_indices=[0, 2],
    )
    x = torch.randn(2, 3, 8, 8)
    outcomes: dict[str, int] = {}

    def run(case: int) -> None:
        if case == 0:  # through the flaky layer, stopping after "2"
            with capture(model, ["0", "2"]) as maps:
                model(x)
            assert maps.shapes == {"0": (2, 4, 8, 8), "2": (2, 4, 8, 8)}
        elif case == 1:  # early stop before the flaky layer: it never runs
            calls = model[1].calls
            with capture(model, ["0"]) as maps:
                model(x)
            assert model[1].calls == calls
        elif case == 2:
            with capture(model, ["2", "2.weight"]):
                model(x)
        elif case == 3:  # a 5-D output cannot become NCHW
            with capture(model, ["3"]):
                model(x)
        elif case == 4:  # the block fails before the forward, or never runs it
            with capture(model, ["0"]):
                if model[1].calls % 2:
                    raise ValueError("user code")
        else:
            assert list(bb(x)) == ["conv", "conv2"]

    for i in range(1000):
        try:
            with torch.no_grad():
                run(i % 6)
            outcome = "ok"
        except (RuntimeError, ValueError, KeyboardInterrupt) as err:
            outcome = type(err).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert _hooks_left(model) == {}, (i, _hooks_left(model))
    for kind in (
        "ok",
        "RuntimeError",
        "KeyboardInterrupt",
        "LayerNotFoundError",
        "CaptureError",
        "ValueError",
    ):
        assert outcomes.get(kind, 0) > 0, outcomes
    assert issubclass(LayerNotFoundError, ValueError) and issubclass(CaptureError, RuntimeError)
    with capture(model, ["0"]) as maps:  # and captures are still right
        model(x)
    assert torch.equal(maps["0"], model[0](x).detach())


def test_out_of_memory_midway_surfaces_and_leaves_nothing_behind():
    bb = explorer.load_backbone("resnet18", out_indices=[1, 3], pretrained=False, device="cpu")
    x = torch.randn(1, 3, 32, 32)
    expected = bb(x)
    before = _hooks_left(bb.model)

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    bb.model.layer2.forward = out_of_memory
    calls = [
        lambda: bb(x),
        lambda: bb.capture(x, layers=["layer2.0.conv1", "layer3"]),
        lambda: bb.extract(np.zeros((32, 32, 3), dtype=np.uint8)),
    ]
    for call in calls:
        with pytest.raises(torch.cuda.OutOfMemoryError, match="CUDA out of memory"):
            call()
        assert _hooks_left(bb.model) == before
    del bb.model.layer2.forward  # memory is back
    again = bb(x)
    assert list(again) == ["layer1", "layer3"]
    assert all(torch.equal(again[name], expected[name]) for name in expected)


def _failing_calls(bb) -> None:
    x = torch.randn(1, 3, 32, 32)
    bb(x)
    with pytest.raises(LayerNotFoundError):
        bb.capture(x, layers=["no.such.layer"])
    first = next(bb.model.children())  # runs in every forward pass (the model's own forward may not)
    handle = first.register_forward_pre_hook(lambda *args: (_ for _ in ()).throw(RuntimeError("midway")))
    try:
        with pytest.raises(RuntimeError, match="midway"):
            bb(x)
    finally:
        handle.remove()


@pytest.mark.parametrize("source", ["timm", "hf"])
def test_dropping_a_backbone_frees_its_model(source, resnet_folder):
    spec = "resnet18" if source == "timm" else f"hf:{resnet_folder}"
    bb = explorer.load_backbone(spec, out_indices=[1, 2], pretrained=False, device="cpu")
    _failing_calls(bb)
    model = weakref.ref(bb.model)
    gc.collect()
    gc.disable()
    try:
        del bb
        assert model() is None  # freed at once: no reference cycle through hooks or closures keeps it
    finally:
        gc.enable()
    gc.collect()
    assert model() is None


def test_switching_checkpoints_frees_the_previous_one(resnet18_files):
    bb = explorer.load_backbone(resnet18_files[".safetensors"], arch="resnet18", device="cpu")
    first = weakref.ref(bb.model)
    bb = explorer.load_backbone("resnet18", pretrained=False, device="cpu")
    gc.collect()
    assert first() is None and bb.weights == "random"


def test_folder_configs_run_no_code(tmp_path):
    # a timm folder's architecture is only looked up in timm's registry
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "config.json").write_text(json.dumps({"architecture": "os.system"}))
    with pytest.raises(UnknownBackboneError, match='Unknown model "os.system"'):
        explorer.load_backbone(tmp_path / "timm", pretrained=False, device="cpu")
    # a transformers folder with custom code (auto_map) is refused; its module is never imported
    pytest.importorskip("transformers")
    folder, marker = tmp_path / "custom", tmp_path / "code-ran"
    folder.mkdir()
    config = {"model_type": "custom", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_custom.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
    )
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        explorer.load_backbone(f"hf:{folder}", pretrained=False, device="cpu")
    assert not marker.exists()


# -- the panel: memory over many interactions, switching checkpoints, events during work ----------------------


def test_panel_switching_checkpoints_frees_the_previous_model():
    import weakref

    app = explorer.Explorer("resnet18", pretrained=False, out_indices=[1], device="cpu")
    first = weakref.ref(app.backbone.model)
    app.model = "resnet34"
    assert app.backbone.spec == "resnet34" and "Error" not in app.status
    gc.collect()
    assert first() is None


def test_panel_model_change_amid_rapid_events_shows_one_model():
    import asyncio

    app = explorer.Explorer(device="cpu", out_indices=[1])
    app.coalesce = True  # as in a kernel, where the front end sends the events

    async def storm():
        app.page_slider.value = 0
        app.cmap_box.value = "magma"
        app.pretrained_box.value = False  # a new checkpoint while display changes are pending
        app.model_box.value = "resnet18"
        app.cmap_box.value = "gray"
        await asyncio.sleep(0.5)

    asyncio.run(storm())
    assert app.backbone.spec == "resnet18" and app.backbone.weights == "random"
    assert set(app.feature_maps) <= set(app.backbone.stage_names)  # no stage of the old model left on show
    assert app.stage in app.backbone.stage_names and app.state.cmap == "gray"
    assert "resnet18" in app.status and "Error" not in app.status

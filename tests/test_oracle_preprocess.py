"""explorer's preprocessing against the oracles, on cases generated rather than picked by hand.

transformers: every image-processor class that transformers' auto mapping names for a model type with a backbone
(``AutoBackbone`` types, task models whose config holds a ``backbone_config``, image classifiers), built from its
default settings and from generated variations of the settings it has (normalisation off, each resample, crop
off, aspect kept, padding toggled, no resize); saved to a folder, read back by explorer, and compared for exact
equality of ``pixel_values`` with ``AutoImageProcessor`` called directly. A processor that cannot turn plain images
into one ``(3, H, W)`` map each (ViTMatte needs trimaps, TVP makes videos) must be refused with a
``CheckpointError``.

timm: every distinct ``(crop_mode, crop_pct, interpolation)`` combination of timm's pretrained configs, against
``create_transform(**resolve_data_config(...))``, exact equality.

PIL-backend classes run their defaults only: ``AutoImageProcessor`` reads their folders back with the torchvision
sibling, whose variations run already. Images: square, wide, tall, tiny and huge. To keep the run short each (case, variation) runs on two of the five
images, chosen by a deterministic rotation; the default settings of each class run on all five.
"""

from __future__ import annotations

import functools
import inspect
import zlib

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import explorer
from explorer.backbones.hf import HFPreprocess, _read_preprocess
from explorer.backbones.timm import TimmPreprocess
from explorer.errors import CheckpointError
from explorer.images import preprocess

transformers = pytest.importorskip("transformers")

IMAGES = {"square": (300, 300), "wide": (451, 300), "tall": (200, 641), "tiny": (5, 7), "huge": (1999, 1201)}


@functools.cache
def _image(name: str) -> Image.Image:
    width, height = IMAGES[name]
    rng = np.random.default_rng(width * 7919 + height)
    base = explorer.sample_images(["chelsea"])["chelsea"].resize((width, height), Image.Resampling.BILINEAR)
    noise = rng.integers(-20, 20, size=(height, width, 3))
    return Image.fromarray(np.clip(np.asarray(base, dtype=np.int64) + noise, 0, 255).astype(np.uint8))


def _images_for(case: str, every: bool) -> list[str]:
    names = sorted(IMAGES)
    if every:
        return names
    start = zlib.crc32(case.encode()) % len(names)
    return [names[start], names[(start + 2) % len(names)]]


# ------------------------------------------------------------------------------------------- transformers
def _model_types() -> set[str]:
    from transformers.models.auto import configuration_auto, modeling_auto

    types = set(modeling_auto.MODEL_FOR_BACKBONE_MAPPING_NAMES)
    types |= set(modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES)
    for model_type, name in configuration_auto.CONFIG_MAPPING_NAMES.items():
        config_class = getattr(transformers, name, None)
        try:
            if config_class is not None and "backbone_config" in inspect.getsource(config_class):
                types.add(model_type)
        except (OSError, TypeError):
            pass
    return types


def _processor_classes() -> list[str]:
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    found = set()
    for model_type in _model_types():
        found.update((IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type) or {}).values())
    return sorted(name for name in found if getattr(transformers, name, None) is not None)


def _build(cls, **settings):
    """``cls`` with ``settings``; TimmWrapper's processor needs a timm ``pretrained_cfg`` (resnet18's here)."""
    if cls.__name__ == "TimmWrapperImageProcessor":
        settings["pretrained_cfg"] = timm.models.get_pretrained_cfg("resnet18.a1_in1k").to_dict()
    return cls(**settings)


def _variations(cls) -> dict[str, dict]:
    """Settings to try on ``cls``, generated from the settings its defaults have."""
    default = _build(cls)
    has = {key: getattr(default, key, None) is not None for key in vars(default)}
    variations = {"default": {}, "no-normalize": {"do_normalize": False}, "no-resize": {"do_resize": False}}
    if has.get(
        "resample"
    ):  # every PIL filter; NEAREST runs as torchvision's NEAREST_EXACT in the fast classes
        variations.update({f"resample-{mode}": {"resample": mode} for mode in range(6)})
    if has.get("do_center_crop"):
        variations["crop-toggled"] = {"do_center_crop": not default.do_center_crop}
    if has.get("keep_aspect_ratio"):
        variations["keep-aspect"] = {"keep_aspect_ratio": True, "ensure_multiple_of": 32}
    if has.get("do_pad"):
        variations["pad-toggled"] = {"do_pad": not default.do_pad}
    if has.get("crop_pct"):
        variations["crop-pct"] = {"crop_pct": 0.5}
    return variations


HF_CASES = [
    (name, variation)
    for name in _processor_classes()
    # a folder saved by a PIL-backend class is read back with its torchvision sibling, as transformers picks
    # (the variations of that sibling run already): the PIL classes run their defaults only
    for variation in (["default"] if name.endswith("Pil") else _variations(getattr(transformers, name)))
]


def _oracle(processor, image: Image.Image) -> torch.Tensor | None:
    """The processor called directly: its pixel_values, or None where it refuses plain images."""
    boxes = inspect.signature(processor.preprocess).parameters.get("boxes")
    options = {}
    if boxes is not None and boxes.default is inspect.Parameter.empty:  # ViTPose: the whole image is the box
        options["boxes"] = [[[0.0, 0.0, float(image.width), float(image.height)]]]
    try:
        values = processor(images=[image], return_tensors="pt", **options)["pixel_values"]
    except (TypeError, ValueError, RuntimeError):
        return None
    if not isinstance(values, torch.Tensor) or values.ndim != 4 or values.shape[:2] != (1, 3):
        return None
    return values


@pytest.mark.parametrize(("name", "variation"), HF_CASES, ids=[f"{n}-{v}" for n, v in HF_CASES])
def test_pixel_values_are_the_image_processors_own(name, variation, tmp_path):
    cls = getattr(transformers, name)
    processor = _build(cls, **_variations(cls)[variation])
    processor.save_pretrained(tmp_path)
    if name == "TimmWrapperImageProcessor":  # read back through the model config beside it
        cfg = timm.models.get_pretrained_cfg("resnet18.a1_in1k").to_dict()
        transformers.TimmWrapperConfig(architecture="resnet18", pretrained_cfg=cfg).save_pretrained(tmp_path)
    oracle = transformers.AutoImageProcessor.from_pretrained(str(tmp_path))
    try:
        pre = _read_preprocess(transformers, tmp_path, None)
    except (
        CheckpointError
    ) as err:  # refused at load: the size guard, or the processor fails on a square image
        assert type(oracle).__name__ in str(err) or "MAX_INPUT_SIDE" in str(err) or "2048" in str(err), err
        # explorer runs the processor on a square and a wide blank image at load (its nominal size, whether sizes
        # vary): refused when the processor itself fails on one (Segformer's fast class cannot resize with BOX)
        fails = any(_oracle(oracle, Image.new("RGB", size)) is None for size in ((512, 512), (512, 256)))
        assert "2048" in str(err) or fails, err
        return
    for image_name in _images_for(f"{name}-{variation}", variation == "default"):
        if variation == "no-resize" and image_name == "huge":
            continue  # a 1999x1201 tensor per class adds seconds and nothing new
        image = _image(image_name)
        expected = _oracle(oracle, image)
        if expected is None:
            with pytest.raises(CheckpointError, match=type(oracle).__name__):
                preprocess([image], pre)
            continue
        got = preprocess([image], pre)
        assert got.shape == expected.shape, (image_name, got.shape, expected.shape)
        assert torch.equal(got, expected.float()), image_name
        assert pre.view(image).size == (got.shape[-1], got.shape[-2])


def test_the_view_is_the_processors_input_before_normalisation():
    """Normalising the view as the processor does gives its pixel_values back (ViT and DETR processors)."""
    image = _image("wide")
    for processor in (transformers.ViTImageProcessor(), transformers.DetrImageProcessor()):
        pre = HFPreprocess(processor)
        view = torch.from_numpy(np.asarray(pre.view(image))).permute(2, 0, 1).float()
        mean = torch.tensor(processor.image_mean).view(3, 1, 1)
        std = torch.tensor(processor.image_std).view(3, 1, 1)
        again = (view * processor.rescale_factor - mean) / std
        torch.testing.assert_close(again[None], pre.pixel_values([image]), rtol=0, atol=1e-5)


def test_aspect_keeping_processors_give_maps_the_real_size():
    pre = HFPreprocess(transformers.DetrImageProcessor())
    wide, tall = pre.pixel_values([_image("wide")]), pre.pixel_values([_image("tall")])
    assert wide.shape[-1] > 1.4 * wide.shape[-2] and tall.shape[-2] > 3 * tall.shape[-1]
    assert pre.view(_image("tall")).size == (tall.shape[-1], tall.shape[-2])


def test_maps_follow_the_real_size_and_a_scan_says_it_cannot(tiny_hf_folder, tmp_path):
    """A DETR processor keeps the aspect ratio: capture gives each image its own map size, overlays the same
    size; a scan (cells of one map size) refuses it up front instead of failing in its batches."""
    import shutil

    folder = tmp_path / "detr-processor"
    shutil.copytree(tiny_hf_folder, folder)
    transformers.DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(folder)
    bb = explorer.load_backbone(f"hf:{folder}", device="cpu")
    assert not bb.preprocess.fixed_size
    wide, tall = bb.extract([_image("wide")]), bb.extract([_image("tall")])
    stage = bb.out_features[0]
    assert wide[stage].shape[-1] > wide[stage].shape[-2] and tall[stage].shape[-2] > tall[stage].shape[-1]
    view = explorer.images.model_view(_image("tall"), bb.preprocess)
    assert view.size == tuple(bb.pixel_values([_image("tall")]).shape[-1:-3:-1])
    paths = [tmp_path / "wide.png", tmp_path / "tall.png"]
    _image("wide").save(paths[0])
    _image("tall").save(paths[1])
    with pytest.raises(explorer.DatasetError, match="its own size"):
        explorer.scan(bb, paths, cache=None)
    transformers.ViTImageProcessor().save_pretrained(folder)
    assert explorer.load_backbone(f"hf:{folder}", device="cpu").preprocess.fixed_size


def test_grid_overlay_and_cam_follow_each_images_real_size(tiny_hf_folder, tmp_path):
    """With DETR's processor (aspect kept), a wide and a tall image each get their own input size; the map, the
    grid's tiles, the overlay and CAM's maps are at that image's real size, and each equals what the same view
    computes from the processor's own pixel_values (no second preprocessing anywhere)."""
    import shutil

    folder = tmp_path / "detr-processor"
    shutil.copytree(tiny_hf_folder, folder)
    transformers.DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(folder)
    bb = explorer.load_backbone(f"hf:{folder}", device="cpu")
    stage = bb.out_features[-1]
    reduction = bb.reductions[-1]
    sizes = set()
    for name in ("wide", "tall"):
        image = _image(name)
        pixels = transformers.AutoImageProcessor.from_pretrained(str(folder))(
            images=[image], return_tensors="pt"
        )
        pixels = pixels["pixel_values"].float()
        height, width = pixels.shape[-2:]
        sizes.add((height, width))
        maps = bb.extract([image])
        torch.testing.assert_close(maps[stage], bb(pixels)[stage], rtol=0, atol=0)
        map_size = tuple(maps[stage].shape[-2:])
        assert map_size == (-(-height // reduction), -(-width // reduction)), (name, map_size, pixels.shape)
        _, layout = explorer.render_grid(maps[stage][0], channels="first:4", return_layout=True)
        assert layout.map_size == map_size
        view = explorer.images.model_view(image, bb.preprocess)
        assert view.size == (width, height)
        over = explorer.overlay(image, maps[stage][0, 0], preprocess=bb.preprocess)
        assert over.shape == (height, width, 3)
        assert np.array_equal(over, explorer.overlay(view, maps[stage][0, 0]))
        result = explorer.cam(bb, image, stage=stage)
        assert tuple(result.map.shape) == (height, width) and tuple(result.stage_map.shape) == map_size
        (again,) = explorer.cam(bb, pixels, stage=stage)  # pixel_values are a batch: a list of one
        torch.testing.assert_close(result.map, again.map, rtol=0, atol=0)
    assert len(sizes) == 2  # the two images really got different sizes


def test_a_processor_that_needs_more_than_images_is_refused(tmp_path):
    transformers.VitMatteImageProcessor().save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="VitMatteImageProcessor.*trimaps"):
        _read_preprocess(transformers, tmp_path, None)


def test_a_zero_std_or_huge_size_is_refused_naming_the_setting():
    with pytest.raises(CheckpointError, match="image_std"):
        HFPreprocess(transformers.ViTImageProcessor(image_std=[0.5, 0.0, 0.5]))
    with pytest.raises(CheckpointError, match="size"):
        HFPreprocess(transformers.ViTImageProcessor(size={"height": 9000, "width": 224}))


# ------------------------------------------------------------------------------------------------- timm
def _timm_families() -> dict[str, dict]:
    """One data config per distinct (crop_mode, crop_pct, interpolation) among timm's pretrained configs."""
    found: dict[tuple, dict] = {}
    for name in timm.list_pretrained():
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None:
            continue
        key = (cfg.crop_mode, cfg.crop_pct, cfg.interpolation)
        found.setdefault(key, {"name": name, **cfg.to_dict()})
    configs = {}
    for (mode, pct, interpolation), cfg in sorted(found.items(), key=str):
        height, width = cfg["input_size"][1:]
        # the crop rules are the subject: a small input keeps the huge image's run short, shape kept
        scale = 96 / max(height, width)
        configs[f"{cfg['name']}"] = {
            "input_size": (3, max(1, round(height * scale)), max(1, round(width * scale))),
            "interpolation": interpolation,
            "mean": cfg["mean"],
            "std": cfg["std"],
            "crop_pct": pct,
            "crop_mode": mode,
        }
    return configs


TIMM_CASES = _timm_families()


@pytest.mark.parametrize("name", sorted(TIMM_CASES))
def test_pixel_values_are_timms_own_transform(name):
    config = TIMM_CASES[name]
    oracle = timm.data.create_transform(**config)
    pre = TimmPreprocess(config)
    for image_name in _images_for(name, False):
        image = _image(image_name)
        got = preprocess([image], pre)
        expected = oracle(image)[None]
        assert got.shape == expected.shape, image_name
        assert torch.equal(got, expected), image_name
        assert pre.view(image).size == (got.shape[-1], got.shape[-2])


@pytest.mark.parametrize("mode", ["center", "squash", "border"])
def test_every_timm_crop_mode_on_every_image(mode):
    config = {"input_size": (3, 64, 80), "crop_pct": 0.9, "crop_mode": mode, "interpolation": "bilinear"}
    oracle, pre = timm.data.create_transform(**config), TimmPreprocess(config)
    for image_name in sorted(IMAGES):
        image = _image(image_name)
        assert torch.equal(pre.pixel_values([image]), oracle(image)[None]), image_name


def test_a_models_own_config_is_used():
    with torch.device("meta"):
        model = timm.create_model("resnet18.a1_in1k", pretrained=False)
    from explorer.backbones.timm import _preprocess

    expected = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    image = _image("wide")
    assert torch.equal(_preprocess(model).pixel_values([image]), expected(image)[None])


# every crop mode x crop_pct below, at and above 1 x every interpolation timm has, on a non-square input
TIMM_GRID = [
    (mode, pct, interpolation)
    for mode in ("center", "squash", "border")
    for pct in (0.5, 0.875, 1.0, 1.15)
    for interpolation in timm.data.transforms._str_to_torch_interpolation
]


@pytest.mark.parametrize(
    ("mode", "pct", "interpolation"), TIMM_GRID, ids=["-".join(map(str, c)) for c in TIMM_GRID]
)
def test_every_crop_mode_crop_pct_and_interpolation(mode, pct, interpolation):
    config = {"input_size": (3, 48, 64), "crop_pct": pct, "crop_mode": mode, "interpolation": interpolation}
    oracle, pre = timm.data.create_transform(**config), TimmPreprocess(config)
    for image_name in _images_for(f"{mode}{pct}{interpolation}", False):
        image = _image(image_name)
        got = pre.pixel_values([image])
        assert torch.equal(got, oracle(image)[None]), image_name
        assert pre.view(image).size == (64, 48)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("interpolation", "bogus"),  # timm's lookup fails
        ("interpolation", "random"),  # a training-time choice
        ("crop_mode", "bogus"),  # timm would read it as "center"
        ("crop_pct", 0),  # timm would use its default 0.875
        ("crop_pct", -1.0),
        ("crop_pct", float("nan")),
    ],
)
def test_a_setting_timm_cannot_honour_is_refused_not_replaced(setting, value):
    with pytest.raises(CheckpointError, match=f"{setting}="):
        TimmPreprocess({"input_size": (3, 32, 32), setting: value})

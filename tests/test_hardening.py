"""Hardening (issue 12): one test per reported case. No hang, no silent wrong answer, no unbounded memory, and
every user error an ``ExplorerError`` (also the matching builtin type) whose message names the fix.

Cases where a hang is possible run in a subprocess with a timeout. The generated families are in
``tests/test_hardening_property.py``.
"""

from __future__ import annotations

import io
import json
import math
import pathlib
import subprocess
import sys
import textwrap
import threading
import tracemalloc
import zipfile

import numpy as np
import pytest
import timm
import torch
from PIL import Image, PngImagePlugin
from safetensors.torch import save_file

import explorer
from explorer.backbones import _checkpoint, resolve_device
from explorer.backbones._checkpoint import find_weights_file, read_state_dict
from explorer.backbones.timm import TimmPreprocess
from explorer.cli import main
from explorer.errors import (
    CheckpointError,
    ExplorerError,
    ImageError,
    InvalidArgumentError,
    StageSelectionError,
    UnknownBackboneError,
)
from explorer.images import load_image
from explorer.render import overlay, render_grid, value_range

ARCH = "test_resnet"  # timm's own tiny test network: 0.5 M parameters, five stages


def _state() -> dict[str, torch.Tensor]:
    return timm.create_model(ARCH).state_dict()


def _run(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Python code in a fresh interpreter, killed after ``timeout`` seconds (a hang fails the test)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


# -- checkpoints: hangs and unbounded memory ----------------------------------------------------------------------


def _zip_bomb(path: pathlib.Path, zeros: int) -> None:
    """A real torch zip checkpoint plus one deflated member of ``zeros`` zero bytes (about 1/1000 on disk)."""
    buffer = io.BytesIO()
    torch.save(_state(), buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for name in source.namelist():
            out.writestr(name, source.read(name))
        with out.open(f"{source.namelist()[0].split('/')[0]}/data/zeros", "w") as member:
            block = bytes(1 << 20)
            for _ in range(zeros >> 20):
                member.write(block)


@pytest.fixture(scope="module")
def isolated(tmp_path_factory) -> dict:
    """The cases that could hang or exhaust memory, run in one fresh interpreter under a timeout: a dict that
    contains itself (as a file with arch=, as a timm folder's pytorch_model.bin, through the CLI) and a zip
    bomb (a 1 GiB zero tensor deflated to about 1 MB), with the number of torch.load calls each made."""
    root = tmp_path_factory.mktemp("isolated")
    loop: dict = {}
    loop["state_dict"] = loop
    torch.save(loop, root / "loop.pth")
    folder = root / "folder"
    folder.mkdir()
    torch.save(loop, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"architecture": ARCH}))
    _zip_bomb(root / "bomb.pth", 1 << 30)
    done = _run(
        f"""
        import contextlib, io, json, torch, explorer
        from explorer.cli import main
        results, loads = {{}}, []
        load = torch.load
        torch.load = lambda *args, **kwargs: loads.append(args) or load(*args, **kwargs)  # counts every read
        for name, spec, kwargs in (
            ("file", {str(root / "loop.pth")!r}, {{"arch": "{ARCH}"}}),
            ("folder", {str(folder)!r}, {{}}),
            ("bomb", {str(root / "bomb.pth")!r}, {{"arch": "{ARCH}"}}),
        ):
            loads.clear()
            try:
                explorer.load_backbone(spec, device="cpu", **kwargs)
                results[name] = "loaded"
            except explorer.CheckpointError as err:
                results[name] = str(err)
            results[name + "_loads"] = len(loads)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = main(["stages", {str(root / "loop.pth")!r}, "--arch", "{ARCH}", "--device", "cpu"])
        results["cli"] = [status, err.getvalue()]
        print(json.dumps(results))
        """,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    return {**json.loads(done.stdout.splitlines()[-1]), "bomb_bytes": (root / "bomb.pth").stat().st_size}


@pytest.mark.parametrize("placement", ["file", "folder"])
def test_a_dict_that_contains_itself_is_refused_not_a_hang(isolated, placement):
    assert "holds a dict that contains itself" in isolated[placement] and "save_file" in isolated[placement]


def test_a_dict_that_contains_itself_through_the_cli(isolated):
    status, err = isolated["cli"]
    assert status == 2 and err.count("\n") == 1 and "contains itself" in err


def test_a_zip_bomb_is_refused_before_it_inflates(isolated):
    assert isolated["bomb_bytes"] < 8 << 20
    message = isolated["bomb"]
    assert "would take 1,07" in message and "nothing was read" in message and "safetensors" in message
    assert isolated["bomb_loads"] == 0  # refused from the zip's directory: torch.load never ran on it
    assert isolated["file_loads"] == 1  # while the spy does see a file that is read


def test_without_a_model_the_documented_limit_applies(tmp_path, monkeypatch):
    path = tmp_path / "weights.pth"
    torch.save(_state(), path)
    monkeypatch.setattr(_checkpoint, "MAX_CHECKPOINT_BYTES", 100_000)
    with pytest.raises(CheckpointError, match="MAX_CHECKPOINT_BYTES"):
        read_state_dict(path)
    monkeypatch.undo()
    assert len(read_state_dict(path)) == len(_state())


# -- checkpoints: silently wrong answers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype", [torch.int8, torch.bool, torch.uint8, torch.int64, torch.complex64], ids=lambda d: str(d)[6:]
)
def test_weights_that_are_not_floats_are_refused(tmp_path, dtype):
    state = _state()
    state["conv1.0.weight"] = state["conv1.0.weight"].to(dtype)
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        explorer.load_backbone(path, arch=ARCH, device="cpu")
    assert f"conv1.0.weight ({dtype})" in str(info.value) and "model.float().state_dict()" in str(info.value)


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float64, torch.float8_e4m3fn], ids=lambda d: str(d)[6:]
)
def test_weights_of_another_float_type_are_cast_and_noted(tmp_path, dtype):
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in _state().items()}
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    bb = explorer.load_backbone(path, arch=ARCH, device="cpu")
    floats = sum(v.is_floating_point() for v in state.values())
    assert bb.weights == "file"
    assert bb.weights_note == f"{floats} tensor(s) cast from {str(dtype)[6:]} to float32"
    assert bb.dtype == torch.float32
    weight = bb.model.state_dict()["conv1.0.weight"]
    assert torch.equal(weight, state["conv1.0.weight"].float())


def test_nan_weights_are_warned_noted_and_counted_in_the_statistics(tmp_path):
    state = _state()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = math.nan
    state["fc.bias"][3] = math.inf
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    with pytest.warns(
        RuntimeWarning, match=r"2 weight tensor\(s\) hold NaN or inf: layer1.0.conv1.weight, fc"
    ):
        bb = explorer.load_backbone(path, arch=ARCH, out_features=["layer1"], device="cpu")
    assert "NaN or inf" in bb.weights_note and "magenta" in bb.weights_note
    maps = bb(torch.rand(1, 3, 64, 64))
    assert explorer.channel_stats(maps["layer1"]).summary()["nonfinite"] >= 1
    clean = explorer.load_backbone(ARCH, pretrained=False, device="cpu")
    assert clean.weights_note == ""


def test_a_folder_prefers_safetensors_to_pytorch_model_bin(tmp_path):
    safe, pickled = _state(), _state()
    assert not torch.equal(safe["conv1.0.weight"], pickled["conv1.0.weight"])
    save_file(safe, str(tmp_path / "weights.safetensors"))
    torch.save(pickled, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": ARCH}))
    assert find_weights_file(tmp_path).name == "weights.safetensors"
    bb = explorer.load_backbone(tmp_path, device="cpu")
    assert torch.equal(bb.model.state_dict()["conv1.0.weight"], safe["conv1.0.weight"])


def test_upper_case_and_wrong_suffixes_read_by_content(tmp_path):
    state = _state()
    upper = tmp_path / "MODEL.SAFETENSORS"
    save_file(state, str(upper))
    misnamed = tmp_path / "weights.pth"  # safetensors bytes under a pickle name
    save_file(state, str(misnamed))
    pickle_named_safetensors = tmp_path / "pickle.safetensors"
    torch.save(state, pickle_named_safetensors)
    for path in (upper, misnamed, pickle_named_safetensors):
        bb = explorer.load_backbone(path, arch=ARCH, device="cpu")
        assert torch.equal(bb.model.state_dict()["fc.weight"], state["fc.weight"]), path
    folder = tmp_path / "folder"
    folder.mkdir()
    upper.rename(folder / "MODEL.SAFETENSORS")
    assert find_weights_file(folder).name == "MODEL.SAFETENSORS"


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch calls quantized and nested tensors deprecated
@pytest.mark.parametrize("kind", ["meta", "sparse", "quantized", "nested"])
def test_tensors_without_plain_values_are_refused(tmp_path, kind):
    state = _state()
    weight = state["conv1.0.weight"]
    state["conv1.0.weight"] = {
        "meta": lambda: torch.empty_like(weight, device="meta"),
        "sparse": lambda: weight.to_sparse(),
        "quantized": lambda: torch.quantize_per_tensor(weight, 0.1, 0, torch.qint8),
        "nested": lambda: torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]),
    }[kind]()
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=f"holds {kind} tensors") as info:
        read_state_dict(path)
    assert "conv1.0.weight" in str(info.value) and "save_file" in str(info.value)


# -- configs ------------------------------------------------------------------------------------------------------


def _copy(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    target.mkdir()
    for item in source.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


def _edit_config(folder: pathlib.Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_malformed_transformers_config_is_a_checkpoint_error(tiny_hf_folder, tmp_path):
    folder = _copy(tiny_hf_folder, tmp_path / "bad")
    (folder / "config.json").write_text('{"model_type": "resnet", ')
    with pytest.raises(CheckpointError, match="config.json is not a usable transformers config") as info:
        explorer.load_backbone(f"hf:{folder}", device="cpu")
    assert "save_pretrained" in str(info.value)


def test_unknown_model_type_is_a_checkpoint_error(tiny_hf_folder, tmp_path):
    folder = _copy(tiny_hf_folder, tmp_path / "unknown")
    _edit_config(folder, model_type="no_such_model_type")
    with pytest.raises(CheckpointError, match="model_type that transformers knows"):
        explorer.load_backbone(f"hf:{folder}", device="cpu")


def test_config_field_of_the_wrong_type_is_a_checkpoint_error(tiny_hf_folder, tmp_path):
    folder = _copy(tiny_hf_folder, tmp_path / "field")
    _edit_config(folder, depths="xx")
    with pytest.raises(CheckpointError, match="depths"):
        explorer.load_backbone(f"hf:{folder}", device="cpu")


def test_config_whose_fields_disagree_fails_at_load_time(tiny_hf_folder, tmp_path):
    folder = _copy(tiny_hf_folder, tmp_path / "disagree")
    _edit_config(folder, hidden_sizes=[8])  # one size for two stages
    with pytest.raises(CheckpointError, match="first forward pass"):
        explorer.load_backbone(f"hf:{folder}", pretrained=False, device="cpu")


def test_architectures_naming_a_function_never_calls_it(transformers, monkeypatch, tmp_path):
    called = []
    monkeypatch.setattr(transformers, "pipeline", lambda *a, **k: called.append(a))
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    )
    transformers.ViTModel(config).save_pretrained(tmp_path)
    _edit_config(tmp_path, architectures=["pipeline"])
    with pytest.raises(UnknownBackboneError, match="contains no transformers backbone"):
        explorer.load_backbone(f"hf:{tmp_path}", device="cpu")
    assert called == []


@pytest.mark.parametrize(
    ("processor", "match"),
    [
        ({"size": 0}, "size=0"),
        ({"size": 8000}, "size=8000"),
        ({"size": {"shortest_edge": 8000}}, "size=8000"),
        ({"size": 224, "do_center_crop": True, "crop_size": 0}, "crop_size=0"),
        ("not json {", "not a valid JSON file"),
        ({"image_std": [0, 0, 0]}, "zero standard deviation"),
        ({"image_mean": [math.nan] * 3}, "image_mean=nan"),  # every pixel would be NaN (found by hypothesis)
        ({"image_std": [math.inf] * 3}, "image_std=inf"),
    ],
    ids=["size-0", "size-8000", "shortest-edge-8000", "crop-0", "not-json", "zero-std", "nan-mean", "inf-std"],
)
def test_broken_processor_configs_are_refused_at_load_time(tiny_hf_folder, tmp_path, processor, match):
    folder = _copy(tiny_hf_folder, tmp_path / "processor")
    text = processor if isinstance(processor, str) else json.dumps(processor)
    (folder / "preprocessor_config.json").write_text(text)
    with pytest.raises(CheckpointError, match=match) as info:
        explorer.load_backbone(f"hf:{folder}", device="cpu")
    assert "preprocessor_config.json gives no usable preprocessing" in str(info.value)
    assert "or delete it to use the defaults" in str(info.value)


def test_preprocess_checks_its_values():
    assert TimmPreprocess({"mean": 0.5}).pixel_values([Image.new("RGB", (8, 8))]).shape == (1, 3, 224, 224)
    for bad, match in (
        ({"input_size": (3, 0, 224)}, "input_size=0"),
        ({"input_size": (3, 224, 2049)}, "MAX_INPUT_SIDE"),
        ({"std": (1.0, 0.0, 1.0)}, "zero standard deviation"),
        ({"mean": (0.5,)}, "three numbers"),
        ({"std": (math.nan,) * 3}, "finite"),
        ({"interpolation": "cubic-ish"}, "interpolation='cubic-ish'"),
    ):
        with pytest.raises(CheckpointError, match=match):
            TimmPreprocess(bad)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (
            {"architecture": ARCH, "model_args": {"nonsense_kwarg": 1}},
            "does not build a model.*nonsense_kwarg",
        ),
        ({"architecture": ARCH, "model_args": [1, 2]}, "model_args is list"),
        ({"architecture": ARCH, "pretrained_cfg": "x"}, "pretrained_cfg is str"),
        ({"architecture": ARCH, "pretrained_cfg": {"mean": [0.5]}}, "no usable preprocessing"),
        ({"architecture": ARCH, "pretrained_cfg": {"input_size": [3, 0, 0]}}, "no usable preprocessing"),
        ({"architecture": 5}, "names no timm architecture"),
    ],
    ids=[
        "model-args-kwarg",
        "model-args-list",
        "pretrained-cfg-str",
        "one-mean",
        "input-0",
        "architecture-5",
    ],
)
def test_bad_timm_folder_configs_are_checkpoint_errors(tmp_path, config, match):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=match):
        explorer.load_backbone(tmp_path, pretrained=False, device="cpu")


def test_a_truncated_folder_config_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"architecture": "test_res')
    with pytest.raises(CheckpointError, match="config.json is not a JSON object"):
        explorer.load_backbone(tmp_path, device="cpu")


# -- stage selection ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("out_indices", "match"),
    [
        ([1.0], r"list of integers, got \[1.0\] \(with float\)"),
        ([None], r"list of integers, got \[None\] \(with NoneType\)"),
        ([-6], r"valid indices for stage_names .* got \[-6\]"),
    ],
)
def test_bad_out_indices_are_refused_and_the_selection_kept(out_indices, match):
    bb = explorer.load_backbone(ARCH, pretrained=False, out_indices=[1], device="cpu")
    assert len(bb.stage_names) == 5
    with pytest.raises(StageSelectionError, match=match):
        bb.out_indices = out_indices
    assert bb.out_indices == [1]
    with pytest.raises(ValueError, match=match):  # also the builtin a transformers user catches
        explorer.load_backbone(ARCH, pretrained=False, out_indices=out_indices, device="cpu")


def test_a_million_indices_give_a_short_message():
    bb = explorer.load_backbone(ARCH, pretrained=False, device="cpu")
    with pytest.raises(StageSelectionError) as info:
        bb.out_indices = list(range(10**6))
    assert len(str(info.value)) < 300 and "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ...]" in str(info.value)


# -- render_grid and friends ----------------------------------------------------------------------------------------


def test_every_size_argument_is_bounded_by_max_size():
    fmap = torch.randn(64, 14, 14)
    with pytest.raises(InvalidArgumentError, match="pad=2000 need 18008 px .* over max_size=2048"):
        render_grid(fmap, pad=2000)
    with pytest.raises(InvalidArgumentError, match="pad=6000; pass a whole number from 0 to 2048"):
        render_grid(fmap, pad=6000)
    grid = render_grid(fmap, pad=100)
    assert max(grid.shape[:2]) <= 2048
    assert max(render_grid(fmap, scale=10**9).shape[:2]) <= 2048  # computed, not counted down
    with pytest.raises(InvalidArgumentError, match="cols=0"):
        render_grid(fmap, cols=0)
    with pytest.raises(InvalidArgumentError, match="max_size=-1"):
        render_grid(fmap, max_size=-1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": True}, "channels=True is not a list of channel indices"),
        ({"channels": 2.0}, "channels=2.0 is not a list of channel indices"),
        ({"clip": "99"}, r"clip='99' \(str\); pass a percentile"),
        ({"norm": "global", "vrange": (-math.inf, math.inf)}, "two finite numbers"),
        ({"norm": "symmetric", "vrange": (math.nan, 1.0)}, "two finite numbers"),
        ({"pad": 2.5}, r"pad=2.5 \(float\)"),
        ({"background": "red"}, "RGB triple"),
    ],
    ids=[
        "channels-true",
        "channels-float",
        "clip-str",
        "vrange-inf",
        "vrange-nan",
        "pad-float",
        "background",
    ],
)
def test_render_arguments_of_the_wrong_kind_are_refused(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match) as info:
        render_grid(torch.randn(8, 7, 7), **kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


def test_overlay_and_value_range_check_their_numbers():
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(InvalidArgumentError, match="alpha"):
        overlay(image, torch.rand(4, 4), alpha="half")
    with pytest.raises(InvalidArgumentError, match="two finite numbers"):
        overlay(image, torch.rand(4, 4), vrange=(0, math.inf))
    with pytest.raises(InvalidArgumentError, match="clip"):
        value_range([torch.rand(4, 4)], clip="99")


# -- images ------------------------------------------------------------------------------------------------------


def test_a_huge_file_is_refused_from_its_size_before_reading(tmp_path):
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as handle:
        handle.truncate(1_500_000_000)  # sparse: no disk used
    tracemalloc.start()
    with pytest.raises(ImageError, match="1,500,000,000 bytes, over the limit .*MAX_FILE_BYTES"):
        load_image(huge)
    big = tmp_path / "big.jpg"  # under the limit, not an image: refused from its first bytes
    with big.open("wb") as handle:
        handle.truncate(900_000_000)
    with pytest.raises(ImageError, match="not an image the explorer reads \\(900000000 bytes"):
        load_image(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20  # neither file was read whole


def test_a_png_with_an_oversized_text_chunk_loads_without_it():
    info = PngImagePlugin.PngInfo()
    info.add_itxt("comment", "x" * 3_000_000, zip=True)  # inflates past PIL's 1 MB MAX_TEXT_CHUNK
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), (200, 30, 40)).save(buffer, "PNG", pnginfo=info)
    image = load_image(buffer.getvalue())
    assert image.size == (20, 10) and image.getpixel((5, 5)) == (200, 30, 40)


def test_a_multi_page_tiff_is_named_as_a_tiff():
    pages = [Image.new("RGB", (10, 10), colour) for colour in ("red", "green", "blue")]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:])
    image = load_image(buffer.getvalue())
    assert image.info["frames"] == 3 and image.info["format"] == "TIFF"
    assert image.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.full((8, 8), 4000, np.int16), "no standard pixel range.*value_range=\\(0, 4095\\)"),
        (np.full((8, 8), 60000, np.int32), "no standard pixel range"),
        (np.full((8, 8, 3), np.nan), "NaN or infinite"),
        (np.full((8, 8, 3), 200.0), "value_range=\\(0, 255\\)"),
        (np.zeros((8, 8), np.complex64), "not an image"),
    ],
    ids=["int16-12-bit", "int32-16-bit", "nan", "float-0-255", "complex"],
)
def test_arrays_the_rule_cannot_read_are_refused(array, match):
    with pytest.raises(ImageError, match=match):
        load_image(array)


def test_a_normalised_imagenet_tensor_is_refused():
    image = torch.rand(3, 32, 32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    normalised = (image - mean[:, None, None]) / std[:, None, None]
    with pytest.raises(ImageError, match="looks normalised"):
        load_image(normalised)
    assert np.array_equal(
        np.asarray(load_image(image)), (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    )


def test_arrays_read_by_their_dtype_or_value_range():
    assert load_image(np.full((4, 4), 65535, np.uint16)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.eye(4, dtype=bool)).getpixel((1, 1)) == (255, 255, 255)
    twelve_bit = np.full((4, 4), 4095, np.int16)
    twelve_bit[0, 0] = 2048
    image = load_image(twelve_bit, value_range=(0, 4095))
    assert image.getpixel((1, 1)) == (255,) * 3 and image.getpixel((0, 0)) == (128,) * 3
    dark = np.full((4, 4), 0.8)  # a float is read in [0, 1]: 0.8 is light grey, whatever it meant
    assert load_image(dark).getpixel((0, 0)) == (204,) * 3
    assert load_image(np.full((4, 4), 200.0), value_range=(0, 255)).getpixel((0, 0)) == (200,) * 3
    with pytest.raises(ImageError, match="for arrays and tensors"):
        load_image(Image.new("RGB", (4, 4)), value_range=(0, 255))


# -- threads ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layers", [None, ["layer1.0.conv1", "layer2"]], ids=["stages", "hooked-layers"])
def test_two_threads_extracting_on_one_backbone_get_their_own_maps(layers):
    bb = explorer.load_backbone(ARCH, pretrained=False, out_indices=[1, 2], device="cpu")
    inputs = [torch.rand(1, 3, 64, 64) for _ in range(2)]

    def run(x):
        return bb(x) if layers is None else bb.capture(x, layers=layers)

    expected = [run(x) for x in inputs]
    wrong, errors = [], []

    def work(index: int) -> None:
        for _ in range(25):
            try:
                maps = run(inputs[index])
            except Exception as err:  # noqa: BLE001 - recorded and asserted below
                errors.append(repr(err))
                continue
            if not all(torch.equal(maps[name], expected[index][name]) for name in expected[index]):
                wrong.append(index)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and wrong == []
    assert all(not module._forward_hooks for module in bb.model.modules())


# -- the command line ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gradient_png(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("cli") / "gradient.png"
    Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (64, 1))).save(path)
    return path


def _cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("explorer: ") and err.count("\n") == 1, err
    return err


def test_cli_user_errors_are_one_line_and_status_2(capsys, tmp_path):
    assert "device='bogus' is not a device" in _cli_error(
        capsys, ["stages", ARCH, "--random", "--device", "bogus"]
    )
    err = _cli_error(capsys, ["stages", "default", "--arch", "resnet18", "--device", "cpu"])
    assert '"default" takes no model arguments (arch)' in err
    err = _cli_error(capsys, ["stages", ARCH, "--random", "--arch", "resnet18", "--device", "cpu"])
    assert "arch= names the timm architecture of a bare weights file" in err
    state = _state()
    state["conv1.0.weight"] = torch.empty_like(state["conv1.0.weight"], device="meta")
    torch.save(state, tmp_path / "meta.pth")
    err = _cli_error(capsys, ["stages", str(tmp_path / "meta.pth"), "--arch", ARCH, "--device", "cpu"])
    assert "meta tensors" in err
    folder = tmp_path / "five"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": 5}))
    assert "names no timm architecture" in _cli_error(capsys, ["stages", str(folder), "--device", "cpu"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cli_cuda_without_a_gpu(capsys):
    err = _cli_error(capsys, ["stages", ARCH, "--random", "--device", "cuda"])
    assert "this machine has no cuda device" in err and 'device="cpu"' in err
    with pytest.raises(InvalidArgumentError, match="no cuda device"):
        resolve_device("cuda:1")


def test_cli_writes_jpeg_for_jpg_and_refuses_other_suffixes(capsys, tmp_path, gradient_png):
    jpeg = tmp_path / "g.jpg"
    argv = ["render", ARCH, str(gradient_png), "--random", "--device", "cpu", "--channels", "first:4"]
    assert main([*argv, "--out", str(jpeg)]) == 0
    assert Image.open(jpeg).format == "JPEG"
    assert "name it .png, .jpg, .jpeg" in _cli_error(capsys, [*argv, "--out", str(tmp_path / "g.gif")])
    with pytest.raises(InvalidArgumentError, match="save_png\\(\\) writes PNG"):
        explorer.save_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "g.jpg")


def test_cli_real_bugs_keep_their_traceback(monkeypatch):
    import explorer.cli

    def broken(args):
        raise RuntimeError("a bug, not the user's mistake")

    monkeypatch.setattr(explorer.cli, "_backbone", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["stages", ARCH, "--random"])


def test_every_new_error_is_an_explorer_error():
    for cls in (InvalidArgumentError, StageSelectionError):
        assert issubclass(cls, ExplorerError) and issubclass(cls, ValueError)


@pytest.mark.parametrize("spec", ["", "   ", 5, None])
def test_an_empty_or_non_string_spec_loads_nothing(spec):
    with pytest.raises(InvalidArgumentError, match="empty spec names no model|pass a string or a path"):
        explorer.load_backbone(spec)

"""Hardening, second round (issue 19): plain built-in errors that used to escape, now ExplorerErrors."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import explorer
from explorer.backbones.timm import TimmPreprocess
from explorer.cli import main

NESTED = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def bb() -> explorer.Backbone:
    torch.manual_seed(0)
    bb = explorer.load_backbone("test_resnet", pretrained=False, device="cpu")
    bb.preprocess = TimmPreprocess({"input_size": (3, 32, 32), "crop_pct": 1.0})
    return bb


@pytest.mark.parametrize("name", ["config.json", "preprocessor_config.json"])
def test_deeply_nested_configs_are_checkpoint_errors(tiny_hf_folder, tmp_path, name):
    folder = tmp_path / "model"
    folder.mkdir()
    for path in Path(tiny_hf_folder).iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / name).write_text(
        NESTED if name == "config.json" else json.dumps({"size": 1})[:-1] + ', "x": ' + NESTED + "}"
    )
    with pytest.raises(explorer.ExplorerError):
        explorer.load_backbone(f"hf:{folder}", pretrained=False, device="cpu")


def test_unreadable_files_are_explorer_errors(bb, tmp_path, monkeypatch):
    image = tmp_path / "cat.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    real_open = Path.open

    def refused(self, *args, **kwargs):
        if self.name in ("cat.png", "model.safetensors"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refused)
    with pytest.raises(explorer.ImageError, match="permissions"):
        explorer.load_image(image)
    with pytest.raises(explorer.ImageError, match="permissions"):
        explorer.cam(bb, image, target=3)


def test_scan_top_takes_integers_only(bb, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(folder / f"{i}.png")
    scan = explorer.scan(bb, folder, k=1, num_workers=0, cache=None, progress=False)
    stage = scan.stages[0]
    for channel in (True, 1.0, "1", None, [1]):
        with pytest.raises(explorer.InvalidArgumentError):
            scan.top(stage, channel)
    for stage_name in (None, 3, ["x"]):
        with pytest.raises(explorer.LayerNotFoundError):
            scan.top(stage_name, 0)
    with pytest.raises(explorer.InvalidArgumentError, match="NUL"):
        explorer.scan(bb, folder, cache=tmp_path / "a\x00b", progress=False)
    with pytest.raises(explorer.InvalidArgumentError, match="folder a scan was saved in"):
        explorer.Scan.load(str(tmp_path / "a\x00b"))


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"method": ["gradcam"]}, explorer.CAMError),
        ({"stage": 123}, explorer.InvalidArgumentError),
        ({"target": "²"}, explorer.CAMError),
        ({"target": "layer4:¹"}, explorer.CAMError),
        ({"target": 2.5}, explorer.CAMError),
        ({"image": []}, explorer.InvalidArgumentError),
        ({"image": torch.zeros(0, 3, 32, 32)}, explorer.InvalidArgumentError),
        ({"image": torch.full((1, 3, 32, 32), float("nan"))}, explorer.InvalidArgumentError),
        ({"backbone": "test_resnet"}, explorer.InvalidArgumentError),
    ],
)
def test_cam_arguments_are_checked_first(bb, arguments, error):
    image = Image.fromarray(np.zeros((40, 40, 3), np.uint8))
    call = {"backbone": bb, "image": image, **arguments}
    with pytest.raises(error):
        explorer.cam(call.pop("backbone"), call.pop("image"), **call)


@pytest.mark.parametrize(
    "argv",
    [
        ["cam", "test_resnet", "IMAGE", "--random", "--device", "cpu", "--target", "²"],
        ["scan", "test_resnet", "FOLDER", "--random", "--device", "cpu", "--no-cache", "--k", "9" * 30],
        [
            "scan",
            "test_resnet",
            "FOLDER",
            "--random",
            "--no-cache",
            "--backend",
            "ray",
            "--address",
            "not an address",
        ],
        ["scan", "test_resnet", "FOLDER", "--random", "--no-cache", "--k", "nan"],
        ["stages", "a\x00b"],
    ],
)
def test_cli_mistakes_are_one_line(tmp_path, capsys, argv):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "cat.png")
    argv = [str(folder / "cat.png") if a == "IMAGE" else str(folder) if a == "FOLDER" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("explorer") and "Traceback" not in err, err

"""``explorer pca / similarity / attention``: PNG figures, one line and exit 2 on bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import explorer
from explorer.cli import main


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name, image in explorer.sample_images(["chelsea", "coffee"]).items():
        paths.append(str(folder / f"{name}.png"))
        image.resize((128, 128)).save(paths[-1])
    return paths


def _figure(path) -> np.ndarray:
    image = Image.open(path)
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def test_pca_writes_a_figure_of_both_images(photos, tmp_path, capsys):
    out = tmp_path / "pca.png"
    assert (
        main(
            [
                "pca",
                "resnet18",
                "--random",
                "--device",
                "cpu",
                *photos,
                "--stage",
                "layer3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "PCA of layer3, 2 images" in capsys.readouterr().out
    figure = _figure(out)
    assert figure.shape[1] == 1000 and figure.std() > 10  # 10 inches at 100 dpi, not a blank canvas


def test_similarity_and_attention_write_figures(photos, tmp_path, capsys):
    out = tmp_path / "sim.png"
    args = ["similarity", "resnet18", "--random", "--device", "cpu", *photos, "--stage", "layer3"]
    assert main([*args, "--query", "0,3,4", "--out", str(out)]) == 0
    assert "best matches [(" in capsys.readouterr().out
    assert _figure(out).std() > 10
    out = tmp_path / "att.png"
    args = ["attention", "vit_tiny_patch16_224", "--random", "--device", "cpu", photos[0], "--block", "-1"]
    assert main([*args, "--rollout", "--out", str(out)]) == 0
    assert "attention at blocks.11, prefix share per head" in capsys.readouterr().out
    assert _figure(out).std() > 10


@pytest.mark.parametrize(
    "argv, message",
    [
        (["similarity", "resnet18", "--random", "IMG", "--query", "0,99,0"], "query row=99"),
        (["similarity", "resnet18", "--random", "IMG", "--query", "a,b"], "three whole numbers"),
        (["attention", "resnet18", "--random", "IMG"], "explorer.similarity"),
        (["pca", "resnet18", "--random", "IMG", "--out", "x.jpg"], "name a .png file"),
        (["pca", "resnet18", "--random", "IMG", "--foreground", "some"], "foreground="),
    ],
)
def test_bad_input_is_one_line_and_exit_2(photos, tmp_path, capsys, argv, message):
    argv = [photos[0] if arg == "IMG" else arg for arg in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out.png")]
    assert main([*argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("explorer: ") and message in err and err.count("\n") == 1

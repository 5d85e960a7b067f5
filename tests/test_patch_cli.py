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


def test_figures_carry_titles_and_colour_bars():
    import torch

    from explorer.attention_maps import Attention
    from explorer.figures import attention_figure, patch_pca_figure, similarity_figure
    from explorer.hooks import FeatureMaps

    bb = explorer.load_backbone("resnet18", pretrained=False, device="cpu")
    maps = FeatureMaps({"x": torch.randn(2, 8, 5, 6)})
    pca_fig = patch_pca_figure(explorer.pca(bb, maps))
    labels = [axis.get_ylabel() for axis in pca_fig.axes if axis.get_ylabel()]
    assert [label.split(" ")[0] for label in labels] == ["PC1", "PC2", "PC3"]
    assert pca_fig._suptitle.get_text().startswith("PCA of x: first 3 components explain")
    sim_fig = similarity_figure(explorer.similarity(bb, maps, query=(1, 2, 3)))
    assert "cosine similarity" in [axis.get_ylabel() for axis in sim_fig.axes]
    assert "image 1, row 2, column 3" in sim_fig._suptitle.get_text()
    heads = torch.full((2, 2, 2), 0.2)
    att = Attention(
        heads, torch.tensor([0.2, 0.2]), torch.tensor([[0.2], [0.2]]), ("class",), None, "blocks.1"
    )
    att_fig = attention_figure(att)
    titles = [axis.get_title() for axis in att_fig.axes]
    assert titles[:2] == ["head 0: 20% to prefix", "head 1: 20% to prefix"]
    assert "class token's attention" in [axis.get_ylabel() for axis in att_fig.axes]

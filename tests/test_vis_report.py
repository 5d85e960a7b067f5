"""The scan report's visualize option: each channel's optimised image beside its exemplars (the library's own
picture, saved atomically, captions escaped), from ``Scan.save_html`` and from ``explorer scan --visualize``."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from test_scan import write_images

import explorer
from explorer import cli


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    first = write_images(folder, 3)[0]
    first.rename(first.with_name('a&b <c> "d"' + first.suffix))  # a name that must be escaped
    bb = explorer.load_backbone("test_resnet", pretrained=False, device="cpu")
    result = explorer.scan(
        bb, folder, out_features=["layer1"], k=2, num_workers=0, cache=None, progress=False
    )
    return bb, result


def _rows(page: str) -> dict[int, str]:
    return {
        int(c): row
        for c, row in re.findall(
            r'<div class="channel" id="c(\d+)">.*?<div class="row">(.*?)</div></div>', page
        )
    }


def test_each_channels_picture_stands_first_beside_its_exemplars(scanned, tmp_path):
    bb, result = scanned
    index = result.save_html(tmp_path / "report", visualize=True, vis_steps=3, vis_size=32)
    page = (index.parent / "layer1.html").read_text()
    rows = _rows(page)
    channels = result.channels("layer1")
    assert sorted(rows) == list(range(channels))
    for channel, row in rows.items():
        assert row.startswith(f'<figure class="vis"><img src="layer1/c{channel:04d}_vis.png"')
        assert row.count("<figure") == 3  # the picture, then the two exemplars
    for channel in (0, channels - 1):  # the library's own picture (a batch equals one run per channel)
        alone = explorer.visualize(bb, stage="layer1", channel=channel, steps=3, size=32, seed=0)
        saved = np.asarray(Image.open(index.parent / "layer1" / f"c{channel:04d}_vis.png").convert("RGB"))
        assert np.abs(saved.astype(int) - np.asarray(alone.image).astype(int)).max() <= 2
        shown = float(
            re.search(r"<figcaption>optimised · mean ([-\d.e+]+)</figcaption>", rows[channel]).group(1)
        )
        assert shown == pytest.approx(alone.activation, rel=1e-2, abs=1e-3)
    assert "Random weights: these pictures mean nothing" in page
    assert "a&amp;b &lt;c&gt; &quot;d&quot;" in page and '<c> "d"' not in page
    assert not list(index.parent.rglob("*.partial")) and not list(index.parent.rglob(".*tmp*"))


def test_without_the_option_no_picture_is_made(scanned, tmp_path):
    _, result = scanned
    index = result.save_html(tmp_path / "plain")
    assert 'class="vis"' not in (index.parent / "layer1.html").read_text()
    assert not list(index.parent.rglob("*_vis.png"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vis_method": "lucid"}, "vis_method='lucid'; choose one of: fft, maco"),
        ({"vis_steps": 0}, "vis_steps=0"),
        ({"visualize": "yes"}, "visualize='yes'; pass True or False"),
    ],
)
def test_bad_options_name_the_fix(scanned, tmp_path, kwargs, match):
    _, result = scanned
    with pytest.raises(explorer.InvalidArgumentError, match=re.escape(match)):
        result.save_html(tmp_path / "bad", **{"visualize": True, **kwargs})


def test_scan_command_visualize_flag(tmp_path, capsys):
    images = tmp_path / "images"
    write_images(images, 3)
    out = tmp_path / "report"
    argv = ["scan", "resnet18", str(images), "--random", "--stage", "layer1", "--k", "2", "--out", str(out)]
    extra = ["--workers", "0", "--no-cache", "--visualize", "--vis-steps", "2", "--vis-size", "32"]
    assert cli.main([*argv, *extra]) == 0
    page = (out / "layer1.html").read_text()
    assert page.count('<figure class="vis">') == 64 and len(list((out / "layer1").glob("*_vis.png"))) == 64
    assert cli.main([*argv, *extra[:-4], "--vis-steps", "0"]) == 2
    assert "vis_steps=0" in capsys.readouterr().err

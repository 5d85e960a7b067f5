"""The panel's Dataset tab, headless: scan a folder in the tab's thread, follow the channel, open a saved scan."""

from __future__ import annotations

import copy
import io

import numpy as np
from PIL import Image
from test_scan import write_images

import explorer


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_dataset_tab_scans_follows_the_channel_and_reports_errors(tmp_path, monkeypatch):
    images = tmp_path / "images"
    write_images(images, 6)
    app = explorer.Explorer("resnet18", pretrained=False, device="cpu", out_indices=[1], display=False)
    view = app.views["Dataset"]
    monkeypatch.setattr(type(view), "cache", str(tmp_path / "cache"))
    app.tabs.selected_index = list(app.views).index("Dataset")
    assert app.stage == "layer1"
    app.channel_box.value = 5

    view.source_box.value = str(images)
    view.scan_button.click()
    assert app.controller.wait(600)
    assert "layer1 · channel 5: top 6 of 6 images" in view.scan_status.value
    assert (view.scan_progress.value, view.scan_progress.max) == (6, 6)
    expected = explorer.scan(
        copy.deepcopy(app.backbone),
        images,
        out_features=["layer1"],
        k=9,
        num_workers=0,
        cache=None,
        progress=False,
    )
    want = expected.crops("layer1", 5)
    assert len(view.crops_box.children) == 6  # fewer images than k
    for image, crop in zip(view.crop_images, want):
        assert np.array_equal(_pixels(image.value), np.asarray(crop))
    assert view.crop_captions[0].value.count(f"{expected.top('layer1', 5)[0].value:.3g}") == 1

    app.channel_box.value = 7  # the channel chosen in the Grid or Statistics tab
    app.refresh()
    assert app.controller.wait(600)
    for image, crop in zip(view.crop_images, expected.crops("layer1", 7)):
        assert np.array_equal(_pixels(image.value), np.asarray(crop))
    assert "channel 7" in view.scan_status.value

    saved = expected.save(tmp_path / "saved")  # a finished scan opens as it is
    view.source_box.value = str(saved)
    view.scan_button.click()
    assert app.controller.wait(600)
    assert view.scan.key is None and len(view.scan) == 6
    for image, crop in zip(view.crop_images, expected.crops("layer1", 7)):
        assert np.array_equal(_pixels(image.value), np.asarray(crop))

    view.source_box.value = str(tmp_path / "missing")
    view.scan_button.click()
    assert app.controller.wait(600)
    assert "No folder at" in view.scan_status.value and "No folder at" in app.status
    assert not view.scan_button.disabled
    app.channel_box.value = 2  # the panel keeps working
    app.tabs.selected_index = 0
    assert app.channel == 2 and app.grid_png[:4] == b"\x89PNG"

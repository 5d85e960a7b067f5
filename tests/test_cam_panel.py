"""The panel's CAM tab, headless: the pretrained default explains the cat, targets come from the top-5, a new
stage or method redraws, colours only re-overlay, and errors reach the status line while the map stays."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

import explorer


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(float)


def test_cam_tab_explains_the_image_picks_targets_and_reports_errors():
    app = explorer.Explorer(device="cpu", out_indices=[3, 4], display=False)  # blocks.4, blocks.6
    view = app.views["CAM"]
    assert list(app.views).index("CAM") == list(app.views).index("Grid") + 4
    assert view.result is None  # nothing runs until the tab is on show
    app.stage = "blocks.6"
    app.tab = "CAM"
    assert app.controller.wait(300)
    result = view.result
    expected = explorer.cam(app.backbone, app.images[0], stage="blocks.6")
    assert result.stage == "blocks.6" and result.target == expected.target
    assert np.allclose(result.map.numpy(), expected.map.numpy(), atol=1e-5)
    assert 281 <= result.target <= 285  # chelsea is explained as a domestic cat
    labels = [label for label, _ in view.target_box.options]
    assert labels[0] == "top prediction" and len(labels) == 6 and "tiger cat" in labels[1]
    assert "explains <b>tiger cat" in view.cam_status.value
    shown = view.cam_image.value
    assert shown[:4] == b"\x89PNG" and bytes(shown) == app.png  # what app.code() reproduces
    assert view.target_box.value is None and view.target_box.label == "top prediction"  # never blank

    view.target_box.value = view.target_box.options[3][1]  # the third prediction
    assert app.controller.wait(300)
    assert view.result.target == view.target_box.value == app.cam_target and view.cam_image.value != shown
    chosen = app.cam_target

    app.cam_method = "eigencam"  # a choice set from code shows in its box
    assert view.result.method == "eigencam" and view.method_box.value == "eigencam"
    app.layers = ["blocks.5"]  # a stage added: the chosen target stays, in its box
    assert app.cam_target == chosen and view.target_box.value == chosen and view.result.target == chosen
    app.layers = []
    app.stage = "blocks.6"

    explained, forward = view.result, app.controller.forward_passes
    app.cmap = "gray"  # colours only: the same CAM, drawn again, and no forward pass for the panel
    assert app.controller.wait(300)
    assert view.result is explained and app.controller.forward_passes == forward
    want = explorer.overlay(
        app.images[0], explained.map, alpha=0.5, cmap="gray", preprocess=app.backbone.preprocess
    )
    assert np.array_equal(_pixels(view.cam_image.value), want)  # lossless

    app.stage = "blocks.4"
    assert app.controller.wait(300)
    assert view.result.stage == "blocks.4" and view.result.method == "eigencam"


def test_cam_tab_on_a_headless_backbone_reports_what_works_and_keeps_the_map(tiny_hf_folder):
    app = explorer.Explorer(f"hf:{tiny_hf_folder}", pretrained=True, device="cpu", display=False)
    view = app.views["CAM"]
    app.tab = "CAM"
    assert app.controller.wait(300)
    assert view.result.top5 == [] and "total activation" in view.result.target_name
    assert [label for label, _ in view.target_box.options] == [view.result.target_name]
    drawn = view.cam_image.value
    assert drawn
    view.method_box.value = "finercam"  # compares classes: needs a head
    assert app.controller.wait(300)
    assert "Error" in view.cam_status.value and "Error" in app.status
    assert view.cam_image.value == drawn  # the map on show stays
    view.method_box.value = "eigencam"
    assert app.controller.wait(300)
    assert "explains" in view.cam_status.value and view.result.method == "eigencam"

"""The Dataset tab's Concepts mode, headless: choices set from code show in the widgets (and the widgets set the
state), the fit reports its progress on the status line, the exemplars and the heatmap are the library's, browsing
refits nothing, a refused number keeps the panel working, and ``app.code()`` gives the concepts call. A
screenshot-like sheet of what the tab shows is written for a person to look at."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from test_scan import write_images

import explorer
from explorer import concept_discovery
from explorer.widgets.views.dataset import K

STAGE = "layer3"  # resnet18 at 224: 256 channels, 14x14


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _text(markup: str) -> str:
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", " ", markup)).strip()


def _sheet(view, status: str) -> Image.Image:
    """What the tab shows, laid out as on screen: the mode and choices, the status, the quality line, the
    exemplars with their captions, and the heatmap on the image on show."""
    mode = view.concepts_mode
    crops = [
        Image.open(io.BytesIO(image.value)).convert("RGB").resize((112, 112)) for image in mode.crop_images
    ]
    heat = Image.open(io.BytesIO(mode.heatmap.value)).convert("RGB").resize((224, 224))
    lines = [
        f"[{view.mode_buttons.value}]  Concepts {mode.n_box.value}  Method {mode.method_box.value}  "
        f"Concept {mode.concept_box.value}  Images {view.source_box.value}",
        _text(status),
        _text(view.scan_status.value),
        _text(mode.quality.value),
    ]
    width = 10 + 118 * len(crops) + 234
    sheet = Image.new("RGB", (width, 20 + 14 * len(lines) + 250), "white")
    draw = ImageDraw.Draw(sheet)
    for row, line in enumerate(lines):
        draw.text((10, 8 + 14 * row), line[: width // 6], fill="black")
    top = 20 + 14 * len(lines)
    for i, (crop, caption) in enumerate(zip(crops, mode.crop_captions)):
        sheet.paste(crop, (10 + 118 * i, top))
        draw.text((10 + 118 * i, top + 116), _text(caption.value)[:18], fill="black")
    sheet.paste(heat, (10 + 118 * len(crops), top))
    return sheet


def test_concepts_mode_fits_in_the_engine_and_shows_the_librarys_concepts(tmp_path, monkeypatch):
    images = tmp_path / "images"
    write_images(images, 10)
    app = explorer.Explorer("resnet18", pretrained=False, device="cpu", out_indices=[3], display=False)
    view, mode = app.views["Dataset"], app.views["Dataset"].concepts_mode
    monkeypatch.setattr(type(view), "cache", str(tmp_path / "cache"))
    statuses = []
    app.controller.listeners.append(lambda frame: statuses.append(frame.status))
    app.tab = "Dataset"
    assert app.stage == STAGE and mode.widget.layout.display == "none"  # channels until asked

    app.concepts_n = 3  # set from code: the widget shows it
    assert mode.n_box.value == 3 and mode.method_box.value == "semi-nmf"
    view.mode_buttons.value = "concepts"  # the widgets set the state
    assert app.dataset_mode == "concepts"
    view.source_box.value = str(images)
    view.scan_button.click()
    assert app.controller.wait(600)
    assert mode.widget.layout.display == "" and view.crops_box.layout.display == "none"

    # the progress of both passes and the fit, as one count on the status line
    progress = [(s.html, s.progress) for s in statuses if s.kind == "busy" and s.html.startswith("Concepts")]
    assert progress[0] == ("Concepts of layer3: sampling locations, 0 of 10 images...", (0, 20))
    assert ("Concepts of layer3: fitting 3 semi-nmf concepts...", (10, 20)) in progress
    assert progress[-1] == (
        "Concepts of layer3: finding each concept's exemplars, 10 of 10 images...",
        (20, 20),
    )
    assert (view.scan_progress.value, view.scan_progress.max) == (20, 20)

    expected = explorer.concepts(
        copy.deepcopy(app.backbone),
        images,
        STAGE,
        3,
        "semi-nmf",
        k=K,
        cache=None,
        num_workers=0,
        progress=False,
    )
    shown = mode._shown.concepts
    assert torch.equal(shown.basis, expected.basis)
    assert "layer3 · concept 0 of 3: top 9 of 10 images" in view.scan_status.value
    assert f"relative reconstruction error {expected.relative_error:.3f}" in mode.quality.value
    for concept in (0, 2):
        app.concept = concept  # browsing: no refit, no second pass
        assert mode.concept_box.value == concept
        want = expected.crops(concept)
        assert len(mode.crops_box.children) == K
        for image, crop in zip(mode.crop_images, want):
            assert np.array_equal(_pixels(image.value), np.asarray(crop))
        best = expected.top(concept)[0]
        assert mode.crop_captions[0].value.count(f"{best.value:.3g}") == 1
        # the heatmap: the concept's code on the image on show, overlaid as the library does
        codes = expected.encode(app.feature_maps)[0, concept]
        painted = explorer.overlay(
            app.images[0], codes, alpha=app.alpha, cmap=app.cmap, preprocess=app.backbone.preprocess
        )
        assert np.array_equal(_pixels(mode.heatmap.value), painted)
    assert mode._shown.concepts is shown
    sheet = _sheet(view, app.controller.frame.status.html)
    sheet.save(tmp_path / "concepts-tab.png")
    print("screenshot:", tmp_path / "concepts-tab.png")

    # the code for the mode: the concepts call, which draws the same crop (the panel's random weights given)
    code = app.code()
    assert "con = explorer.concepts(bb, " in code and "n_concepts=3, method='semi-nmf', k=9" in code
    scope: dict = {}
    with monkeypatch.context() as patch:
        patch.setattr(explorer, "load_backbone", lambda *args, **kwargs: copy.deepcopy(app.backbone))
        exec(code, scope)
    assert scope["png"] == app.png == mode.crop_images[0].value

    # a number the library refuses: its message on the status line, the fit on show kept, the panel working
    app.concepts_n = 300
    assert "n_concepts=300, but layer3 has 256 channels" in app.status
    assert app.concepts_n == 3 and mode.n_box.value == 3 and mode._shown.concepts is shown
    app.concept = 9  # a concept past the last: the last is shown, and said
    assert "Concept 9 does not exist (3 concepts, 0-2): the last is shown" in view.scan_status.value
    view.mode_buttons.value = "channels"  # back to channels: the channels' exemplars, the concepts hidden
    assert mode.widget.layout.display == "none" and view.crops_box.layout.display == ""
    assert "layer3 · channel 0" in view.scan_status.value


@pytest.fixture
def refuse_fits(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("fitted")

    monkeypatch.setattr(concept_discovery, "fit_dictionary", refuse)


def test_concepts_mode_at_a_layer_says_to_choose_a_stage(refuse_fits, tmp_path):
    images = tmp_path / "images"
    write_images(images, 3)
    app = explorer.Explorer("resnet18", pretrained=False, device="cpu", out_indices=[1], display=False)
    app.layers = ["layer1.0.conv1"]
    app.stage = "layer1.0.conv1"
    app.tab = "Dataset"
    app.dataset_source = str(images)
    app.dataset_mode = "concepts"
    view = app.views["Dataset"]
    assert "layer1.0.conv1 is a layer; concepts are learnt at a stage" in view.scan_status.value
    assert view.concepts_mode.crops_box.children == ()

"""What the user sees, headless: the view's bytes and markup for the defects the held-out review found, and
``app.code()`` for every tab run as given in a fresh interpreter (uploads and in-memory images included)."""

from __future__ import annotations

import html
import io
import os
import re

import numpy as np
import pytest
from fresh_interpreter import pngs_of
from PIL import Image

import explorer
from explorer.widgets.views.charts import bar_chart


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _upload(app, name: str, content: bytes) -> None:
    message = {"event": "chunk", "id": name, "name": name, "size": len(content), "index": 0, "count": 1}
    app.upload._handle_custom_msg(message, [memoryview(content)])


pytestmark = pytest.mark.usefixtures("restored_panel")  # module-scoped panels, reset after each test


@pytest.fixture(scope="module")
def app():
    return explorer.Explorer("resnet18", pretrained=False, device="cpu", out_indices=[1, 2], display=False)


def test_the_histograms_top_label_fits_in_the_chart():
    svg = bar_chart([1090.0, 3.0], ["a", "b"], title="values")
    x, label = re.search(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="end">([^<]+)</text>', svg).groups()
    assert label == "1.09e+03" and float(x) - 6.6 * len(label) >= 0  # 11 px sans: no character cut


def test_the_zoomed_channel_is_marked_in_the_grid(app):
    grid = app.views["Grid"].grid_view
    grid._handle_custom_msg({"event": "click", "channel": 5, "row": 0, "col": 0}, [])
    assert app.channel == 5 and grid.marked == 5
    app.channel = 9
    assert grid.marked == 9 and 9 in grid.grid["channels"]


def test_statistics_rows_and_bars_pick_the_channel(app):
    app.tab = "Statistics"
    stats = app.views["Statistics"]
    assert (
        'data-channel="7"' in stats.stats_table.value
        and 'data-channel="7"' in stats.stats_figures.children[0].value
    )
    stats.stats_table._handle_custom_msg({"event": "click", "channel": 7}, [])
    assert app.channel == 7 and app.views["Grid"].grid_view.marked == 7
    assert '<tr class="selected" data-channel="7">' in stats.stats_table.value  # its row is marked
    stats.stats_figures.children[0]._handle_custom_msg({"event": "click", "channel": 3}, [])
    assert app.channel == 3
    app.tab = "Grid"


def test_compare_shows_only_the_boxes_of_its_mode(app):
    app.tab = "Compare"
    shown = lambda widget: widget.layout.display != "none"  # noqa: E731
    assert not shown(app.compare_image_box) and not shown(app.compare_model_box)
    assert not shown(app.views["Compare"].compare_grids)
    app.compare = "images"
    assert shown(app.compare_image_box) and not shown(app.compare_model_box)
    app.compare = "checkpoints"
    assert not shown(app.compare_image_box) and shown(app.compare_model_box)
    app.compare = "off"
    app.tab = "Grid"


def test_images_are_hidden_until_they_have_bytes():
    app = explorer.Explorer(
        "resnet18", pretrained=False, device="cpu", display=False, images=[np.zeros((8, 8, 3))]
    )
    assert app.view_image.value and app.view_image.layout.display != "none"
    cam = app.views["CAM"].cam_image
    assert cam.value == b"" and cam.layout.display == "none"  # not drawn yet: no broken-image icon


def test_choices_set_from_code_show_in_their_widgets(app):
    app.cam_method = "eigencam"
    assert app.views["CAM"].method_box.value == "eigencam"
    app.cam_method = "gradcam"
    app.dataset_source = "/nowhere"
    assert app.views["Dataset"].source_box.value == "/nowhere"
    app.dataset_source = ""
    app.page_size = 16
    app.page = 1
    assert app.page_slider.value == 2 and app.page_slider.min == 1  # pages count from 1 on screen
    assert app.views["Grid"].grid_view.title.startswith("layer1 · channels 16-31")
    app.page_size = 64


def test_the_code_on_show_follows_the_view(app):
    def on_show() -> str:
        return html.unescape(re.sub(r"<[^>]+>", "", app.code_view.value))

    app.code_button.click()
    assert on_show() == app.code() and "viridis" in on_show()
    app.cmap = "magma"  # the code on show is redrawn with the view, never stale
    assert on_show() == app.code() and "magma" in on_show() and "viridis" not in on_show()
    grid_code = on_show()
    app.tab = "CAM"  # and it is the code of the tab on show
    assert on_show() == app.code() and on_show() != grid_code and "cam" in on_show()
    app.tab = "Grid"
    app.cmap = "viridis"
    app.code_view.value = ""


@pytest.mark.parametrize("value", [[True], [1.0], [2, 1]])
def test_selections_the_library_refuses_are_refused_with_its_message(app, value):
    from explorer.stages import select_stages

    with pytest.raises(ValueError) as library:
        select_stages(app.backbone.stage_names, out_indices=value)
    app.out_indices = value
    assert app.out_indices == [1, 2] and str(library.value) in app.status


def test_code_for_every_tab_runs_as_given_in_a_fresh_interpreter(tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )
    pixels = np.random.default_rng(7).integers(0, 255, (80, 100, 3), dtype=np.uint8)
    app = explorer.Explorer(device="cpu", out_indices=[1, 2], images=[pixels], display=False)
    _upload(app, "../my photo (1).png", _png(pixels[::-1].copy()))  # an upload with an unsafe name
    assert app.image_index == 1
    images = str(tmp_path / "saved")
    cases = []
    app.cmap = "magma"
    cases.append(("Grid", app.code(images), app.png))
    app.tab = "CAM"
    cases.append(("CAM", app.code(images), app.png))
    app.tab = "Compare"
    app.compare = "images"
    app.compare_image_index = 0
    cases.append(("Compare", app.code(images), app.png))
    app.compare = "off"
    type(app.views["Dataset"]).cache = None
    app.tab = "Dataset"
    app.dataset_source = str(folder)
    cases.append(("Dataset", app.code(images), app.png))
    for tab, code, _ in cases:
        compile(code, tab, "exec")  # parses
        assert "saved by the panel as" in code or tab == "Dataset"
    saved = os.listdir(images)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+-[0-9a-f]{10}\.png", name) for name in saved) and len(saved) == 2
    pngs = pngs_of([code for _, code, _ in cases], tmp_path, timeout=900)
    for (tab, _, shown), png in zip(cases, pngs):
        assert png == shown, tab


def test_hidden_tabs_are_built_on_first_show():
    app = explorer.Explorer(
        "resnet18", pretrained=False, device="cpu", display=False, images=[np.zeros((32, 32, 3))]
    )
    assert set(app.views.built) == {"Grid"}
    assert not app.tabs.children[1].children  # a placeholder until the tab is shown
    app.tabs.selected_index = 1
    assert app.tab == "Statistics" and app.tabs.children[1] is app.views.built["Statistics"].widget
    assert app.views.built["Statistics"].stats_table.value  # the frame on show is drawn at once

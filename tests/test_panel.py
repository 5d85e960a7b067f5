"""The Explorer panel, driven headlessly as the front end would: set control values, assert on the views."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
import torch
from PIL import Image

import explorer


def _png_pixels(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def _upload(app, name: str, content: bytes) -> None:
    """What the browser sends when a file is chosen in the upload button: the file in chunks (static/upload.js)."""
    size = app.upload.chunk_bytes
    parts = [content[i : i + size] for i in range(0, len(content), size)] or [b""]
    for index, part in enumerate(parts):
        message = {"event": "chunk", "id": name, "name": name, "size": len(content), "index": index}
        app.upload._handle_custom_msg({**message, "count": len(parts)}, [memoryview(part)])


pytestmark = pytest.mark.usefixtures("restored_panel")  # module-scoped panels, reset after each test


@pytest.fixture(scope="module")
def app():
    return explorer.Explorer(device="cpu")


def test_opens_on_the_default_with_a_grid_drawn(app):
    assert app.backbone.spec == "default" and app.backbone.weights == "package"
    assert app.out_indices == [0] and app.stage == "blocks.0"
    assert "default" in app.status and "ImageNet weights" in app.status and "cpu" in app.status
    assert "updated in" in app.status
    pixels = _png_pixels(app.grid_png)
    assert pixels.shape[0] > 100 and pixels.std() > 10  # a real picture, not a blank
    assert app.feature_maps.shapes == {"blocks.0": (1, 16, 112, 112)}
    assert len(app.images) == len(explorer.images.SAMPLE_NAMES)


def test_display_only_changes_never_run_the_model(app):
    app.out_indices = [1]
    runs = app.forward_passes
    before = app.grid_png
    app.cmap_box.value = "magma"
    after_cmap = app.grid_png
    assert after_cmap != before
    app.norm_box.value = "stage"
    after_norm = app.grid_png
    assert after_norm != after_cmap
    app.page_size_box.value = 16
    app.page_slider.value = 2  # pages count from 1 on screen
    assert app.page == 1 and app.views["Grid"].grid_view.title.startswith("blocks.1 · channels 16-23")
    after_page = app.grid_png
    assert after_page != after_norm
    app.channel_box.value = 3
    app.mode_box.value = "top"
    app.top_by_box.value = "sparsity"
    assert app.grid_png != after_page
    app.tabs.selected_index = 1  # statistics
    app.tabs.selected_index = 2  # shapes
    app.tabs.selected_index = 0
    assert app.forward_passes == runs
    app.mode_box.value = "page"
    app.norm_box.value = "channel"
    app.cmap_box.value = "viridis"


def test_stage_change_runs_once_and_changes_the_grid(app):
    app.out_indices = [1]
    before, runs = app.grid_png, app.forward_passes
    app.stage_select.value = ("blocks.2",)  # as a click in the multi-select does
    assert app.out_indices == [2] and app.stage == "blocks.2"
    assert app.forward_passes == runs + 1
    assert app.grid_png != before
    app.out_indices = [1]  # back again: from the cache
    assert app.forward_passes == runs + 1


def test_scripted_out_features_and_layers(app):
    app.out_features = ["blocks.1", "blocks.4"]
    app.layers = ["blocks.1.0.conv_dw"]
    assert app.feature_maps.shapes == {
        "blocks.1": (1, 24, 56, 56),
        "blocks.4": (1, 112, 14, 14),
        "blocks.1.0.conv_dw": (1, 96, 56, 56),
    }
    app.stage = "blocks.1.0.conv_dw"
    assert app.stats.shape == (1, 96, 56, 56)
    app.layers = []
    app.out_indices = [1]


def test_corrupt_upload_reports_and_keeps_what_is_shown(app):
    before, images, runs = app.grid_png, len(app.images), app.forward_passes
    _upload(app, "broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
    assert "Error" in app.status and "broken.jpg" in app.status
    assert app.grid_png == before and len(app.images) == images and app.forward_passes == runs
    app.cmap_box.value = "gray"  # still working
    assert "updated in" in app.status and app.grid_png != before
    app.cmap_box.value = "viridis"


def test_good_upload_joins_the_gallery_and_runs_once(app):
    array = np.zeros((64, 96, 3), dtype=np.uint8)
    array[:, 48:] = 255
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    images, runs = len(app.images), app.forward_passes
    _upload(app, "half.png", buffer.getvalue())
    assert len(app.images) == images + 1
    assert app.state.image_index == images and app.image_box.value == images
    assert app.forward_passes == runs + 1
    assert "Error" not in app.status
    app.image_box.value = 0


def test_unknown_model_is_reported_and_the_panel_keeps_working(app):
    before = app.grid_png
    app.model_box.value = "resnet-18"
    assert "Error" in app.status and "resnet18" in app.status
    assert app.model == "default" and app.model_box.value == "resnet-18"  # the typed name stays, marked
    assert "explorer-refused" in app.model_box._dom_classes
    line = app.status_line.value  # what the user sees: the model line, and the error under it
    assert "ImageNet weights" in line and 'class="explorer-error"' in line and "explorer-status error" in line
    assert app.backbone.spec == "default" and app.grid_png == before
    app.norm_box.value = "stage"  # a valid change: the error goes, the model line stays
    assert "updated in" in app.status and "Error" not in app.status_line.value
    app.norm_box.value = "channel"


def test_wrong_stage_index_keeps_the_selection(app):
    app.out_indices = [1]
    app.out_indices = [9]
    assert "out_indices must be valid indices" in app.status
    assert app.out_indices == [1] and app.backbone.out_indices == [1]


def test_out_of_memory_is_caught(app, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    before = app.grid_png
    monkeypatch.setattr(type(app.backbone), "_forward", out_of_memory)  # the forward pass itself
    app.image_box.value = 3
    assert "Out of GPU memory" in app.status and "cpu" in app.status
    assert app.grid_png == before
    assert app.image_box.value == 0  # the selection goes back to what is shown
    monkeypatch.undo()
    app.image_box.value = 3
    assert "updated in" in app.status and app.grid_png != before
    app.image_box.value = 0


def test_random_weights_are_said_loud():
    app = explorer.Explorer("resnet18", pretrained=False, out_indices=[1, 2], device="cpu")
    assert "RANDOM WEIGHTS" in app.status
    assert app.feature_maps.shapes == {"layer1": (1, 64, 56, 56), "layer2": (1, 128, 28, 28)}
    app.model = "resnet-18"  # refused: the error joins the model line, which keeps its warning
    assert "RANDOM WEIGHTS" in app.status_line.value and 'class="explorer-error"' in app.status_line.value
    app.cmap = "magma"  # a valid choice: the error goes
    assert "RANDOM WEIGHTS" in app.status_line.value and "Error" not in app.status_line.value
    app.model = "convnext_tiny"
    assert app.backbone.spec == "convnext_tiny" and app.out_indices == [1, 2]
    assert app.feature_maps.shapes == {"stages.1": (1, 192, 28, 28), "stages.2": (1, 384, 14, 14)}


def test_compare_images_and_checkpoints():
    app = explorer.Explorer(device="cpu", out_indices=[1, 2])
    app.tabs.selected_index = 3
    app.compare_mode_box.value = "images"
    app.compare_image_box.value = 0  # the image against itself
    assert all(
        v["cosine"] == pytest.approx(1.0) and v["cka"] == pytest.approx(1.0) for v in app.similarity.values()
    )
    app.compare_image_box.value = 1  # chelsea against coffee
    assert set(app.similarity) == {"blocks.1", "blocks.2"}
    assert all(0.0 < v["cka"] < 0.99 for v in app.similarity.values())
    assert "debiased CKA" in app.compare_table.value
    for v in app.similarity.values():  # the unbiased estimate is shown beside the plain one, and lower
        assert (
            v["cka_debiased"] < v["cka"] and f"{round(v['cka_debiased'], 4):.4g}" in app.compare_table.value
        )
    difference = _png_pixels(app.compare_grids.children[2].data)
    assert difference.std() > 5  # a real difference grid, not a blank
    app.compare_mode_box.value = "checkpoints"  # the same checkpoint with random weights
    assert app.controller.loads == 2
    assert all(v["cka"] < 0.99 for v in app.similarity.values())
    runs = app.forward_passes
    app.cmap_box.value = "magma"
    assert app.forward_passes == runs


def test_redraws_make_no_new_widgets():
    from ipywidgets.widgets.widget import _instances  # every open widget of the kernel

    app = explorer.Explorer(device="cpu", out_indices=[1])
    app.compare_mode_box.value = "images"
    for tab in range(4):
        app.tabs.selected_index = tab
    before = len(_instances)
    for i in range(12):
        app.tabs.selected_index = i % 4
        app.channel_box.value = i % 8
        app.sort_box.value = ("mean", "std", "channel")[i % 3]
    assert len(_instances) == before


def test_precision_needs_a_gpu_and_bad_colour_maps_are_refused(app):
    app.precision_box.value = "float16"  # the fixture's model runs on the CPU, GPU or not
    assert "needs a GPU" in app.status and app.precision == "float32"
    app.cmap_box.value = "viridiss"
    assert "Unknown colour map" in app.status and "viridis" in app.status and app.cmap == "viridis"


def test_shapes_and_statistics_views(app):
    app.out_indices = [1, 3]
    app.tabs.selected_index = 2
    assert "(1, 24, 56, 56)" in app.shapes_table.value and "(1, 112, 14, 14)" in app.shapes_table.value
    assert "(1, 40, 28, 28)" not in app.shapes_table.value  # only the selected stages
    app.tabs.selected_index = 1
    assert "channels" in app.stats_table.value and "Dead channels" in app.dead_table.value
    app.tabs.selected_index = 0


def test_rapid_events_end_on_the_latest_value_in_one_draw():
    app = explorer.Explorer(device="cpu", out_indices=[3])  # 112 channels: 7 pages of 16
    app.page_size_box.value = 16
    app.coalesce = True  # as in a kernel, where the front end sends the events

    async def drag():
        draws = app.draws
        for page in range(1, 5):
            app.page_slider.value = page  # events arrive faster than a draw (pages count from 1 on screen)
        await asyncio.to_thread(app.controller.wait)  # the worker draws while the loop stays free
        return app.draws - draws

    assert asyncio.run(drag()) == 1
    assert app.state.page == 3 and app.page_slider.value == 4

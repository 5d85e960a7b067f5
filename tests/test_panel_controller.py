"""The panel's controller without widgets, and the panel's refusals, threads, code and kernel behaviour."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch
from fresh_interpreter import pngs_of
from PIL import Image
from traitlets import TraitError

import explorer
from explorer.widgets.engine import Controller, Grid
from explorer.widgets.state import ExplorerState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _grid_only(scene):
    return scene.grid()


pytestmark = pytest.mark.usefixtures("restored_panel")  # module-scoped panels, reset after each test


@pytest.fixture(scope="module")
def controller():
    state = ExplorerState(model="resnet18", pretrained=False, device="cpu", out_indices=[1])
    controller = Controller(state, views={"Grid": _grid_only})
    controller.start()
    return controller


def test_every_trait_says_what_a_change_costs():
    state = ExplorerState()
    assert set(state.snapshot()) == set(ExplorerState.class_trait_names())  # every trait has a work tag
    assert {ExplorerState.work(name) for name in state.snapshot()} == {1, 2, 3}
    assert ExplorerState.work("model") == 3 and ExplorerState.work("image_index") == 2
    assert ExplorerState.work("cmap") == 1 and ExplorerState.work("tab") == 1


def test_a_frame_is_immutable_and_shows_one_capture(controller):
    frame = controller.frame
    assert frame.maps.shapes == {"layer1": (1, 64, 56, 56)}
    assert frame.state["out_indices"] == (1,) and frame.state["stage"] == "layer1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.maps = None
    with pytest.raises(TypeError):
        frame.state["cmap"] = "gray"
    assert isinstance(frame.views["Grid"], Grid) and frame.views["Grid"].png[:8] == b"\x89PNG\r\n\x1a\n"


def test_draw_changes_reuse_the_capture_and_drawn_parts(controller):
    state, runs = controller.state, controller.forward_passes
    first = controller.frame.views["Grid"]
    state.cmap = "magma"
    magma = controller.frame.views["Grid"]
    assert magma is not first and magma.png != first.png and controller.forward_passes == runs
    state.cmap = "viridis"
    assert controller.frame.views["Grid"] is first  # the same arguments: the part drawn before
    assert controller.frame.state["cmap"] == "viridis"


def test_captures_never_change_the_shared_backbone(controller):
    shared = controller.runtime.shared("main")
    loaded = shared.out_indices
    controller.state.out_indices = [2, 3]
    assert controller.frame.backbone.out_indices == [2, 3] and list(controller.frame.maps) == [
        "layer2",
        "layer3",
    ]
    assert shared.out_indices == loaded and controller.frame.backbone is not shared
    assert controller.frame.backbone.model is shared.model  # a selection, not a second model
    controller.state.out_indices = [1]


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("out_indices", [9], "out_indices"),
        ("stage", "bogus", 'No map named "bogus"'),
        ("channel", 9999, "Channel 9999 does not exist: layer1 has 64 channels"),
        ("page", 40, "Page 41 does not exist"),
        ("tab", "Nowhere", 'No tab named "Nowhere"'),
        ("precision", "float16", "needs a GPU"),
    ],
)
def test_a_refused_change_leaves_what_is_shown_and_says_why(controller, name, value, message):
    before = controller.frame
    setattr(controller.state, name, value)
    frame = controller.frame
    assert frame.status.level == "error" and frame.status.kind == "warn" and message in frame.status.text
    assert getattr(controller.state, name) == (
        list(before.state[name]) if name == "out_indices" else before.state[name]
    )
    assert frame.maps is before.maps and frame.views["Grid"] is before.views["Grid"]
    controller.state.cmap = "gray"  # the next display change works: the refused value is not in force
    assert controller.frame.status.kind == "warn" and "updated in" in controller.frame.status.text
    controller.state.cmap = "viridis"


def test_state_validation_refuses_before_anything_runs():
    state = ExplorerState()
    for name, value in (
        ("model", "  "),
        ("cmap", "viridiss"),
        ("page_size", 10),
        ("alpha", 2.0),
        ("clip", 20.0),
    ):
        with pytest.raises(TraitError):
            setattr(state, name, value)
    assert state.model == "default" and state.cmap == "viridis"


def test_channel_is_clamped_when_the_stage_changes_not_when_typed(controller):
    controller.state.out_indices = [1, 4]
    controller.state.stage = "layer4"
    controller.state.channel = 500
    assert controller.frame.state["channel"] == 500
    controller.state.stage = "layer1"  # 64 channels: the zoomed channel follows to the last one
    assert controller.frame.state["channel"] == 63 and controller.frame.status.level != "error"
    controller.state.out_indices = [1]
    controller.state.channel = 0


def test_newer_state_from_threads_ends_consistent_in_the_background():
    state = ExplorerState(model="resnet18", pretrained=False, device="cpu", out_indices=[1])
    controller = Controller(state, views={"Grid": _grid_only}, background=True)
    controller.start()
    assert controller.wait(120)

    def flip_images():
        for i in range(30):
            state.image_index = i % 4

    thread = threading.Thread(target=flip_images)
    thread.start()
    state.model = "resnet34"
    state.cmap = "magma"
    thread.join()
    assert controller.wait(120)
    frame = controller.frame
    assert frame.backbone.spec == "resnet34" and frame.state["model"] == "resnet34"
    assert frame.state["image_index"] == 29 % 4 and frame.state["cmap"] == "magma"
    shown = frame.backbone.capture(frame.backbone.pixel_values([frame.gallery.images[29 % 4]]), ["layer1"])
    assert torch.equal(frame.maps["layer1"], shown["layer1"])  # the shown model's maps of the shown image


def test_a_display_change_during_a_forward_draws_at_once_from_the_maps_on_show(monkeypatch):
    """A forward that takes long (a large model) runs in a helper thread: a colour map chosen meanwhile is drawn
    at once from the maps on show, the status line still says the model runs, and the pass then shows the new
    image in the new colours."""
    state = ExplorerState(model="resnet18", pretrained=False, device="cpu", out_indices=[1])
    controller = Controller(state, views={"Grid": _grid_only}, background=True, quick={"Grid"})
    controller.start()
    assert controller.wait(120)
    before = controller.frame
    capture, entered, release = controller.runtime.capture, threading.Event(), threading.Event()

    def slow_capture(serial, selected, images, keys, layers, on_run):
        entered.set()
        assert release.wait(120), "the test never released the forward"
        return capture(serial, selected, images, keys, layers, on_run)

    monkeypatch.setattr(controller.runtime, "capture", slow_capture)
    state.image_index = 1
    assert entered.wait(120)  # the worker waits on the forward
    state.cmap = "magma"
    while controller.frame.state["cmap"] != "magma":  # an interim frame, delivered here (no kernel loop)
        assert not controller.wait(0.05), "the pass ended before an interim frame was drawn"
    interim = controller.frame
    assert not release.is_set() and interim.status.kind == "busy"  # the forward still runs, and says so
    assert interim.state["image_index"] == 0 and interim.maps is before.maps  # the maps on show, redrawn
    assert interim.views["Grid"].png != before.views["Grid"].png
    assert interim.scene.maps is before.maps and interim.scene.state.cmap == "magma"  # same maps, new colours
    upload = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
        upload, "PNG"
    )
    controller.add_upload("during.png", upload.getvalue())  # an upload and a redraw while the forward runs:
    state.cmap = "gray"  # the redraw leaves the upload to the pass, which shows it
    release.set()
    assert controller.wait(120)
    final = controller.frame
    index = len(final.gallery) - 1
    assert final.gallery.names[index] == "during.png" and final.state["image_index"] == index
    assert final.state["cmap"] == "gray" and final.status.kind != "busy"
    shown = final.backbone.capture(final.backbone.pixel_values([final.gallery.images[index]]), ["layer1"])
    assert torch.equal(final.maps["layer1"], shown["layer1"])  # the maps of the image on show


# -- the panel (widgets) -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app():
    return explorer.Explorer(device="cpu", out_indices=[1], display=False)


def test_scripted_bad_values_are_refused_in_the_status_line(app):
    app.cmap = "not-a-map"  # no exception reaches the caller
    assert "Unknown colour map" in app.status and app.cmap == "viridis" and app.cmap_box.value == "viridis"
    app.stage = "bogus"
    assert 'No map named "bogus"' in app.status and app.stage == "blocks.1"
    app.norm = "stage"
    assert "updated in" in app.status
    loads = app.controller.loads
    app.model = ""  # never the current folder
    assert "checkpoint is empty" in app.status and app.model == "default" and app.controller.loads == loads
    app.norm = "channel"


def test_typed_values_that_do_not_exist_go_back_in_their_box(app):
    app.cmap_box.value = "viridiss"  # the refused text stays in its box, marked, for the user to fix
    assert app.cmap == "viridis" and "Closest names: viridis" in app.status
    assert app.cmap_box.value == "viridiss" and "explorer-refused" in app.cmap_box._dom_classes
    app.cmap_box.value = "viridis"
    assert "explorer-refused" not in app.cmap_box._dom_classes
    app.channel_box.value = 9999
    assert app.channel_box.value == app.channel == 0 and "Channel 9999 does not exist" in app.status


def test_hover_gives_the_value_and_a_click_zooms_the_channel(app, monkeypatch):
    grid = app.views["Grid"]
    sent = []
    monkeypatch.setattr(grid.grid_view, "send", lambda content, buffers=None: sent.append(content))
    grid.grid_view._handle_custom_msg({"event": "hover", "channel": 3, "row": 2, "col": 5}, [])
    expected = float(app.feature_maps["blocks.1"][0, 3, 2, 5])
    assert sent == [{"hover": {"channel": 3, "row": 2, "col": 5, "value": f"{expected:.4g}"}}]
    geometry = grid.grid_view.grid
    layout = app.controller.frame.views["Grid"].grid.layout
    assert geometry["channels"] == list(layout.channels) and geometry["tile"] == list(layout.tile)
    grid.grid_view._handle_custom_msg({"event": "click", "channel": 7, "row": 0, "col": 0}, [])
    assert app.channel == 7 and grid.zoom_view.title == "blocks.1 · channel 7"
    app.channel = 0


def test_grid_and_zoom_have_titles_and_colour_bars(app):
    grid = app.views["Grid"]
    assert grid.grid_view.title.startswith("blocks.1 · channels 0-23 of 24")
    assert grid.grid_view.colorbar["low"] == "min" and len(grid.grid_view.colorbar["colors"]) == 9
    low, high = (float(grid.zoom_view.colorbar[k]) for k in ("low", "high"))
    assert low < high
    pixels = np.asarray(Image.open(io.BytesIO(grid.zoom_view.data)).convert("RGB"))
    assert not ((pixels == (255, 0, 255)).all(-1)).any()  # no magenta: finite values only, no plot background


def test_overlay_follows_colour_map_and_opacity(app):
    def decoded(data):
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(float)

    grid = app.views["Grid"]
    inferno = grid.overlay_image.value
    app.cmap_box.value = "gray"
    assert grid.overlay_image.value != inferno
    app.alpha_slider.value = 0.0
    image_only = decoded(grid.overlay_image.value)
    assert np.abs(image_only - decoded(app.view_image.value)).mean() < 3  # the image itself (JPEG noise)
    app.alpha_slider.value = 1.0
    assert np.abs(decoded(grid.overlay_image.value) - image_only).mean() > 10
    app.alpha_slider.value = 0.5
    app.cmap_box.value = "viridis"


def test_top_by_is_active_in_top_mode_only(app):
    assert app.top_by_box.disabled and not app.page_slider.disabled
    app.mode_box.value = "top"
    assert not app.top_by_box.disabled and app.page_slider.disabled
    app.mode_box.value = "page"


def test_any_layer_enter_adds_shows_and_refuses_with_a_reason(app):
    app.layer_box.value = "blocks.1.0.conv_dw"  # the value a Combobox sends on Enter
    assert app.layers == ["blocks.1.0.conv_dw"] and app.stage == "blocks.1.0.conv_dw"
    assert app.feature_maps.shapes["blocks.1.0.conv_dw"] == (1, 96, 56, 56) and app.layer_box.value == ""
    app.layer_box.value = "blocks.1.0.conv_dww"
    assert "Error" in app.status and "blocks.1.0.conv_dw" in app.status
    assert app.layers == ["blocks.1.0.conv_dw"] and app.stage == "blocks.1.0.conv_dw"
    assert "blocks." in app.layer_box.placeholder
    app.layers = []
    assert app.stage == "blocks.1"


def test_difference_grid_has_a_symmetric_scale(app):
    app.tab = "Compare"
    app.compare_mode_box.value = "images"
    bar = app.views["Compare"].panes[2].colorbar
    assert float(bar["low"]) == -float(bar["high"]) < 0 and bar["note"] == "zero in the middle"
    assert app.views["Compare"].panes[2].title == "A − B"
    assert app.compare_model_box.style.description_width == "initial"  # "Checkpoint B" is not cut
    app.compare_mode_box.value = "off"
    app.tab = "Grid"


def test_uploads_arrive_in_chunks_and_too_large_ones_are_refused_first(app):
    app.upload._handle_custom_msg({"event": "refused", "name": "huge.jpg", "size": 15 * 2**20}, [])
    assert "huge.jpg is 15.0 MiB" in app.status and "64 MiB" in app.status
    rgb = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    content, size = buffer.getvalue(), 50_000
    app.upload.chunk_bytes = size  # the browser cuts files at the kernel's chunk size
    count = -(-len(content) // size)
    images = len(app.images)
    for index in reversed(range(count)):  # in any order
        part = content[index * size : (index + 1) * size]
        message = {"event": "chunk", "id": "x1", "name": "noise.png", "size": len(content), "index": index}
        app.upload._handle_custom_msg({**message, "count": count}, [memoryview(part)])
    assert len(app.images) == images + 1 and np.array_equal(np.asarray(app.images[-1]), rgb)
    assert app.image_index == images and "Error" not in app.status
    app.image_index = 0
    app.upload.chunk_bytes = 4 * 2**20


def test_progress_moves_through_the_steps_of_a_load():
    app = explorer.Explorer("resnet18", pretrained=False, device="cpu", display=False)
    seen = []
    app.controller.listeners.append(lambda frame: seen.append((frame.status.kind, frame.status.progress)))
    app.model = "resnet34"
    steps = [progress[0] for kind, progress in seen if kind == "busy"]
    assert steps == sorted(steps) and {1, 2, 3} <= set(steps) and seen[-1][0] == "warn"
    assert app.progress.value == app.progress.max


def test_code_round_trips_in_a_fresh_interpreter():
    app = explorer.Explorer(device="cpu", out_indices=[1, 2], cmap="magma", norm="stage", display=False)
    app.page_size = 16
    app.page = 1
    first = (app.code(), app.grid_png)
    app.layers = ["blocks.2.0.conv_pw"]
    app.channel_mode = "top"
    app.top_by = "std"
    second = (app.code(), app.grid_png)
    assert "blocks.2.0.conv_pw" in second[0] and "top:16" in second[0]
    pngs = pngs_of([first[0], second[0]], ROOT, timeout=600)
    assert pngs == [first[1], second[1]]


def test_the_panel_is_built_before_torch_is_imported():
    """In a kernel the work runs in a worker thread: here torch's import is held until the panel exists."""
    script = textwrap.dedent(
        """
        import importlib.abc, sys, threading
        release = threading.Event()

        class HoldTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch":
                    release.wait(600)
                return None

        sys.meta_path.insert(0, HoldTorch())
        import explorer.widgets.app as app_module
        app_module._in_kernel = lambda: True
        app = app_module.Explorer(device="cpu", display=False)
        built = ("torch" in sys.modules, app.controls.status_line.value, len(app.tabs.children))
        release.set()
        app.controller.wait(600)
        from explorer.widgets.views import VIEWS
        print(built[0], "importing torch" in built[1], built[2] == len(VIEWS) >= 4, "updated in" in app.status)
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "True", "True"]  # every registered tab is built


def test_load_errors_reach_the_status_line_in_a_real_kernel():
    jupyter_client = pytest.importorskip("jupyter_client")
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        code = textwrap.dedent(
            """
            import explorer
            app = explorer.Explorer(device="cpu")
            app.controller.wait(600)
            first = app.status
            app.model = "resnet-18"
            refused = (app.status, app.model, app.model_box.value)
            app.cmap = "magma"
            print(repr((first, refused, app.status, app.controller.background)))
            """
        )
        outputs, displayed = [], []

        def collect(message):
            if message["msg_type"] == "stream":
                outputs.append(message["content"]["text"])
            elif message["msg_type"] == "display_data":
                displayed.append(message["content"]["data"])

        reply = client.execute_interactive(code, timeout=600, output_hook=collect)
        assert reply["content"]["status"] == "ok", reply["content"]
        first, (refused, model, box), after, background = eval("".join(outputs))  # noqa: S307 - our own repr
        assert "updated in" in first and background is True
        assert "Unknown model" in refused and "resnet18" in refused and "cannot access" not in refused
        assert model == "default" and box == "resnet-18"  # the refused name stays in its box
        assert "updated in" in after
        assert any("application/vnd.jupyter.widget-view+json" in data for data in displayed)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        for context in (client.context, manager.context):  # no zmq threads left for the interpreter's exit
            context.destroy(linger=0)


def test_the_controller_and_state_import_no_widgets_and_no_torch_at_load():
    import ast
    import importlib

    import explorer.widgets.state as state_module

    engine = [
        importlib.import_module(f"explorer.widgets.engine.{name}")
        for name in ("controller", "frame", "gallery", "scheduler", "runtime", "rules", "codegen")
    ]
    for module in (*engine, state_module):
        assert len(open(module.__file__).read().splitlines()) < 400, module.__name__
        tree = ast.parse(open(module.__file__).read())
        top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        names = {alias.name for node in top for alias in node.names} | {
            node.module for node in top if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not names & {"ipywidgets", "anywidget", "torch", "numpy", "PIL"}, (module.__name__, names)


@pytest.mark.parametrize("file_format", ["GIF", "TIFF"])
def test_gallery_labels_name_the_format_of_multi_frame_images(file_format):
    from explorer.images import load_image
    from explorer.widgets.engine import Gallery

    frames = [Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=file_format, save_all=True, append_images=frames[1:])
    still = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    gallery = Gallery().add(
        (load_image(buffer.getvalue()), still), ("pages", "still"), (("a", "a"), ("b", "b"))
    )
    assert gallery.labels() == [(f"pages ({file_format}: first frame)", 0), ("still", 1)]


def test_a_map_that_is_not_image_aligned_is_said_so_and_gets_no_overlay():
    window_attention = "layers.1.blocks.0.attn"  # 16 windows of 7x7 folded into the batch
    app = explorer.Explorer(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        device="cpu",
        out_indices=[1],
        layers=[window_attention],
        display=False,
    )
    grid = app.views["Grid"]
    assert app.feature_maps.aligned == {"layers.1": True, window_attention: False}
    assert grid.overlay_image.value  # a stage map is drawn over the image
    assert "not an image-aligned map" not in app.status
    app.stage = window_attention
    assert app.stage == window_attention
    assert "not an image-aligned map" in app.status and "windows" in app.status
    assert grid.overlay_image.value == b""  # nothing drawn as if it lay on the image
    assert grid.overlay_image.layout.display == "none"
    assert "not an image-aligned map" in grid._shown.title
    app.stage = "layers.1"
    assert "not an image-aligned map" not in app.status and grid.overlay_image.value

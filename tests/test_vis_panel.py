"""The Visualise button in the panel, headless, as the user sees it: the picture's bytes and caption in the Grid and
Dataset tabs, the previews that refine it live (through the engine's frames), cancellation by another channel,
the random-weights warning, and ``app.code()`` giving the visualize call."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from PIL import Image
from test_scan import write_images

import explorer
from explorer.widgets.engine.frame import Scene

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, SIZE = 32, 32


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def _png(image: Image.Image) -> bytes:
    return explorer.to_png(np.asarray(image))


def _app(model: str = "test_resnet", pretrained: bool = False, **state):
    return explorer.Explorer(
        model,
        pretrained=pretrained,
        device="cpu",
        out_indices=[1],
        display=False,
        **{"vis_steps": STEPS, "vis_size": SIZE, **state},
    )


@pytest.fixture(scope="module")
def tiny():
    return _app()


def test_the_button_shows_the_zoomed_channels_picture_refining_live(tiny):
    app = tiny
    frames = []
    app.controller.listeners.append(frames.append)
    try:
        app.channel = 3
        vis = app.views["Grid"].vis
        assert vis.image.layout.display == "none" and not vis.caption.value  # nothing asked yet
        vis.button.click()
    finally:
        app.controller.listeners.remove(frames.append)
    assert app.vis_target == ["layer1", 3]
    expected = explorer.visualize(app.backbone, stage="layer1", channel=3, steps=STEPS, size=SIZE, seed=0)
    assert vis.image.value == _png(expected.image)  # the library's picture, byte for byte
    assert vis.image.layout.display == ""
    assert "layer1 · channel 3" in vis.caption.value and f"{expected.activation:.3g}" in vis.caption.value
    # the previews came through the engine's frames, each a step further, with the progress on the status line
    previews = [
        f.views["Grid"].vis for f in frames if f.views.get("Grid") and f.views["Grid"].vis is not None
    ]
    partial = [v for v in previews if v.activation is None]
    assert [v.done for v in partial] == list(range(2, STEPS, 2))
    assert len({v.png for v in partial}) > len(partial) // 2  # the image changes as it refines
    assert all(
        f.status.kind == "busy" and "Visualising" in f.status.html
        for f in frames
        if f.status.progress
        and f.views.get("Grid")
        and f.views["Grid"].vis is not None
        and f.views["Grid"].vis.activation is None
    )
    assert previews[-1].activation == pytest.approx(expected.activation)
    # the model is left as found, and the status line is the model line again
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in app.backbone.model.modules())
    assert all(p.requires_grad for p in app.backbone.model.parameters())
    assert app.controller.frame.status.kind != "busy"


def test_on_random_weights_the_panel_says_the_picture_means_nothing(tiny):
    tiny.channel = 3
    tiny.vis_target = ("layer1", 3)
    caption = tiny.views["Grid"].vis.caption.value
    assert "RANDOM WEIGHTS" in caption and "means nothing" in caption


def test_another_channel_hides_the_picture_and_the_same_channel_brings_it_back_from_cache(tiny):
    app = tiny
    app.vis_target = ("layer1", 3)
    app.channel = 3
    shown = app.views["Grid"].vis.image.value
    runs = app.forward_passes
    app.channel = 4
    vis = app.views["Grid"].vis
    assert vis.image.layout.display == "none" and not vis.caption.value
    app.channel = 3
    assert vis.image.value == shown and app.forward_passes == runs  # kept by content: not optimised again


def test_changing_the_channel_while_it_optimises_stops_it(monkeypatch):
    """In the worker (as in a kernel): a change of channel during the optimisation stops it at the next preview;
    no picture of either channel is shown afterwards, and the model is left as found."""
    app = _app()
    app.controller.background = True
    started = threading.Event()
    seen: list[int] = []
    original = Scene.preview

    def preview(self, title, data, message, done, of):
        seen.append(done)
        started.set()
        original(self, title, data, message, done, of)

    monkeypatch.setattr(Scene, "preview", preview)
    app.state.vis_steps = 4096
    app.state.vis_target = ("layer1", 2)
    app.state.channel = 2
    assert started.wait(600)
    app.state.channel = 5  # the user picks another channel while it runs
    assert app.controller.wait(600)
    assert max(seen) < 4096 - 256  # stopped long before the end
    frame = app.controller.frame
    assert frame.state["channel"] == 5 and frame.views["Grid"].vis is None
    assert app.views["Grid"].vis.image.layout.display == "none"
    assert not frame.status.error and frame.status.kind != "busy"
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in app.backbone.model.modules())
    assert all(p.requires_grad for p in app.backbone.model.parameters())


def test_the_dataset_tab_shows_the_picture_beside_the_exemplars(tmp_path, monkeypatch):
    images = tmp_path / "images"
    write_images(images, 4)
    app = _app()
    view = app.views["Dataset"]
    monkeypatch.setattr(type(view), "cache", None)
    app.tab = "Dataset"
    app.channel = 6
    app.dataset_source = str(images)
    assert len(view.crops_box.children) == 4
    assert view.vis.image.layout.display == "none"
    view.vis.button.click()
    expected = explorer.visualize(app.backbone, stage="layer1", channel=6, steps=STEPS, size=SIZE, seed=0)
    assert view.vis.image.value == _png(expected.image)
    assert "channel 6" in view.vis.caption.value and "RANDOM WEIGHTS" in view.vis.caption.value
    (box,) = [child for child in view.widget.children if view.crops_box in getattr(child, "children", ())]
    assert list(box.children) == [view.crops_box, view.vis.widget]  # beside the exemplars
    runs = app.forward_passes
    app.tab = "Grid"  # the Grid tab shows the same picture at once, from the cache
    assert app.views["Grid"].vis.image.value == view.vis.image.value and app.forward_passes == runs
    assert "explorer.visualize(bb, stage='layer1', channel=6" in app.code()


def test_method_and_steps_are_state_traits_with_widgets(tiny):
    vis = tiny.views["Grid"].vis
    vis.method_box.value = "maco"
    vis.steps_box.value = 64
    assert (tiny.vis_method, tiny.vis_steps) == ("maco", 64)
    tiny.vis_steps = 5000  # refused, named on the status line
    assert tiny.vis_steps == 64 and "vis_steps is between 1 and 4096" in tiny.status
    tiny.vis_method, tiny.vis_steps = "fft", STEPS


def test_code_for_the_picture_runs_as_given_in_a_fresh_interpreter(tmp_path):
    """On the pretrained default (packaged weights: a fresh run loads the same ones), the code binds vis_png to
    the picture's bytes."""
    app = _app("default", pretrained=True, vis_steps=8)
    app.vis_target = (app.stage, 1)
    app.channel = 1
    shown = app.views["Grid"].vis.image.value
    assert "RANDOM WEIGHTS" not in app.views["Grid"].vis.caption.value
    code = app.code(str(tmp_path / "saved"))
    assert f"explorer.visualize(bb, stage={app.stage!r}, channel=1, steps=8, size={SIZE}, seed=0" in code
    script = textwrap.dedent(
        """
        import json, sys
        scope = {}
        exec(sys.stdin.read(), scope)
        print(json.dumps([scope["png"].hex(), scope["vis_png"].hex()]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=code,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=ROOT),
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    png, vis_png = (bytes.fromhex(h) for h in json.loads(result.stdout.strip().splitlines()[-1]))
    assert png == app.png and vis_png == shown

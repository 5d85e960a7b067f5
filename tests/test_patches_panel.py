"""The panel's Patches tab, headless: PCA colours and similarity maps from the panel's captures (no forward pass
once the gallery is captured), a click that sets the query, attention on a ViT and its refusal on a CNN, and the
library code for the mode on show."""

from __future__ import annotations

import numpy as np
import torch
from fresh_interpreter import pngs_of

import explorer
from explorer.widgets.engine.gallery import LIVE
from explorer.widgets.views.patches import similarity_options


def _click(view, image: int, row: int, col: int) -> None:
    """What the front end sends when a tile's location is clicked."""
    view._on_message(view, {"event": "click", "channel": image, "row": row, "col": col}, [])


def _two_images():
    return list(explorer.sample_images(["chelsea", "coffee"]).values())


def test_pca_and_similarity_are_the_librarys_from_the_panels_capture():
    images = _two_images()
    app = explorer.Explorer(device="cpu", images=images, out_indices=[1, 2], display=False)
    view = app.views["Patches"]
    assert app.patch_mode == "pca" and view.result is None  # nothing is drawn until the tab is on show
    before = app.forward_passes
    app.tab = "Patches"
    assert app.forward_passes == before + 1  # the gallery, captured once for every mode
    bb, stage = app.backbone, app.stage
    maps = bb.capture(bb.pixel_values(images), layers=list(app.feature_maps))
    tile = tuple(view._shown.grid["tile"])
    fit = explorer.pca(bb, maps, stage=stage)
    want = explorer.pca(bb, maps, stage=stage, fit=fit.basis, size=tile)
    assert torch.allclose(view._shown.basis.components, fit.basis.components, atol=1e-5)
    assert view.patches_view.data == explorer.to_png(np.hstack(want.rgb)) == app.png
    assert view.patches_view.grid["cols"] == 2 and view.patches_view.grid["map"] == list(
        maps[stage].shape[-2:]
    )
    shown_fit = view._shown.basis

    app.cmap = "magma"  # a redraw reuses the fit: the same colours, no forward pass
    assert view._shown.basis is shown_fit and app.forward_passes == before + 1

    _click(view.patches_view, 1, 3, 4)  # a click on image 1's PCA colours: its similarity
    assert app.patch_mode == "similarity" and tuple(app.patch_query) == (1, 3, 4)
    sim = explorer.similarity(bb, maps, stage=stage, query=(1, 3, 4))
    options = similarity_options(2, tuple(maps[stage].shape[-2:]), "magma")
    first = view.patches_view.data
    assert first == explorer.to_png(explorer.render_grid(sim.maps, **options)) == app.png
    assert view.result.best == sim.best
    marks = [tuple(mark) for mark in view.patches_view.marks]
    assert marks[0] == (1, 3, 4, "query") and marks[1:] == [
        (i, *best, "best") for i, best in enumerate(sim.best)
    ]
    assert view.images_view.marks == view.patches_view.marks
    assert view._value(0, *sim.best[0]) == float(sim.maps[0][sim.best[0]])  # the value under the pointer

    _click(view.images_view, 0, 5, 6)  # a click on image 0 itself: another query, other maps
    assert tuple(app.patch_query) == (0, 5, 6) and view.patches_view.data != first
    sim = explorer.similarity(bb, maps, stage=stage, query=(0, 5, 6))
    assert torch.equal(view.result.maps, sim.maps)

    app.stage = app.out_features[0]  # another captured stage: no forward pass, the query kept inside its grid
    app.patch_mode = "pca"
    app.patch_mode = "similarity"
    assert view._shown.grid["map"] == list(maps[app.stage].shape[-2:])
    assert app.forward_passes == before + 1


def test_a_gallery_of_the_image_on_show_needs_no_forward_pass():
    app = explorer.Explorer(device="cpu", images=_two_images()[:1], display=False)
    before = app.forward_passes
    app.tab = "Patches"
    app.patch_mode = "similarity"
    app.patch_query = (0, 500, 500)  # outside the grid: clamped to its last location
    grid = app.views["Patches"]._shown.grid["map"]
    assert app.views["Patches"].result.query == (0, grid[0] - 1, grid[1] - 1)
    assert app.forward_passes == before


def test_attention_draws_on_a_vit_and_a_cnn_says_why_not():
    app = explorer.Explorer(device="cpu", images=_two_images()[:1], display=False)
    view = app.views["Patches"]
    app.tab = "Patches"
    app.patch_mode = "attention"
    assert "has no attention blocks with a class token" in view.patch_status.value
    assert "explorer.similarity" in view.patch_status.value and "error" in view.patch_status.value
    assert view.patches_view.layout.display == "none"
    # the panel's own status line says it too, and nothing is reverted: the mode stays where it was put
    assert "Error: default (EfficientNet)" in app.status and "has no attention blocks" in app.status
    assert "explorer.similarity" in app.status and app.patch_mode == "attention"
    app.patch_mode = "pca"  # the panel keeps working, and the refusal is no longer news
    assert view._shown.mode == "pca" and view.patches_view.data[:4] == b"\x89PNG"
    assert "Error" not in app.status

    app.patch_mode = "attention"
    app.pretrained = False
    app.model = "vit_tiny_patch16_224"
    assert app.backbone.spec == "vit_tiny_patch16_224" and "Error" not in app.status
    att = explorer.attention(app.backbone, app.images[0], block="blocks.11")
    assert view.result.block == "blocks.11" and torch.allclose(view.result.maps, att.maps, atol=1e-6)
    options = dict(channels=[0], norm="channel", cmap="viridis", pad=2, max_size=320)
    assert view.patches_view.data == explorer.to_png(explorer.render_grid(att.maps.mean(0)[None], **options))
    assert view.block_box.options[-1] == ("blocks.11", "blocks.11") and len(view.head_box.options) == 4

    runs = app.forward_passes
    app.attention_head = 2  # a head of the same read: no model run
    assert app.forward_passes == runs and view._shown.tiles == ("head 2",)
    assert view.patches_view.data == explorer.to_png(explorer.render_grid(att.maps[2][None], **options))
    app.attention_block = "blocks.3"
    app.attention_rollout = True
    assert app.forward_passes > runs and view._shown.tiles == ("head 2", "rollout")
    rolled = explorer.attention(app.backbone, app.images[0], block="blocks.3", rollout=True)
    assert torch.allclose(view.result.rollout, rolled.rollout, atol=1e-6)
    assert app.png == view.patches_view.data
    assert "att = explorer.attention(bb, images[0], block='blocks.3', rollout=True)" in app.code()
    body, indices, png = view.code(
        app.controller.frame, view._shown
    )  # the code, on the panel's random weights
    scope = {
        "bb": app.backbone,
        "images": [app.images[i] for i in indices],
        "explorer": explorer,
        "torch": torch,
    }
    exec("\n".join(body), scope)
    assert scope["png"] == png == app.png


def test_code_for_pca_and_similarity_round_trips_in_a_fresh_interpreter(tmp_path):
    app = explorer.Explorer(device="cpu", images=_two_images(), out_indices=[2], display=False)
    app.tab = "Patches"
    made = [(app.code(folder=tmp_path / "images"), app.png)]
    app.patch_mode = "similarity"
    app.patch_query = (1, 2, 3)
    made.append((app.code(folder=tmp_path / "images"), app.png))
    assert "query=(1, 2, 3)" in made[1][0] and made[0][1] != made[1][1]
    pngs = pngs_of([code for code, _ in made], tmp_path, timeout=600)
    assert pngs == [png for _, png in made]


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    pixels = np.zeros((96, 128, 3), np.uint8)
    pixels[:, :64] = colour
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_camera_frames_are_the_image_on_show_and_replace_each_other(monkeypatch):
    app = explorer.Explorer(device="cpu", images=_two_images()[:1], display=False)
    app.tab = "Patches"
    app.camera_button.value = True
    camera = app.camera
    assert app.camera_box.children == (camera,) and camera.active
    sent = []
    monkeypatch.setattr(camera, "send", lambda content, buffers=None: sent.append(content))
    add_upload = app.controller.add_upload
    waiting = []
    monkeypatch.setattr(app.controller, "add_upload", lambda name, data: waiting.append((name, data)))
    camera._on_message(camera, {"event": "frame", "seq": 1}, [_jpeg((250, 30, 30))])
    app._show(app.controller.frame)  # a frame finished before this one arrived: it does not show it
    assert waiting == [(LIVE, camera.frame)] and sent == []  # back-pressure: no acknowledgement until drawn
    add_upload(*waiting[0])  # the engine draws it (here at once, in a kernel in its worker)
    assert app.controller.wait(300) and sent == [{"ack": 1}] and camera.acknowledged == 1
    monkeypatch.setattr(app.controller, "add_upload", add_upload)
    assert (
        len(app.images) == 2
        and app.image_index == 1
        and app.controller.frame.gallery.names[1] == "camera frame"
    )
    first, shown = app.feature_maps, app.views["Patches"]._shown
    assert shown.grid["cols"] == 2  # the PCA colours follow the camera
    delivered = []
    app.controller.listeners.append(lambda frame: delivered.append(frame.status.kind))
    camera._on_message(camera, {"event": "frame", "seq": 2}, [_jpeg((20, 20, 240))])
    assert app.controller.wait(300)
    assert len(delivered) == 1 and delivered != ["busy"]  # a camera frame alone: no busy frames before it
    assert len(app.images) == 2 and app.image_index == 1  # the new frame replaced the previous one
    assert sent == [{"ack": 1}, {"ack": 2}]
    assert np.asarray(app.images[1])[0, 0, 2] > 200
    assert not torch.equal(app.feature_maps[app.stage], first[app.stage])
    assert app.views["Patches"]._shown is not shown

    camera.error = "navigator.mediaDevices is not available: open the notebook over https or localhost."
    assert "No camera: navigator.mediaDevices is not available" in app.status
    app.camera_button.value = False
    assert app.camera_box.children == () and not camera.active

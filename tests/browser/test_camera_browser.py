"""The live camera in JupyterLab, in headless Chromium with its fake camera playing a video this test writes.

A standalone notebook shows the :class:`~explorer.widgets.camera.Camera` widget and a callback that colours each
frame by ``explorer.pca`` on the default model (the fit of the first frame reused, so the colours hold still);
the test waits for frames to be drawn and records the rate (``tests/artifacts/camera-fps.txt``; a measurement,
not an assertion). A second browser, with a camera but camera permission denied, gets the widget's error
instead of frames.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from .harness import CHROMIUM, CHROMIUM_ARGS, VIEWPORT

pytestmark = pytest.mark.browser

KERNEL_TIMEOUT_MS = 240_000  # first kernel start, imports and the model load on two busy cores
FRAMES = 20  # frames drawn before the rate is read

NOTEBOOK_CELLS = [
    """import time

import ipywidgets as widgets

import explorer
from explorer.widgets.camera import Camera

bb = explorer.load_backbone("default")
view = widgets.Image(format="png", width=224)
label = widgets.Label("waiting for the camera", layout={"width": "600px"})
label.add_class("camera-status")
drawn, fit = [], {}


def draw(image):
    pv = explorer.pca(bb, [image], stage="blocks.4", fit=fit.get("basis"), size=112)
    fit.setdefault("basis", pv.basis)
    view.value = explorer.to_png(pv.rgb[0])
    drawn.append(time.perf_counter())
    steady = drawn[2:]  # the first frames load and fit
    rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0
    label.value = f"drawn {len(drawn)} frames at {rate:.2f} frames/s, {image.width}x{image.height}"


def on_error(change):
    label.value = f"camera error: {change['new']}"


camera = Camera(on_frame=draw, max_fps=30, width=320)
camera.observe(on_error, "error")
widgets.VBox([camera, view, label])"""
]


def write_y4m(path: Path, frames: int = 30, width: int = 320, height: int = 240) -> Path:
    """A YUV4MPEG2 (4:2:0) clip of a bright disc moving over a ramp, for ``--use-file-for-fake-video-capture``."""
    y, x = np.mgrid[0:height, 0:width]
    chunks = [f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode()]
    for index in range(frames):
        cx = 40 + index * (width - 80) / frames
        luma = (x * 200 // width + 20).astype(np.uint8)
        luma[(x - cx) ** 2 + (y - height / 2) ** 2 < 40**2] = 235
        u = np.full((height // 2, width // 2), 90 + index * 3, np.uint8)
        v = np.full((height // 2, width // 2), 160, np.uint8)
        chunks += [b"FRAME\n", luma.tobytes(), u.tobytes(), v.tobytes()]
    path.write_bytes(b"".join(chunks))
    return path


def write_notebook(path: Path) -> None:
    cells = [
        {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}
        for source in NOTEBOOK_CELLS
    ]
    kernel = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    notebook = {"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(notebook))


def open_browser(driver, profile: Path, camera_args: list[str]):
    context = driver.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        args=[*CHROMIUM_ARGS, *camera_args],
        headless=True,
        viewport=VIEWPORT,
    )
    context.set_default_timeout(30_000)
    return context, context.pages[0] if context.pages else context.new_page()


def run_notebook(page, server, name: str) -> None:
    """Open ``name`` in a workspace of its own (no other notebook restored beside it) and run it."""
    workspace = Path(name).stem
    page.goto(f"{server.url}/lab/workspaces/{workspace}/tree/{name}?token={server.token}")
    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(timeout=KERNEL_TIMEOUT_MS)
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=KERNEL_TIMEOUT_MS)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def status_text(page) -> str:
    return page.locator(".camera-status").first.inner_text()


def test_camera_frames_reach_the_kernel_and_are_drawn(jupyterlab, playwright_driver, tmp_path, artifacts):
    clip = write_y4m(tmp_path / "moving-disc.y4m")
    write_notebook(jupyterlab.root / "camera_live.ipynb")
    fake = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}",
    ]
    context, page = open_browser(playwright_driver, tmp_path / "profile", fake)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        run_notebook(page, jupyterlab, "camera_live.ipynb")
        page.locator(".explorer-camera video").first.wait_for(timeout=KERNEL_TIMEOUT_MS)
        page.wait_for_function(
            f"() => /drawn (\\d+)/.test(document.querySelector('.camera-status')?.textContent || '') && "
            f"Number(document.querySelector('.camera-status').textContent.match(/drawn (\\d+)/)[1]) >= {FRAMES}",
            timeout=KERNEL_TIMEOUT_MS,
        )
        text = status_text(page)
        page.screenshot(path=artifacts / "camera-live.png", full_page=True)
        # the preview plays the fake camera, and the drawn PCA colours are an image, not a placeholder
        playing = page.evaluate("() => document.querySelector('.explorer-camera video').videoWidth")
        drawn = page.locator(".jp-OutputArea img").first
        natural = drawn.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    finally:
        context.close()
    assert "camera error" not in text, text
    match = re.search(r"drawn (\d+) frames at ([\d.]+) frames/s, 320x240", text)
    assert match, f"unexpected status: {text!r}"
    assert playing > 0
    assert natural == [112, 112], natural
    assert not errors, errors
    (artifacts / "camera-fps.txt").write_text(f"{text}\n")
    print(f"camera: {text}")


def test_camera_without_permission_reports_why(jupyterlab, playwright_driver, tmp_path, artifacts):
    write_notebook(jupyterlab.root / "camera_denied.ipynb")
    denied = ["--use-fake-device-for-media-stream", "--deny-permission-prompts"]
    context, page = open_browser(playwright_driver, tmp_path / "profile", denied)
    try:
        run_notebook(page, jupyterlab, "camera_denied.ipynb")
        page.wait_for_function(
            "() => /camera error/.test(document.querySelector('.camera-status')?.textContent || '')",
            timeout=KERNEL_TIMEOUT_MS,
        )
        text = status_text(page)
        page.screenshot(path=artifacts / "camera-denied.png", full_page=True)
    finally:
        context.close()
    assert "The camera could not be opened (NotAllowedError" in text and "Allow camera access" in text, text
    assert "drawn" not in text

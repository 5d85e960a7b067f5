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

import pytest

from .harness import WATCH_PICTURES, fake_camera, launch_chromium, picture_rate, write_y4m

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


def write_notebook(path: Path, sources: list[str] = NOTEBOOK_CELLS) -> None:
    cells = [
        {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}
        for source in sources
    ]
    kernel = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    notebook = {"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(notebook))


def open_browser(driver, profile: Path, camera_args: list[str]):
    context = launch_chromium(driver, profile, camera_args)
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
    context, page = open_browser(playwright_driver, tmp_path / "profile", fake_camera(clip))
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


PANEL_CELLS = [
    """import time

import ipywidgets as widgets

import explorer

app = explorer.Explorer(device="cpu")  # the built-in default on the sample images; it shows itself
app.tab = "Patches"
counter = widgets.Label("no camera frame drawn yet", layout={"width": "900px"})
counter.add_class("camera-count")
drawn = []


def count(frame):
    camera = app.camera
    if camera is None or not camera.acknowledged or (drawn and drawn[-1][0] == camera.acknowledged):
        return
    drawn.append((camera.acknowledged, time.perf_counter()))
    steady = [at for _, at in drawn[2:]]  # the first frames capture the gallery and fit
    rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0
    counter.value = (
        f"received {camera.frames} acknowledged {camera.acknowledged} "
        f"drawn at {rate:.2f} frames/s in {frame.state['tab']} {frame.state['patch_mode']}"
    )


app.controller.listeners.append(count)
counter"""
]

# The image of the Patches tab (PCA colours or similarity maps), and the panel's status line.
PATCHES_IMG = ".explorer-patches img.explorer-iv-img"
PANEL_STATUS = ".explorer-status"


def _counts(page) -> tuple[int, int]:
    text = page.locator(".camera-count").first.inner_text()
    match = re.search(r"received (\d+) acknowledged (\d+)", text)
    assert match, text
    return int(match[1]), int(match[2])


def _follows(page, key: str, changes: int) -> float:
    """Wait for ``changes`` new pictures in the watched image; their rate in the browser (pictures a second)."""
    return picture_rate(page, key, changes, KERNEL_TIMEOUT_MS)


def test_panel_camera_drives_the_patches_tab(jupyterlab, playwright_driver, tmp_path, artifacts):
    """The panel's own Camera button, clicked: PCA colours and then similarity maps follow the fake camera in the
    real panel; the browser sends a frame only once the previous one is drawn (received - acknowledged <= 1)."""
    clip = write_y4m(tmp_path / "moving-disc.y4m")
    write_notebook(jupyterlab.root / "camera_panel.ipynb", PANEL_CELLS)
    context, page = open_browser(playwright_driver, tmp_path / "profile", fake_camera(clip))
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        run_notebook(page, jupyterlab, "camera_panel.ipynb")
        page.locator(PATCHES_IMG).first.wait_for(state="visible", timeout=KERNEL_TIMEOUT_MS)
        page.locator(".camera-count").first.wait_for(timeout=KERNEL_TIMEOUT_MS)
        page.locator("button.widget-toggle-button", has_text="Camera").first.click()
        page.locator(".explorer-camera video").first.wait_for(timeout=KERNEL_TIMEOUT_MS)
        page.wait_for_function(
            "() => /acknowledged [1-9]/.test(document.querySelector('.camera-count').textContent)",
            timeout=KERNEL_TIMEOUT_MS,
        )
        page.evaluate(WATCH_PICTURES, [PATCHES_IMG, "pca"])
        pca_rate = _follows(page, "pca", 8)
        pca_counts = _counts(page)
        pca_text = page.locator(".camera-count").first.inner_text()
        page.screenshot(path=artifacts / "camera-panel-pca.png", full_page=True)
        strip = page.locator(".explorer-patch-images img.explorer-iv-img").first.bounding_box()
        page.mouse.click(strip["x"] + strip["height"] * 0.5, strip["y"] + strip["height"] * 0.5)  # image 0
        page.locator(".explorer-patches .explorer-iv-cell.query").first.wait_for(timeout=KERNEL_TIMEOUT_MS)
        page.evaluate(WATCH_PICTURES, [PATCHES_IMG, "similarity"])
        similarity_rate = _follows(page, "similarity", 8)
        similarity_counts = _counts(page)
        similarity_text = page.locator(".camera-count").first.inner_text()
        status = page.locator(PANEL_STATUS).first.inner_text()
        page.screenshot(path=artifacts / "camera-panel-similarity.png", full_page=True)
        tiles = page.locator(".explorer-patches .explorer-iv-cell.best").count()
    finally:
        context.close()
    assert "Error" not in status and "No camera" not in status, status
    assert "Patches pca" in pca_text and "Patches similarity" in similarity_text, (pca_text, similarity_text)
    for received, acknowledged in (pca_counts, similarity_counts):
        assert acknowledged >= 8 and received - acknowledged <= 1, (received, acknowledged)
    assert tiles == 7  # the six sample images and the camera frame each have a best match
    assert not errors, errors
    rates = (
        f"panel camera, default model, {status.splitlines()[0]}\n"
        f"PCA mode: {pca_text}; pictures in the browser {pca_rate:.2f}/s\n"
        f"Similarity mode: {similarity_text}; pictures in the browser {similarity_rate:.2f}/s\n"
    )
    (artifacts / "camera-panel-fps.txt").write_text(rates)
    print(rates)


# Where the page gets no camera API at all: a page that is not a secure context (a Voila or Jupyter server opened
# over plain http on another host) and VS Code's webview have no navigator.mediaDevices. The test server is on
# 127.0.0.1, which browsers count as secure, so the API is taken away before the page's scripts run, as such a page
# would see it.
_NO_MEDIA_DEVICES = "Object.defineProperty(Navigator.prototype, 'mediaDevices', {get: () => undefined});"


@pytest.mark.parametrize(
    "case, flags, expected",
    [
        (
            "denied",
            ["--use-fake-device-for-media-stream", "--deny-permission-prompts"],
            ("No camera: The camera could not be opened (NotAllowedError", "Allow camera access"),
        ),
        (
            "insecure",
            ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"],
            ("No camera: This front end gives no camera", "https or localhost"),
        ),
    ],
)
def test_panel_camera_refused_says_so_on_the_status_line(
    jupyterlab, playwright_driver, tmp_path, artifacts, case, flags, expected
):
    """Camera permission denied, or no camera API (a page that is not secure): the panel's status line says
    why and what to do."""
    write_notebook(jupyterlab.root / f"camera_panel_{case}.ipynb", PANEL_CELLS)
    context, page = open_browser(playwright_driver, tmp_path / "profile", flags)
    if case == "insecure":
        context.add_init_script(_NO_MEDIA_DEVICES)
    try:
        run_notebook(page, jupyterlab, f"camera_panel_{case}.ipynb")
        page.locator(PATCHES_IMG).first.wait_for(state="visible", timeout=KERNEL_TIMEOUT_MS)
        page.locator("button.widget-toggle-button", has_text="Camera").first.click()
        page.wait_for_function(
            f"() => /No camera/.test(document.querySelector('{PANEL_STATUS}')?.textContent || '')",
            timeout=KERNEL_TIMEOUT_MS,
        )
        status = page.locator(PANEL_STATUS).first.inner_text()
        page.screenshot(path=artifacts / f"camera-panel-{case}.png", full_page=True)
    finally:
        context.close()
    assert all(part in status for part in expected), status

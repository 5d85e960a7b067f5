"""The panel in a real browser: JupyterLab and Voilà in headless Chromium, driven like a user would.

Each test opens ``notebooks/explorer.ipynb``, waits for the panel to draw its grid, uploads an image through the
panel's own upload button (the browser's file chooser), selects another stage in "Stages", and checks that the grid
image changed each time, that the status line reports no error and that the browser console stayed clean.
Screenshots of every step go to ``tests/artifacts/``. The JupyterLab test also takes the README's picture of the
panel: ``tests/artifacts/jupyterlab-panel-docs.png``, copied to ``docs/panel.png`` when that is missing or when
``EXPLORER_UPDATE_DOCS=1`` (so that a test run leaves the tree clean).

Run: ``.venv/bin/pytest tests/browser -q`` (needs Debian's Chromium: ``make browser-deps``).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.browser

# First kernel start, imports (torch, timm) and the model load take 20-40 s on two busy cores.
PANEL_TIMEOUT_MS = 240_000
# One forward pass and a redraw after a control changes.
UPDATE_TIMEOUT_MS = 90_000
UPLOAD_NAME = "test-pattern.jpg"

# Console errors that are not ours, each with its reason. A pattern must match the whole message as collected
# (``[type] text (url:line)``); keep the list short and explain each entry.
CONSOLE_NOISE: tuple[tuple[str, str], ...] = (
    (
        r"\[error\] Failed to load resource: net::ERR_\w+ "
        r"\(https://cdn\.jsdelivr\.net/npm/@fortawesome/fontawesome-free@[^/]+/css/(all|v4-shims)\.min\.css:0\)",
        "Voila's own lab template (voila/templates/lab/index.html.j2) links Font Awesome from a CDN; the test "
        "machines have no internet. Only the upload button's icon is missing.",
    ),
)

PANEL = ".widget-vbox:has(.explorer-status)"  # the outermost match is the Explorer itself (document order)
STATUS = ".explorer-status"
GRID = ".explorer-grid img.explorer-iv-img"  # the channel grid of the "Grid" tab (an ImageView)

# The grid's src is a blob URL (ipywidgets 8): fetch it in the page and hand the bytes back as base64.
_READ_GRID = """
async (panel, selector) => {
    const img = panel.querySelector(selector);
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return {src: img.src, data: btoa(text)};
}
"""

# A new grid is on show and the panel is done updating.
_GRID_REDRAWN = """
([panel, previous, grid, status]) => {
    const img = panel.querySelector(grid);
    const line = panel.querySelector(status);
    return Boolean(img && line && img.src && img.src !== previous && img.complete && img.naturalWidth > 0
        && !line.classList.contains("busy"));
}
"""


class Steps:
    """Screenshots of each step (the page, and the panel alone) under ``tests/artifacts/<name>-NN-<step>``."""

    def __init__(self, page, artifacts: Path, name: str) -> None:
        self.page, self.artifacts, self.name, self.count = page, artifacts, name, 0
        for old in artifacts.glob(f"{name}-*"):
            old.unlink()

    def path(self, step: str, suffix: str) -> Path:
        return self.artifacts / f"{self.name}-{self.count:02d}-{step}{suffix}"

    def shot(self, step: str, panel=None) -> None:
        self.count += 1
        self.page.screenshot(path=self.path(step, "-page.png"), full_page=True)
        if panel is not None:
            screenshot_panel(self.page, panel, self.path(step, "-panel.png"))

    def save_timings(self, timings: dict[str, float]) -> None:
        text = " ".join(f"{step}={seconds:.1f}s" for step, seconds in timings.items())
        (self.artifacts / f"{self.name}-timings.txt").write_text(text + "\n")
        print(f"{self.name}: {text}")


def screenshot_panel(page, panel, path: Path) -> None:
    """The whole panel. JupyterLab scrolls inside the notebook, not the page, so the viewport is made tall enough
    for the panel to fit, then put back."""
    viewport = page.viewport_size
    height = panel.bounding_box()["height"]
    page.set_viewport_size({"width": viewport["width"], "height": max(viewport["height"], int(height) + 300)})
    try:
        panel.evaluate("panel => panel.scrollIntoView({block: 'start'})")
        panel.screenshot(path=path, animations="disabled")
    finally:
        page.set_viewport_size(viewport)


def write_upload_image(path: Path) -> Path:
    """A JPEG unlike every sample image: colour ramps with a checkerboard and a disc."""
    y, x = np.mgrid[0:240, 0:320]
    rgb = np.stack([x * 255 // 319, y * 255 // 239, np.full_like(x, 128)], axis=-1)
    rgb[((x // 40 + y // 40) % 2 == 0) & (x < 160)] = (250, 250, 250)
    rgb[(x - 230) ** 2 + (y - 120) ** 2 < 60**2] = (20, 20, 160)
    Image.fromarray(rgb.astype(np.uint8)).save(path, quality=92)
    return path


def read_grid(panel) -> tuple[str, bytes]:
    """The grid's current ``src`` (a blob URL in ipywidgets 8) and the PNG bytes behind it."""
    result = panel.evaluate(_READ_GRID, GRID)
    return result["src"], base64.b64decode(result["data"])


def wait_for_grid(page, panel, previous_src: str | None, timeout: float) -> tuple[str, bytes]:
    """Wait until the grid shows a new image and the status line is no longer busy; return the new grid."""
    arg = [panel.element_handle(), previous_src or "", GRID, STATUS]
    page.wait_for_function(_GRID_REDRAWN, arg=arg, timeout=timeout)
    return read_grid(panel)


def select_labelled(panel, label: str):
    """The ``<select>`` of the panel's Dropdown or SelectMultiple whose description is exactly ``label``."""
    exact = panel.page.locator("label.widget-label", has_text=re.compile(f"^{re.escape(label)}$"))
    return panel.locator(".widget-inline-hbox", has=exact).locator("select").first


def assert_status_ok(panel) -> None:
    status = panel.locator(STATUS).first
    text = status.inner_text()
    classes = status.get_attribute("class") or ""
    assert "error" not in classes.split() and "Error" not in text, f"the panel reports an error: {text!r}"


def assert_png_image(data: bytes, artifacts: Path, name: str) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"the grid is not a PNG: {data[:16]!r}"
    (artifacts / name).write_bytes(data)
    pixels = np.asarray(Image.open(artifacts / name).convert("RGB"))
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50 and pixels.std() > 5, "the grid is blank"


# Notebook 7 only: its bundled keyboard-shortcut settings plugin (notebook_core.js, ``t.plugins[i].schema`` on a
# ``pluginChanged`` for a plugin it has not loaded) throws once as the page opens. Reproduced on a bare one-cell
# ``1+1`` notebook in notebook 7.6.5 with no explorer code, and with voila's, plotly's and anywidget's lab
# extensions disabled in turn.
NOTEBOOK7_NOISE: tuple[tuple[str, str], ...] = (
    (r"\[pageerror\] Cannot read properties of undefined \(reading 'schema'\)", "Notebook 7's own start-up"),
)


def assert_clean_console(page, noise: tuple[tuple[str, str], ...] = ()) -> None:
    patterns = (*CONSOLE_NOISE, *noise)
    errors = [e for e in page.errors if not any(re.fullmatch(rx, e, re.S) for rx, _ in patterns)]
    assert not errors, "browser console errors:\n" + "\n".join(errors)


def drive_panel(
    page,
    panel,
    steps: Steps,
    artifacts: Path,
    upload_file: Path,
    docs: Path | None = None,
    start: float | None = None,
):
    """The shared flow once the panel is on the page: wait for its grid, upload an image, then change the stage.
    ``docs``: where to save a picture of the panel as it opens; ``start``: when the page was asked for (the
    timings then say when the first grid came). Returns timings in seconds."""
    timings = {}
    panel.locator(GRID).first.wait_for(state="visible", timeout=PANEL_TIMEOUT_MS)
    src0, grid0 = wait_for_grid(page, panel, None, PANEL_TIMEOUT_MS)
    if start is not None:
        timings["first grid"] = time.monotonic() - start
    assert_status_ok(panel)
    assert_png_image(grid0, artifacts, f"{steps.name}-grid-0-opened.png")
    steps.shot("panel-ready", panel)
    if docs is not None:
        screenshot_panel(page, panel, artifacts / "jupyterlab-panel-docs.png")
        if not docs.exists() or os.environ.get("EXPLORER_UPDATE_DOCS") == "1":
            docs.parent.mkdir(exist_ok=True)
            shutil.copy(artifacts / "jupyterlab-panel-docs.png", docs)

    # Upload through the panel's own button: the click opens the browser's file chooser.
    image_select = select_labelled(panel, "Image")
    gallery = image_select.evaluate("select => select.options.length")
    start = time.monotonic()
    upload_button = panel.locator("button.widget-upload")
    assert upload_button.inner_text().startswith("Upload")
    with page.expect_file_chooser() as chooser_info:
        upload_button.click()
    chooser = chooser_info.value
    assert chooser.is_multiple()
    chooser.set_files(str(upload_file))
    page.wait_for_function(
        "([select, name]) => select.selectedOptions.length && select.selectedOptions[0].text.startsWith(name)",
        arg=[image_select.element_handle(), upload_file.name],
        timeout=UPDATE_TIMEOUT_MS,
    )
    src1, grid1 = wait_for_grid(page, panel, src0, UPDATE_TIMEOUT_MS)
    timings["upload"] = time.monotonic() - start
    assert image_select.evaluate("select => select.options.length") == gallery + 1, "the gallery did not grow"
    assert_status_ok(panel)
    assert grid1 != grid0, "the grid did not change after the upload"
    assert_png_image(grid1, artifacts, f"{steps.name}-grid-1-uploaded.png")
    steps.shot("uploaded", panel)

    # Another stage: click an option of the "Stages" list that is not selected (a plain click selects only it).
    stages = select_labelled(panel, "Stages")
    options = stages.locator("option")
    selected = stages.evaluate("select => [...select.options].map(o => o.selected)")
    assert len(selected) > 1, "the Stages list has a single stage"
    target = max(i for i, chosen in enumerate(selected) if not chosen)
    name = options.nth(target).inner_text()
    start = time.monotonic()
    options.nth(target).click()
    src2, grid2 = wait_for_grid(page, panel, src1, UPDATE_TIMEOUT_MS)
    timings["stage"] = time.monotonic() - start
    assert stages.evaluate("select => [...select.selectedOptions].map(o => o.text)") == [name]
    assert select_labelled(panel, "Show").evaluate("select => select.selectedOptions[0].text") == name
    assert_status_ok(panel)
    assert grid2 != grid1, f"the grid did not change after selecting stage {name}"
    assert_png_image(grid2, artifacts, f"{steps.name}-grid-2-{name}.png")
    steps.shot("stage-changed", panel)
    return timings


def wait_settled(page, panel, before: str) -> None:
    """Until the status line shows an update newer than ``before`` (its ``data-update`` count) and is no longer
    busy."""
    page.wait_for_function(
        """([panel, before]) => {
            const line = panel.querySelector(".explorer-status");
            return line && !line.classList.contains("busy") && line.dataset.update !== before;
        }""",
        arg=[panel.element_handle(), before],
        timeout=UPDATE_TIMEOUT_MS,
    )


def hover_click_and_tabs(page, panel, steps: Steps) -> None:
    """The pointer over a tile shows its channel and value; a click zooms it; Statistics and Compare draw."""
    grid = panel.locator(GRID).first
    box = grid.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    tip = panel.locator(".explorer-grid .explorer-iv-tip").first
    page.wait_for_function(
        "tip => /channel \\d+ · \\(\\d+, \\d+\\) · -?[\\d.e+-]+/.test(tip.textContent)",
        arg=tip.element_handle(),
        timeout=UPDATE_TIMEOUT_MS,
    )
    channel = int(re.match(r"channel (\d+)", tip.inner_text()).group(1))
    steps.shot("hover", panel)
    before = panel.locator(STATUS).first.get_attribute("data-update")
    page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    wait_settled(page, panel, before)
    zoom_title = panel.locator(".explorer-zoom .explorer-iv-title").first.inner_text()
    assert zoom_title.endswith(f"channel {channel}"), zoom_title
    mark = panel.locator(".explorer-grid .explorer-iv-mark").first  # the zoomed channel, outlined in the grid
    mark.wait_for(state="visible", timeout=UPDATE_TIMEOUT_MS)
    marked, clicked = mark.bounding_box(), (box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    assert marked["x"] <= clicked[0] <= marked["x"] + marked["width"] + 2
    assert marked["y"] <= clicked[1] <= marked["y"] + marked["height"] + 2
    zoom = panel.locator(".explorer-zoom img.explorer-iv-img").first.bounding_box()
    assert zoom["x"] > box["x"] + box["width"] - 1 and zoom["y"] < box["y"] + box["height"]  # beside the grid
    assert_status_ok(panel)
    open_tab(page, panel, "Statistics")
    panel.locator(".explorer-chart").first.wait_for(state="visible", timeout=UPDATE_TIMEOUT_MS)
    assert_status_ok(panel)
    steps.shot("statistics", panel)
    row = panel.locator(".explorer-click-html tr[data-channel]").nth(
        1
    )  # a row of the table zooms its channel
    picked = row.get_attribute("data-channel")
    before = panel.locator(STATUS).first.get_attribute("data-update")
    row.click()
    wait_settled(page, panel, before)
    selected = panel.locator(".explorer-click-html tr.selected").first  # the zoomed channel's row, bold
    assert selected.get_attribute("data-channel") == picked
    compare_tab(page, panel, steps)


def open_tab(page, panel, title: str) -> None:
    """Click a tab of the panel and wait until the update it asked for is shown."""
    before = panel.locator(STATUS).first.get_attribute("data-update")
    panel.locator(".lm-TabBar-tab", has_text=title).first.click()
    wait_settled(page, panel, before)


def wait_drawn(page, image) -> None:
    """An ``<img>`` visible with decoded pixels (not a broken-image icon, not an empty box)."""
    image.wait_for(state="visible", timeout=UPDATE_TIMEOUT_MS)
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=UPDATE_TIMEOUT_MS
    )


def compare_tab(page, panel, steps: Steps) -> None:
    """Compare, in "Images" mode: images A and B and their difference drawn."""
    open_tab(page, panel, "Compare")
    before = panel.locator(STATUS).first.get_attribute("data-update")
    panel.locator(".widget-toggle-button", has_text="Images").first.click()
    wait_settled(page, panel, before)
    images = panel.locator(".widget-tab-contents .explorer-iv-img:visible")  # A, B and their difference
    for i in range(3):
        wait_drawn(page, images.nth(i))
    assert_status_ok(panel)
    steps.shot("compare", panel)


def cam_and_dataset_tabs(page, panel, steps: Steps) -> None:
    """The CAM tab draws its map, with a target chosen; the Dataset tab scans the sample images into crops."""
    open_tab(page, panel, "CAM")
    wait_drawn(page, panel.locator("img.explorer-cam").first)
    target = select_labelled(panel, "Target")
    assert target.evaluate("select => select.selectedOptions.length && select.selectedOptions[0].text") != ""
    assert_status_ok(panel)
    steps.shot("cam", panel)
    open_tab(page, panel, "Dataset")
    panel.locator("button", has_text="Sample images").first.click()
    captions = panel.locator(".explorer-caption")
    captions.nth(8).wait_for(timeout=PANEL_TIMEOUT_MS)
    for crop in panel.locator(".explorer-crops img").all()[:3]:
        wait_drawn(page, crop)
    heights = {round(img.bounding_box()["height"]) for img in panel.locator(".explorer-crops img").all()}
    assert len(heights) == 1, f"crops of several heights: {heights}"
    widths = {round(caption.bounding_box()["width"]) for caption in captions.all()}
    crop_width = round(panel.locator(".explorer-crops img").first.bounding_box()["width"])
    assert max(widths) <= crop_width, f"captions wider than their crop: {widths} > {crop_width}"
    assert_status_ok(panel)
    steps.shot("dataset", panel)


def patches_opened(page, panel, steps: Steps):
    """The Patches tab draws the gallery's PCA colours; returns their image."""
    open_tab(page, panel, "Patches")
    colours = panel.locator(".explorer-patches img.explorer-iv-img").first
    wait_drawn(page, colours)
    assert_status_ok(panel)
    steps.shot("patches-pca", panel)
    return colours


def patches_tab(page, panel, steps: Steps) -> None:
    """The Patches tab draws the gallery's PCA colours; a click on an image shows every image's similarity to that
    location, with the query and the best matches outlined, and the value under the pointer."""
    colours = patches_opened(page, panel, steps)
    pca_src = colours.get_attribute("src")
    images = panel.locator(".explorer-patch-images img.explorer-iv-img").first
    box = images.bounding_box()
    before = panel.locator(STATUS).first.get_attribute("data-update")
    page.mouse.click(box["x"] + box["height"] * 0.5, box["y"] + box["height"] * 0.5)  # image 0, its centre
    wait_settled(page, panel, before)
    page.wait_for_function(
        "([img, before]) => img.src !== before && img.complete && img.naturalWidth > 0",
        arg=[colours.element_handle(), pca_src],
        timeout=UPDATE_TIMEOUT_MS,
    )
    chosen = panel.locator(".widget-toggle-button.mod-active", has_text="Similarity")
    assert chosen.count() == 1, "a click did not switch to Similarity"
    query = panel.locator(".explorer-patches .explorer-iv-cell.query").first
    query.wait_for(state="visible", timeout=UPDATE_TIMEOUT_MS)
    cell = query.bounding_box()
    assert cell["x"] < box["x"] + box["height"] and cell["y"] < box["y"] + box["height"] + 400
    gallery = len(panel.locator(".explorer-patches .explorer-iv-cell.best").all())
    assert gallery >= 2, f"best matches outlined: {gallery}"
    maps = colours.bounding_box()
    page.mouse.move(maps["x"] + maps["width"] * 0.75, maps["y"] + maps["height"] * 0.5)
    tip = panel.locator(".explorer-patches .explorer-iv-tip").first
    page.wait_for_function(
        "tip => /image \\d+ · \\(\\d+, \\d+\\) · -?[\\d.e+-]+/.test(tip.textContent)",
        arg=tip.element_handle(),
        timeout=UPDATE_TIMEOUT_MS,
    )
    assert_status_ok(panel)
    steps.shot("patches-similarity", panel)


def open_every_tab(page, panel, steps: Steps) -> None:
    """Each tab with model work (Grid, CAM, Dataset, Compare, Patches) opened, its first view drawn."""
    wait_drawn(page, panel.locator(GRID).first)  # the Grid: on show, drawn
    cam_and_dataset_tabs(page, panel, steps)
    compare_tab(page, panel, steps)
    patches_opened(page, panel, steps)


def run_all(page) -> None:
    """Run → Run All Cells (JupyterLab and Notebook 7 share the menu), then wait until every code cell ran."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll(".jp-CodeCell .jp-InputArea-prompt")];
            return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
        }""",
        timeout=PANEL_TIMEOUT_MS,
    )


def test_jupyterlab_panel(jupyterlab, page, artifacts, tmp_path):
    steps = Steps(page, artifacts, "jupyterlab")
    upload_file = write_upload_image(tmp_path / UPLOAD_NAME)
    page.set_viewport_size({"width": 1280, "height": 1000})  # a laptop: the zoom must stay beside the grid
    start = time.monotonic()
    page.goto(f"{jupyterlab.url}/lab/tree/explorer.ipynb?token={jupyterlab.token}")
    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(timeout=PANEL_TIMEOUT_MS)
    # The kernel is started with the notebook; wait until the status bar says it is idle before running.
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=PANEL_TIMEOUT_MS)
    # A fresh workspace opens the file browser; close it so the notebook (and the panel) gets the width.
    open_sidebar_tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if open_sidebar_tab.count():
        open_sidebar_tab.first.click()
    steps.shot("notebook-open")

    run_all(page)
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=PANEL_TIMEOUT_MS)
    panel = page.locator(PANEL).first
    # The README's picture (docs/panel.png): the panel as it opens in JupyterLab.
    timings = drive_panel(page, panel, steps, artifacts, upload_file, docs=ROOT / "docs" / "panel.png")
    hover_click_and_tabs(page, panel, steps)
    cam_and_dataset_tabs(page, panel, steps)
    patches_tab(page, panel, steps)
    timings["total"] = time.monotonic() - start
    steps.save_timings(timings)
    assert_clean_console(page)


def test_notebook7_panel(notebook7, page, artifacts, tmp_path):
    steps = Steps(page, artifacts, "notebook7")
    upload_file = write_upload_image(tmp_path / UPLOAD_NAME)
    start = time.monotonic()
    page.goto(f"{notebook7.url}/notebooks/explorer.ipynb?token={notebook7.token}")
    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(timeout=PANEL_TIMEOUT_MS)
    page.locator(".jp-KernelName", has_text="Python").first.wait_for(timeout=PANEL_TIMEOUT_MS)
    steps.shot("notebook-open")
    run_all(page)
    panel = page.locator(PANEL).first
    timings = drive_panel(page, panel, steps, artifacts, upload_file)
    open_every_tab(page, panel, steps)
    timings["total"] = time.monotonic() - start
    steps.save_timings(timings)
    assert_clean_console(page, NOTEBOOK7_NOISE)


def test_voila_panel(voila, page, artifacts, tmp_path):
    """Voilà's page holds the panel alone (no other output: the notebook has one code cell), shown while the model
    still loads; then every tab draws."""
    steps = Steps(page, artifacts, "voila")
    upload_file = write_upload_image(tmp_path / UPLOAD_NAME)
    start = time.monotonic()
    page.goto(f"{voila.url}/", timeout=PANEL_TIMEOUT_MS)
    panel = page.locator(PANEL).first
    panel.locator(STATUS).first.wait_for(state="visible", timeout=PANEL_TIMEOUT_MS)
    timings = {"panel visible": time.monotonic() - start}
    first_status = panel.locator(STATUS).first.inner_text()
    steps.shot("panel-visible", panel)
    outputs = page.locator("#rendered_cells .jp-OutputArea-output")
    assert outputs.count() == 1, "Voilà shows more than the panel: " + repr(outputs.all_inner_texts())
    assert outputs.first.locator(STATUS).count() >= 1, "the one output is not the panel"
    timings.update(drive_panel(page, panel, steps, artifacts, upload_file, start=start))
    open_every_tab(page, panel, steps)
    timings["total"] = time.monotonic() - start
    steps.save_timings(timings)
    (artifacts / "voila-first-status.txt").write_text(first_status + "\n")
    assert_clean_console(page)

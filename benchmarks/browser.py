"""The panel in a real browser: JupyterLab in headless Chromium, clicked until each view has settled.

``python -m benchmarks.browser [--quick] [--label after] [--source PATH]`` opens a notebook with
``app = explorer.Explorer(out_indices=[0, 1])`` and measures, page-side, from the input event (a click, a key, a
file chosen) to

- ``first``: the first image of the panel decoded after it (the new grid, usually), and
- ``settled``: the status line no longer busy and showing the new update, every image decoded, and two
  animation frames painted (so a script busy redrawing a chart is counted),

and the websocket traffic per change (frames and bytes from the kernel, frames back). In the Patches tab (at
``blocks.0``, the default view's stage), a similarity click is timed the same way (a click on the gallery's
images, each at a new location: every image's map redrawn); then the panel's Camera (Chromium's fake camera
playing a clip written here, as ``tests/browser/test_camera_browser.py`` does) feeds it, and the pictures drawn a
second in the browser are counted in Similarity and in PCA mode. Opening: time from "Run
All Cells" to the panel visible (its status line) and to its first grid, and the bytes received until then.

Then the kernel under a large model: the panel is switched to ``convnext_base`` at 448x448 px (random weights, from
a timm folder written here whose ``pretrained_cfg`` says 448) showing its last stage, a new image is chosen (a
full forward, seconds on a CPU), and while that forward runs the colour map is changed: ``first`` is then the
time to the grid redrawn in the new colours (the status line still busy with the forward), ``forward_s`` how
long the forward took.

``--source`` runs another checkout of explorer (for example a ``git worktree`` of an older revision) in the
kernel, through ``PYTHONPATH``, so that revisions are measured the same way. Results go to
``benchmarks/browser.json`` (one entry per label) and to the "Panel in the browser" section of ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The harness is imported by path: a package named ``tests`` in site-packages (horama ships one) would shadow
# this checkout's ``tests`` folder, which is not a package.
sys.path.insert(0, str(ROOT / "tests" / "browser"))

from harness import (  # noqa: E402
    WATCH_PICTURES,
    fake_camera,
    launch_chromium,
    picture_rate,
    start_jupyterlab,
    stop_server,
    write_y4m,
)

OUT = ROOT / "benchmarks"
"""Where ``browser.json`` and ``RESULTS.md`` are by default (``--out`` names another folder)."""
BEGIN, END = "<!-- browser: written by python -m benchmarks.browser -->", "<!-- /browser -->"
PANEL = ".widget-vbox:has(.explorer-status)"
OPEN_TIMEOUT_MS = 300_000
CHANGE_TIMEOUT_MS = 120_000
PATCHES_IMG = ".explorer-patches img.explorer-iv-img"  # the PCA colours or similarity maps of the gallery
CAMERA_PICTURES = 12  # new pictures counted for a camera rate, after the first frames of a mode
CLICK_TARGET_MS, CAMERA_TARGET_FPS = 100, 10  # issue 21's targets

NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "bench",
            "metadata": {},
            "outputs": [],
            "source": ["import explorer\n", "app = explorer.Explorer(out_indices=[0, 1])"],
        }
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}

# Page-side timing of one change: armed before the input, resolved when the panel has settled.
_ARM = """
(panel) => {
    const status = () => {
        const line = panel.querySelector(".explorer-status");
        return {busy: !line || line.classList.contains("busy"), text: line ? line.textContent + (line.dataset.update || "") : ""};
    };
    const before = status().text;
    window.__bench = new Promise((resolve) => {
        let start = null, first = null, done = false;
        const events = ["pointerdown", "keydown", "change"];
        const onInput = (event) => { if (start === null) start = event.timeStamp; };
        const onLoad = (event) => {
            if (start !== null && first === null && event.target.tagName === "IMG") first = performance.now();
            check();
        };
        const finish = (result) => {
            if (done) return;
            done = true;
            observer.disconnect();
            events.forEach((name) => document.removeEventListener(name, onInput, true));
            panel.removeEventListener("load", onLoad, true);
            resolve(result);
        };
        const check = () => {
            if (start === null || done) return;
            const now = status();
            if (now.busy || now.text === before) return;
            if ([...panel.querySelectorAll("img")].some((img) => img.src && !img.complete)) return;
            requestAnimationFrame(() => requestAnimationFrame(() => {
                const end = performance.now();
                finish({first: first === null ? null : first - start, settled: end - start, status: now.text});
            }));
        };
        const observer = new MutationObserver(check);
        observer.observe(panel, {subtree: true, childList: true, characterData: true, attributes: true});
        events.forEach((name) => document.addEventListener(name, onInput, true));
        panel.addEventListener("load", onLoad, true);
        setTimeout(() => finish({first: null, settled: null, status: "timed out: " + status().text}), TIMEOUT);
    });
}
""".replace("TIMEOUT", str(CHANGE_TIMEOUT_MS))


class Traffic:
    """Websocket frames from and to the kernel since the last :meth:`reset`."""

    def __init__(self, page) -> None:
        self.received, self.sent, self.bytes = 0, 0, 0
        page.on("websocket", self._attach)

    def _attach(self, socket) -> None:
        socket.on("framereceived", self._in)
        socket.on("framesent", lambda _payload: setattr(self, "sent", self.sent + 1))

    def _in(self, payload) -> None:
        self.received += 1
        self.bytes += len(payload)

    def reset(self) -> None:
        self.received, self.sent, self.bytes = 0, 0, 0

    def snapshot(self) -> dict:
        return {"frames_in": self.received, "bytes_in": self.bytes, "frames_out": self.sent}


def _select(panel, label: str):
    import re

    exact = panel.page.locator("label.widget-label", has_text=re.compile(f"^{re.escape(label)}$"))
    return panel.locator(".widget-inline-hbox", has=exact).first


def _upload_file(folder: Path, index: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:480, 0:640]
    rgb = np.stack([x * 255 // 639, y * 255 // 479, np.full_like(x, 40 * index % 255)], -1).astype(np.uint8)
    rgb[rng.integers(0, 480, 200), rng.integers(0, 640, 200)] = 255
    path = folder / f"upload-{index}.jpg"
    Image.fromarray(rgb).save(path, quality=90)
    return path


def _changes(panel, page, folder: Path):
    """Each kind of change: (name, prepare, act), alternating values on every call."""
    state = {"i": 0}

    def typed(label: str, values):
        box = _select(panel, label).locator("input").first

        def prepare():
            box.fill(str(values[state["i"] % len(values)]))

        return prepare, lambda: box.press("Enter")

    def chosen(label: str, values):
        select = _select(panel, label).locator("select").first
        return None, lambda: select.select_option(label=values[state["i"] % len(values)])

    def page_step():
        handle = _select(panel, "Page").locator(".noUi-handle, .slider-handle, [role=slider]").first
        handle.focus()
        handle.press("ArrowRight")  # to page 1: the stage change before each repeat's page change resets it

    def image():
        select = _select(panel, "Image").locator("select").first
        select.select_option(index=1 + state["i"] % 5)

    def upload():
        with page.expect_file_chooser() as chooser:
            panel.locator("button.widget-upload").first.click()
        chooser.value.set_files(str(_upload_file(folder, state["i"])))

    def checkpoint():
        panel.locator("label", has_text="pretrained").locator("input[type=checkbox]").first.click()

    kinds = {
        "colour map": typed("Colours", ["magma", "viridis"]),
        "normalisation": chosen("Norm", ["stage", "channel"]),
        "page": (None, page_step),
        "zoom channel": typed("Channel", [3, 5]),
        "stage (captured)": chosen("Show", ["blocks.0"]),  # and back to blocks.1 after (see run)
        "new image": (None, image),
        "upload": (None, upload),
        "checkpoint (pretrained <-> random)": (None, checkpoint),
    }
    return state, kinds


def _measure(page, panel, traffic: Traffic, prepare, act) -> dict:
    if prepare is not None:
        prepare()
    page.wait_for_timeout(300)  # let anything the preparation sent settle first
    traffic.reset()
    panel.evaluate(_ARM)
    act()
    result = page.evaluate("() => window.__bench")
    page.wait_for_timeout(300)  # trailing frames count as traffic of this change
    return {**result, **traffic.snapshot()}


def _settle_or_show(page, screenshot: Path, condition: str, panel) -> None:
    """Wait for ``condition(panel)``; on a timeout, keep a screenshot and say what the status line said."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(condition, arg=panel, timeout=OPEN_TIMEOUT_MS)
    except PlaywrightTimeout:
        page.screenshot(path=screenshot, full_page=True)
        status = page.locator(".explorer-status").first.inner_text()
        raise RuntimeError(
            f"the panel did not settle (screenshot {screenshot}); status: {status!r}"
        ) from None


LARGE_MODEL = {
    "architecture": "convnext_base",
    "num_classes": 1000,
    "pretrained_cfg": {
        "input_size": [3, 448, 448],
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    },
}


# The grid redrawn after a key press (the colour map's Enter), and whether the status line was still busy then.
_ARM_GRID = """
(panel) => {
    window.__grid = new Promise((resolve) => {
        let start = null;
        const onKey = (event) => { if (start === null) start = event.timeStamp; };
        const done = (result) => {
            document.removeEventListener("keydown", onKey, true);
            panel.removeEventListener("load", onLoad, true);
            resolve(result);
        };
        const onLoad = (event) => {
            if (start === null || event.target.tagName !== "IMG" || !event.target.closest(".explorer-grid")) return;
            const busy = panel.querySelector(".explorer-status").classList.contains("busy");
            done({first: performance.now() - start, busy});
        };
        document.addEventListener("keydown", onKey, true);
        panel.addEventListener("load", onLoad, true);
        setTimeout(() => done({first: null, busy: null}), TIMEOUT);
    });
}
""".replace("TIMEOUT", str(CHANGE_TIMEOUT_MS))

_SETTLED = """([panel, before]) => {
    const line = panel.querySelector(".explorer-status");
    return line && !line.classList.contains("busy") && line.dataset.update !== before;
}"""


def _large_model(page, panel, folder: Path, repeats: int) -> dict:
    """A display change while convnext_base runs a 448 px forward (see the module docs)."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LARGE_MODEL))
    status = panel.locator(".explorer-status").first

    def act_and_settle(act) -> None:
        before = status.get_attribute("data-update")
        act()
        page.wait_for_function(_SETTLED, arg=[panel.element_handle(), before], timeout=OPEN_TIMEOUT_MS)

    pretrained = panel.locator("label", has_text="pretrained").locator("input[type=checkbox]").first
    if pretrained.is_checked():
        act_and_settle(pretrained.click)
    box = _select(panel, "Checkpoint").locator("input").first
    box.fill(str(folder))
    act_and_settle(lambda: box.press("Enter"))
    assert "convnext_base-448" in status.inner_text(), status.inner_text()
    stages = _select(panel, "Stages").locator("option")
    act_and_settle(stages.nth(stages.count() - 1).click)  # the last stage: the whole forward
    image, colours = (
        _select(panel, "Image").locator("select").first,
        _select(panel, "Colours").locator("input"),
    )
    rows = []
    for i in range(repeats):
        before = status.get_attribute("data-update")
        started = time.monotonic()
        image.select_option(index=(2 + i) % 6)  # a new image: a forward pass in the engine
        page.wait_for_function(  # the status line is redrawn on each update: asked of the panel each time
            "(panel) => panel.querySelector('.explorer-status').classList.contains('busy')",
            arg=panel.element_handle(),
            timeout=CHANGE_TIMEOUT_MS,
        )
        page.wait_for_timeout(300)  # well into the forward
        colours.first.fill("viridis" if colours.first.input_value() != "viridis" else "magma")  # a change
        panel.evaluate(_ARM_GRID)
        colours.first.press("Enter")
        result = page.evaluate("() => window.__grid")
        page.wait_for_function(_SETTLED, arg=[panel.element_handle(), before], timeout=OPEN_TIMEOUT_MS)
        rows.append({**result, "forward_s": time.monotonic() - started})
    return {
        "first_ms": _median([r["first"] for r in rows]),
        "forward_s": _median([r["forward_s"] for r in rows]),
        "during_forward": sum(bool(r["busy"]) for r in rows),
        "samples": rows,
    }


def _patches(page, panel, traffic: Traffic, repeats: int, screenshot: Path) -> dict:
    """A similarity click in the Patches tab, then the live camera's pictures a second in each mode (see the
    module docs); the camera is switched off again (its last frame stays in the gallery) and the Grid tab shown."""
    _select(panel, "Show").locator("select").first.select_option(label="blocks.0")
    page.wait_for_timeout(1500)
    panel.locator(".lm-TabBar-tab", has_text="Patches").first.click()
    panel.locator(PATCHES_IMG).first.wait_for(state="visible", timeout=OPEN_TIMEOUT_MS)
    page.wait_for_timeout(1500)
    strip = panel.locator(".explorer-patch-images img.explorer-iv-img").first
    clicks = []
    for i in range(repeats + 1):  # the first click switches PCA to Similarity: not counted
        box = strip.bounding_box()
        x = box["x"] + box["height"] * (0.3 + 0.1 * (i % 5))  # image 0, a new location each time
        y = box["y"] + box["height"] * (0.6 - 0.07 * (i % 4))
        result = _measure(page, panel, traffic, None, lambda x=x, y=y: page.mouse.click(x, y))
        if i:
            clicks.append(result)
    camera = panel.locator("button.widget-toggle-button", has_text="Camera").first
    camera.click()
    panel.locator(".explorer-camera video").first.wait_for(timeout=OPEN_TIMEOUT_MS)
    rates = {}
    for mode, title in (("similarity", "Similarity"), ("pca", "PCA")):
        panel.locator(".widget-toggle-button", has_text=title).first.click()
        page.wait_for_timeout(
            3000
        )  # the mode's first frames (a capture of the gallery, a fit) are not counted
        page.evaluate(WATCH_PICTURES, [PATCHES_IMG, f"camera_{mode}"])
        rates[mode] = picture_rate(page, f"camera_{mode}", CAMERA_PICTURES, CHANGE_TIMEOUT_MS)
    page.screenshot(path=screenshot)
    camera.click()
    page.wait_for_timeout(1500)
    panel.locator(".lm-TabBar-tab", has_text="Grid").first.click()
    page.wait_for_timeout(1500)
    return {
        "click_first_ms": _median([r["first"] for r in clicks]),
        "click_settled_ms": _median([r["settled"] for r in clicks]),
        "click_bytes_in": _median([r["bytes_in"] for r in clicks]),
        "click_samples": clicks,
        "camera_fps": rates,
    }


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run(label: str, repeats: int, source: Path, artifacts: Path) -> dict:
    """Open the panel in JupyterLab and time each kind of change ``repeats`` times; returns the results."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="explorer-browser-bench-") as tmp:
        home = Path(tmp)
        root = home / "notebooks"
        for sub in ("notebooks", "config", "data", "runtime", "ipython", "settings", "workspaces"):
            (home / sub).mkdir()
        (root / "bench.ipynb").write_text(json.dumps(NOTEBOOK))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]).strip(
            os.pathsep
        )
        os.environ["HF_HUB_OFFLINE"] = "1"
        server = start_jupyterlab(home, root)
        try:
            with sync_playwright() as driver:
                clip = write_y4m(home / "moving-disc.y4m")
                context = launch_chromium(driver, home / "profile", fake_camera(clip))
                context.set_default_timeout(CHANGE_TIMEOUT_MS)
                page = context.pages[0] if context.pages else context.new_page()
                traffic = Traffic(page)
                page.goto(f"{server.url}/lab/tree/bench.ipynb?token={server.token}")
                page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(
                    timeout=OPEN_TIMEOUT_MS
                )
                page.wait_for_timeout(1000)
                traffic.reset()
                start = time.monotonic()
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
                page.locator(".explorer-status").first.wait_for(state="visible", timeout=OPEN_TIMEOUT_MS)
                visible = time.monotonic() - start
                panel = page.locator(PANEL).first
                _settle_or_show(
                    page,
                    artifacts / f"browser-bench-{label}-FAILED.png",
                    """(panel) => {
                        const line = panel.querySelector(".explorer-status");
                        const imgs = [...panel.querySelectorAll(".widget-tab-contents img")].filter((i) => i.src && i.offsetParent !== null);
                        return line && !line.classList.contains("busy") && /updated in/.test(line.textContent)
                            && imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
                    }""",
                    panel.element_handle(),
                )
                drawn = time.monotonic() - start
                page.wait_for_timeout(1000)
                opening = {"visible_s": visible, "first_grid_s": drawn, **traffic.snapshot()}
                page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").first.click()
                page.screenshot(path=artifacts / f"browser-bench-{label}-opened.png")
                # first, while the gallery holds the sample images alone and the default's packaged weights
                patches = _patches(
                    page, panel, traffic, repeats, artifacts / f"browser-bench-{label}-camera.png"
                )
                state, kinds = _changes(panel, page, home)
                # blocks.1 (24 channels) at 16 a page has two pages, for the page change
                _select(panel, "Show").locator("select").first.select_option(label="blocks.1")
                page.wait_for_timeout(1500)
                _select(panel, "Per page").locator("select").first.select_option(label="16")
                page.wait_for_timeout(1500)
                samples: dict[str, list[dict]] = {name: [] for name in kinds}
                for i in range(repeats):
                    for name, (prepare, act) in kinds.items():
                        state["i"] = i
                        samples[name].append(_measure(page, panel, traffic, prepare, act))
                        if name.startswith("stage"):  # the page change needs blocks.1's two pages
                            _select(panel, "Show").locator("select").first.select_option(label="blocks.1")
                            page.wait_for_timeout(1500)
                page.screenshot(path=artifacts / f"browser-bench-{label}-end.png")
                large = _large_model(page, panel, home / "convnext_base-448", repeats)
                page.screenshot(path=artifacts / f"browser-bench-{label}-large.png")
                context.close()
        finally:
            stop_server(server.process)
    changes = {
        name: {
            "first_ms": _median([s["first"] for s in rows]),
            "settled_ms": _median([s["settled"] for s in rows]),
            "frames_in": _median([s["frames_in"] for s in rows]),
            "bytes_in": _median([s["bytes_in"] for s in rows]),
            "frames_out": _median([s["frames_out"] for s in rows]),
            "timed_out": sum(s["settled"] is None for s in rows),
            "samples": rows,
        }
        for name, rows in samples.items()
    }
    return {
        "label": label,
        "repeats": repeats,
        "source": str(source),
        "opening": opening,
        "changes": changes,
        "patches": patches,
        "large_model": large,
    }


def _cell(value, unit: str = "", scale: float = 1.0, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value * scale:,.{digits}f}{unit}"


def markdown(results: dict) -> str:
    """The RESULTS.md section: one column pair per label (first image / settled), traffic per change."""
    labels = list(results)
    lines = [
        BEGIN,
        "## Panel in the browser",
        "",
        "`python -m benchmarks.browser`: JupyterLab 4 in headless Chromium on this machine, the default model, "
        "`Explorer(out_indices=[0, 1])`; each change timed page-side from the input event to the first image "
        "decoded (*first*) and to the panel settled (*settled*: status no longer busy, every image decoded, two "
        "frames painted); medians. Traffic: websocket frames and bytes from the kernel for the change, and frames "
        "the page sent back. The panel's targets, for the default model on a quiet machine: display-only changes "
        "(colour map, normalisation, page, zoom) under 100 ms settled, a captured stage under 150 ms, a new image "
        "or upload under 400 ms; opening under 1.5 MB, the panel visible within 1 s.",
        "",
    ]
    for label in labels:
        entry = results[label]
        opening = entry["opening"]
        lines.append(
            f"- **{label}** ({entry['repeats']} repeats, {entry.get('date', '')}, revision "
            f"{entry.get('revision', '?')}): panel visible {opening['visible_s']:.1f} s after Run, first grid "
            f"{opening['first_grid_s']:.1f} s, {opening['bytes_in'] / 2**20:.2f} MB in {opening['frames_in']} "
            "frames received until then." + (f" {entry['note']}" if entry.get("note") else "")
        )
        large = entry.get("large_model")
        if large:
            lines.append(
                f"  During a convnext_base forward at 448 px (median {large['forward_s']:.1f} s from the image "
                f"chosen to the panel settled), a colour-map change redrew the grid in "
                f"{_cell(large['first_ms'])} ms (median of {len(large['samples'])}; "
                f"{large['during_forward']} of them while the forward still ran)."
            )
        patches = entry.get("patches")
        if patches:
            settled, fps = patches["click_settled_ms"], patches["camera_fps"]
            met = settled is not None and settled < CLICK_TARGET_MS
            lines.append(
                f"  Patches tab at blocks.0 (112x112 grid; the 6 sample images, then the camera's frame too): a "
                f"similarity click settled in "
                f"{_cell(settled)} ms (first image {_cell(patches['click_first_ms'])} ms, "
                f"{_cell(patches['click_bytes_in'], scale=1 / 1024)} KB in; median of "
                f"{len(patches['click_samples'])}; target < {CLICK_TARGET_MS} ms: {'met' if met else 'not met'}). "
                f"The live camera (fake, 320x240 frames) drawn at {fps['pca']:.2f} pictures/s in PCA mode and "
                f"{fps['similarity']:.2f} in Similarity mode (target >= {CAMERA_TARGET_FPS}: "
                f"{sum(v >= CAMERA_TARGET_FPS for v in fps.values())} of 2 met)."
            )
    lines += [
        "",
        "| change | "
        + " | ".join(f"{label} first / settled ms" for label in labels)
        + " | "
        + " | ".join(f"{label} frames in / KB in / frames out" for label in labels)
        + " |",
    ]
    lines.append("|---" * (1 + 2 * len(labels)) + "|")
    for name in results[labels[0]]["changes"]:
        times, traffic = [], []
        for label in labels:
            change = results[label]["changes"].get(name, {})
            times.append(f"{_cell(change.get('first_ms'))} / {_cell(change.get('settled_ms'))}")
            traffic.append(
                f"{_cell(change.get('frames_in'))} / {_cell(change.get('bytes_in'), scale=1 / 1024)} / "
                f"{_cell(change.get('frames_out'))}"
            )
        lines.append(f"| {name} | " + " | ".join(times) + " | " + " | ".join(traffic) + " |")
    patches = [results[label].get("patches") or {} for label in labels]
    if any(patches):
        clicks = [f"{_cell(p.get('click_first_ms'))} / {_cell(p.get('click_settled_ms'))}" for p in patches]
        clicks += [f"n/a / {_cell(p.get('click_bytes_in'), scale=1 / 1024)} / n/a" for p in patches]
        lines.append(
            f"| similarity click, Patches (target < {CLICK_TARGET_MS} ms settled) | "
            + " | ".join(clicks)
            + " |"
        )
        rates = [
            " / ".join(f"{p['camera_fps'][m]:.2f}" if p else "n/a" for m in ("pca", "similarity")) + " per s"
            for p in patches
        ]
        lines.append(
            f"| live camera, PCA / Similarity pictures drawn (target >= {CAMERA_TARGET_FPS} per s) | "
            + " | ".join(rates + ["n/a"] * len(labels))
            + " |"
        )
    lines.append(END)
    return "\n".join(lines)


def write(results: dict, out: Path = OUT) -> None:
    """Write ``browser.json`` and the browser section of ``RESULTS.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "browser.json").write_text(json.dumps(results, indent=1) + "\n")
    markdown_path = out / "RESULTS.md"
    text = markdown_path.read_text() if markdown_path.exists() else ""
    section = markdown(results)
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    markdown_path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    import subprocess

    parser = argparse.ArgumentParser(prog="python -m benchmarks.browser", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 5")
    parser.add_argument("--label", default="after", help="the name of this run in the results")
    parser.add_argument("--source", type=Path, default=ROOT, help="the explorer checkout the kernel imports")
    parser.add_argument(
        "--note", default="", help="conditions of the run, for the report (load, concurrency)"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="where browser.json and RESULTS.md are")
    args = parser.parse_args(argv)
    artifacts = ROOT / "tests" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    entry = run(args.label, 3 if args.quick else 5, args.source.resolve(), artifacts)
    revision = subprocess.run(
        ["git", "-C", str(args.source), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    entry.update(
        revision=revision or "?", date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), note=args.note
    )
    saved = args.out / "browser.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    results[args.label] = entry
    write(results, args.out)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Browser-test set-up: JupyterLab, Notebook 7 and Voilà servers on 127.0.0.1, and headless Chromium driven by Playwright.

Each server runs from a temporary copy of ``notebooks/`` (running the notebook in JupyterLab saves it) with its own
Jupyter config, data, runtime and settings folders, so nothing from the user's set-up leaks in and no first-run
pop-up (news, update checks) covers the page. Kernels inherit the servers' environment: ``HF_HUB_OFFLINE=1``.

Chromium is Debian's (``make browser-deps``); Playwright never downloads a browser. The tests are skipped, with a
message, when it is missing, except in CI (``CI`` set), where they fail.

Screenshots and the grid PNGs go to ``tests/artifacts/`` (gitignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import (
    BIN,
    CHROMIUM,
    Server,
    free_port,
    launch_chromium,
    server_env,
    start_jupyterlab,
    start_server,
    stop_server,
)

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "tests" / "artifacts"


def pytest_collection_modifyitems(config, items):
    if CHROMIUM.exists() or os.environ.get("CI"):
        return  # in CI a missing browser fails the tests instead of skipping them
    skip = pytest.mark.skip(
        reason=f"no Chromium at {CHROMIUM}: run `make browser-deps` (apt-get install chromium)"
    )
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


def _workspace(tmp_path_factory, name: str) -> tuple[Path, Path]:
    """A fresh home for one server (config, data, settings) and a copy of the notebooks to serve."""
    home = tmp_path_factory.mktemp(name)
    root = home / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    for sub in ("config", "data", "runtime", "ipython", "settings", "workspaces"):
        (home / sub).mkdir()
    return home, root


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def jupyterlab(tmp_path_factory, artifacts) -> Iterator[Server]:
    """``jupyter-lab`` on a free 127.0.0.1 port, serving a copy of ``notebooks/``."""
    home, root = _workspace(tmp_path_factory, "jupyterlab")
    server = start_jupyterlab(home, root)
    yield server
    stop_server(server.process)
    shutil.copy(server.log, artifacts / "jupyterlab.log")


@pytest.fixture(scope="session")
def notebook7(tmp_path_factory, artifacts) -> Iterator[Server]:
    """Jupyter Notebook 7 (``jupyter-notebook``) on a free 127.0.0.1 port, serving a copy of ``notebooks/``."""
    home, root = _workspace(tmp_path_factory, "notebook7")
    server = start_jupyterlab(home, root, app="notebook")
    yield server
    stop_server(server.process)
    shutil.copy(server.log, artifacts / "notebook7.log")


@pytest.fixture(scope="session")
def voila(tmp_path_factory, artifacts) -> Iterator[Server]:
    """``voila notebooks/explorer.ipynb`` on a free 127.0.0.1 port (the notebook runs when the page is opened)."""
    home, root = _workspace(tmp_path_factory, "voila")
    port = free_port()
    command = [
        str(BIN / "voila"),
        "explorer.ipynb",
        "--no-browser",
        f"--port={port}",
        "--Voila.ip=127.0.0.1",
        "--Voila.port_retries=0",
        # Notebook 7's lab extension (installed for the Notebook 7 test) needs JupyterLab's document registry,
        # which Voila's page lacks: it would fail to load there with a console error (as in `make voila`).
        '--VoilaConfiguration.extension_denylist=["@jupyter-notebook/lab-extension"]',
    ]
    log = home / "voila.log"
    url = f"http://127.0.0.1:{port}"
    # GET / would run the notebook: readiness is asked of a static file instead.
    ready = f"{url}/voila/labextensions/@jupyter-widgets/jupyterlab-manager/package.json"
    process = start_server(command, cwd=root, env=server_env(home), log=log, ready_url=ready)
    server = Server(url=url, token="", process=process, log=log, root=root)
    yield server
    stop_server(process)
    shutil.copy(log, artifacts / "voila.log")


@pytest.fixture(scope="session")
def playwright_driver():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(playwright_driver, tmp_path, request, artifacts):
    """A Chromium page in a fresh profile; console errors and page errors are collected in ``page.errors``.

    The whole console goes to ``tests/artifacts/<test>-console.txt``; a failed test leaves a screenshot of the
    page as it was, ``<test>-FAILED.png``."""
    name = request.node.name
    (artifacts / f"{name}-FAILED.png").unlink(missing_ok=True)
    context = launch_chromium(playwright_driver, tmp_path / "chromium-profile")
    context.set_default_timeout(30_000)
    page = context.pages[0] if context.pages else context.new_page()
    page.errors = []
    page.console_log = []

    def on_console(message):
        location = message.location or {}
        text = f"[{message.type}] {message.text} ({location.get('url', '')}:{location.get('lineNumber', '')})"
        page.console_log.append(text)
        if message.type == "error":
            page.errors.append(text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: page.errors.append(f"[pageerror] {error}"))
    yield page
    (artifacts / f"{name}-console.txt").write_text("\n".join(page.console_log) + "\n")
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        try:
            page.screenshot(path=artifacts / f"{name}-FAILED.png")
        except Exception as err:  # the page may be gone; the report matters more than the picture
            print(f"no failure screenshot: {err}")
    context.close()

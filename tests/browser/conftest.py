"""Browser-test set-up: JupyterLab and Voilà servers on 127.0.0.1, and headless Chromium driven by Playwright.

Each server runs from a temporary copy of ``notebooks/`` (running the notebook in JupyterLab saves it) with its own
Jupyter config, data, runtime and settings folders, so nothing from the user's set-up leaks in and no first-run
pop-up (news, update checks) covers the page. Kernels inherit the servers' environment: ``HF_HUB_OFFLINE=1``.

Chromium is Debian's (``make browser-deps``); Playwright never downloads a browser. The tests are skipped, with a
message, when it is missing, except in CI (``CI`` set), where they fail.

Screenshots and the grid PNGs go to ``tests/artifacts/`` (gitignored).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "tests" / "artifacts"
BIN = Path(sys.executable).parent  # the virtualenv's bin: jupyter-lab and voila live beside this python
CHROMIUM = Path(os.environ.get("EXPLORER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1400, "height": 1000}
SERVER_START_S = 90

# JupyterLab user settings written before the server starts: no news or update checks (they would show a toast
# asking for consent and make requests to jupyter.org, which is unreachable here).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def pytest_collection_modifyitems(config, items):
    if CHROMIUM.exists() or os.environ.get("CI"):
        return  # in CI a missing browser fails the tests instead of skipping them
    skip = pytest.mark.skip(
        reason=f"no Chromium at {CHROMIUM}: run `make browser-deps` (apt-get install chromium)"
    )
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@dataclass
class Server:
    """A running server: its base URL, token (empty for Voilà) and process."""

    url: str
    token: str
    process: subprocess.Popen
    log: Path
    root: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        IPYTHONDIR=str(home / "ipython"),
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    return env


_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy


def _answers(url: str) -> bool:
    try:
        with _LOCAL.open(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _start(
    command: list[str], *, cwd: Path, env: dict[str, str], log: Path, ready_url: str
) -> subprocess.Popen:
    """Start a server in its own process group; return once ``ready_url`` answers 200."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{command[0]} exited with {process.returncode}:\n{log.read_text(errors='replace')}"
            )
        if _answers(ready_url):
            return process
        time.sleep(0.25)
    _stop(process)
    raise RuntimeError(
        f"{command[0]} did not answer within {SERVER_START_S} s:\n{log.read_text(errors='replace')}"
    )


def _stop(process: subprocess.Popen) -> None:
    """Terminate the server's process group, then any kernel it started that outlived it (kernels run in their
    own sessions, so the group signal does not reach them)."""
    import psutil

    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    _, alive = psutil.wait_procs(descendants, timeout=10)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


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
    for name, settings in LAB_SETTINGS.items():
        path = home / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    port, token = _free_port(), secrets.token_hex(16)
    command = [
        str(BIN / "jupyter-lab"),
        "--no-browser",
        "--allow-root",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log = home / "jupyterlab.log"
    url = f"http://127.0.0.1:{port}"
    process = _start(
        command, cwd=root, env=_server_env(home), log=log, ready_url=f"{url}/api/status?token={token}"
    )
    server = Server(url=url, token=token, process=process, log=log, root=root)
    yield server
    _stop(process)
    shutil.copy(log, artifacts / "jupyterlab.log")


@pytest.fixture(scope="session")
def voila(tmp_path_factory, artifacts) -> Iterator[Server]:
    """``voila notebooks/explorer.ipynb`` on a free 127.0.0.1 port (the notebook runs when the page is opened)."""
    home, root = _workspace(tmp_path_factory, "voila")
    port = _free_port()
    command = [
        str(BIN / "voila"),
        "explorer.ipynb",
        "--no-browser",
        f"--port={port}",
        "--Voila.ip=127.0.0.1",
        "--Voila.port_retries=0",
    ]
    log = home / "voila.log"
    url = f"http://127.0.0.1:{port}"
    # GET / would run the notebook: readiness is asked of a static file instead.
    ready = f"{url}/voila/labextensions/@jupyter-widgets/jupyterlab-manager/package.json"
    process = _start(command, cwd=root, env=_server_env(home), log=log, ready_url=ready)
    server = Server(url=url, token="", process=process, log=log, root=root)
    yield server
    _stop(process)
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
    context = playwright_driver.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"),
        executable_path=str(CHROMIUM),
        args=CHROMIUM_ARGS,
        headless=True,
        viewport=VIEWPORT,
        accept_downloads=False,
    )
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
